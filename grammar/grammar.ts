/**
 * A compiled grammar and the per-sequence matcher that walks it.
 *
 * {@link Grammar} is immutable and shared (the server caches one per schema); a {@link Matcher} is one sequence's
 * position in it. The matcher holds a small set of parses ("stacks"; usually one, more while an `anyOf` is
 * ambiguous) and advances them symbol by symbol: bytes 0–255 of text tokens, `SPECIAL_BASE + id` for control tokens.
 *
 * @module
 */

import { type Frame, frame, type GrammarNode, isAccepting, totalNeed } from "./frame.ts";
import { AcceptNode, SeqNode } from "./sequence.ts";

/** Most parses a matcher keeps; beyond it, the ones needing the most bytes to finish are dropped. */
const MAX_STACKS = 64;

/** Thrown when a schema or grammar admits no finite output. */
export class EmptyGrammarError extends Error {
  /** An error with a reason. */
  constructor(message: string) {
    super(message);
    this.name = "EmptyGrammarError";
  }
}

/** Every node reachable from `root`. */
function reachable(root: GrammarNode): GrammarNode[] {
  const seen = new Set<GrammarNode>([root]);
  const order: GrammarNode[] = [root];
  for (let i = 0; i < order.length; i++) {
    for (const c of order[i].children()) {
      if (!seen.has(c)) {
        seen.add(c);
        order.push(c);
      }
    }
  }
  return order;
}

/**
 * Sets every node's minimum size (a least fixpoint: recursive schemas converge because every byte costs one) and
 * builds the nodes' tables.
 */
export function finalizeNodes(root: GrammarNode): void {
  const nodes = reachable(root);
  // Leaves first: most minima settle in the first pass.
  nodes.reverse();
  for (let changed = true; changed;) {
    changed = false;
    for (const n of nodes) {
      const v = n.computeMin();
      if (v < n.minBytes) {
        n.minBytes = v;
        changed = true;
      }
    }
  }
  for (const n of nodes) n.finalize();
}

/**
 * A compiled grammar: a sequence of parts, then the end.
 *
 * @example
 * ```ts
 * const g = new Grammar([new LiteralNode(["true", "false"])]);
 * const m = g.matcher();
 * for (const b of new TextEncoder().encode("true")) m.advance(b);
 * m.accepting; // true
 * ```
 */
export class Grammar {
  /** The output's grammar. */
  readonly root: SeqNode;
  /** Bytes of the shortest complete output (control tokens count one each): a safe bound on its tokens. */
  readonly minBytes: number;
  readonly #start: Frame;

  /** Compiles the sequence `parts`; throws {@link EmptyGrammarError} when no finite output exists. */
  constructor(parts: GrammarNode[]) {
    this.root = new SeqNode(parts);
    finalizeNodes(this.root);
    this.minBytes = this.root.minBytes;
    if (!(this.minBytes < Infinity)) throw new EmptyGrammarError("the schema admits no finite JSON value");
    const accept = frame(new AcceptNode(), 0, 0, 0, 0, null, null, 0);
    this.#start = this.root.begin(accept, 0);
  }

  /** A matcher at the start of the output. */
  matcher(): Matcher {
    return new Matcher([this.#start]);
  }
}

/** One sequence's position in a grammar. */
export class Matcher {
  #stacks: Frame[];

  /** A matcher over these parses (see {@link Grammar.matcher}). */
  constructor(stacks: Frame[]) {
    this.#stacks = stacks;
  }

  /** The live parses' top frames. */
  get stacks(): readonly Frame[] {
    return this.#stacks;
  }

  /** True when the output may end here. */
  get accepting(): boolean {
    return this.#stacks.some(isAccepting);
  }

  /** True when nothing but the end may follow. */
  get done(): boolean {
    return this.#stacks.every((f) => f.node.final);
  }

  /** Fewest bytes that finish the output from here. */
  get need(): number {
    let best = Infinity;
    for (const f of this.#stacks) best = Math.min(best, totalNeed(f));
    return best;
  }

  /** Advances by one symbol; returns false (and stays put) when no parse accepts it. */
  advance(sym: number): boolean {
    const next: Frame[] = [];
    for (const f of this.#stacks) f.node.step(f, sym, next);
    if (next.length === 0) return false;
    this.#stacks = next;
    return true;
  }

  /**
   * Advances by a token's symbols; false (and unchanged) when they are rejected. With `budget` (bytes still
   * allowed after the token), parses that cannot finish within it are dropped; duplicates are merged.
   */
  advanceAll(syms: ArrayLike<number>, budget = Infinity): boolean {
    let cur = this.#stacks;
    for (let i = 0; i < syms.length; i++) {
      const next: Frame[] = [];
      for (const f of cur) f.node.step(f, syms[i], next);
      if (next.length === 0) return false;
      cur = next;
    }
    if (cur.length > 1) cur = prune(cur, budget);
    this.#stacks = cur;
    return true;
  }

  /** A copy at the same position. */
  clone(): Matcher {
    return new Matcher(this.#stacks);
  }
}

/** Drops parses that cannot finish within `budget` (keeping at least one), duplicates, and the excess. */
function prune(stacks: Frame[], budget: number): Frame[] {
  const needs = stacks.map(totalNeed);
  const best = Math.min(...needs);
  const limit = Math.max(budget, best);
  const seen = new Set<string>();
  const kept: { f: Frame; need: number }[] = [];
  stacks.forEach((f, i) => {
    if (needs[i] > limit) return;
    const k = stackKey(f);
    if (seen.has(k)) return;
    seen.add(k);
    kept.push({ f, need: needs[i] });
  });
  if (kept.length > MAX_STACKS) kept.sort((p, q) => p.need - q.need).length = MAX_STACKS;
  return kept.map((k) => k.f);
}

/** A structural key of a whole stack (frames are compared by value, not identity). */
function stackKey(f: Frame | null): string {
  const parts: string[] = [];
  for (; f !== null; f = f.parent) {
    const x = typeof f.x === "string" ? f.x : f.x === null ? "" : `#${(f.x as { id?: number }).id ?? "o"}`;
    parts.push(`${f.node.id}:${f.s}:${f.a}:${f.b}:${f.c}:${x}`);
  }
  return parts.join("|");
}
