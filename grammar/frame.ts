/**
 * The matcher's building blocks: immutable frames on a persistent stack, and the {@link GrammarNode} interface every
 * grammar element implements.
 *
 * The matcher is a byte-level pushdown automaton. Its state is a stack of frames; each frame is a node (an object
 * schema, a string, a tool call, …) with a few numbers of local state and the frame to return to when it
 * completes. Frames never change: a step builds new ones, so the mask walk can try a byte and back out for free,
 * and several parses (an `anyOf` whose branches share a prefix) can share their common tail.
 *
 * Every frame also carries `rest`: the fewest bytes needed after this frame completes to finish the whole output.
 * With the node's own {@link GrammarNode.need} it gives, in O(1), the length of the shortest completion: the budget
 * check that keeps outputs complete within `max_tokens`.
 *
 * @module
 */

/** Control tokens enter the grammar as symbols above the byte range: symbol = `SPECIAL_BASE` + token id. */
export const SPECIAL_BASE = 256;

/**
 * The only whitespace the JSON grammar accepts between tokens: one space, and only right after `:` or `,`
 * (`{"a": 1, "b": [2, 3]}`, or the compact form). Free whitespace is how a JSON-mode model on noise stalls — runs of
 * spaces and newlines until the budget is gone (`{                 \n    \n\n}` as random-weight tool arguments).
 * Compact output is valid JSON whatever the schema asks; text the schema allows lives inside strings, untouched here.
 */
export const SPACE = 0x20;

/** One level of the matcher stack. Immutable; the meaning of `s`, `a`, `b`, `c` and `x` belongs to the node. */
export interface Frame {
  /** The grammar element this frame is matching. */
  readonly node: GrammarNode;
  /** Local state: usually a phase or a lexer state. */
  readonly s: number;
  /** Local state: a count, an index or an automaton state. */
  readonly a: number;
  /** Local state: whether a space was just written, or a partial code point. */
  readonly b: number;
  /** Local state: a property index, a tool index. */
  readonly c: number;
  /** Local state that is not a number (the text of a number, the bytes of a key, a key trie). */
  readonly x: unknown;
  /** The frame to resume when this one completes; null only for the final frame. */
  readonly parent: Frame | null;
  /** Fewest bytes needed after this frame completes to finish the whole output. */
  readonly rest: number;
}

/** Builds a frame (one shape for every node, so property access stays monomorphic). */
export function frame(
  node: GrammarNode,
  s: number,
  a: number,
  b: number,
  c: number,
  x: unknown,
  parent: Frame | null,
  rest: number,
): Frame {
  return { node, s, a, b, c, x, parent, rest };
}

/** A frame like `f` with new local numbers (same node, parent and rest). */
export function again(f: Frame, s: number, a: number, b: number, c: number = f.c, x: unknown = f.x): Frame {
  return { node: f.node, s, a, b, c, x, parent: f.parent, rest: f.rest };
}

let nextNodeId = 0;

/**
 * A grammar element. Value nodes (objects, strings, …) are entered by {@link GrammarNode.start} with their first
 * symbol; a frame then advances by {@link GrammarNode.step}, and when it completes it hands control back to its
 * parent through the parent's {@link GrammarNode.resume}.
 */
export abstract class GrammarNode {
  /** A unique id (deduplication keys, caches). */
  readonly id: number = nextNodeId++;
  /** Fewest bytes of a complete instance; Infinity when there is none. Set by the compiler's fixpoint. */
  minBytes = Infinity;
  /** True only for the end-of-output node, where the grammar accepts. */
  readonly final: boolean = false;

  /**
   * Starts an instance whose first symbol is `sym`, pushing the resulting top frames onto `out` (none when `sym`
   * cannot start it). `parent` is resumed when the instance completes; `rest` is what is needed after it.
   */
  start(_sym: number, _parent: Frame, _rest: number, _out: Frame[]): void {}

  /** Advances frame `f` by `sym`, pushing the resulting top frames onto `out` (none: rejected). */
  abstract step(f: Frame, sym: number, out: Frame[]): void;

  /** Fewest bytes that complete `f` itself (its parents' share is `f.rest`). */
  abstract need(f: Frame): number;

  /** True when `f` may end here without a closing symbol of its own (a number, an optional part). */
  canEnd(_f: Frame): boolean {
    return false;
  }

  /** `f` is this node's frame that was waiting for `child`, which has completed: the frame that follows. */
  resume(_f: Frame, _child: Frame): Frame {
    throw new Error(`grammar: ${this.constructor.name} has no children`);
  }

  /** This node's minimum size from its children's current minimums (the compiler iterates it to a fixpoint). */
  computeMin(): number {
    return this.minBytes;
  }

  /** Nodes this one refers to. */
  children(): GrammarNode[] {
    return [];
  }

  /** Builds tables that need every minimum to be final. */
  finalize(): void {}
}

/** The frame that follows `f` once it completes. */
export function complete(f: Frame): Frame {
  const p = f.parent!;
  return p.node.resume(p, f);
}

/** Fewest bytes that finish the whole output from `f`. */
export function totalNeed(f: Frame): number {
  return f.node.need(f) + f.rest;
}

/** True when the output may end in state `f`. */
export function isAccepting(f: Frame): boolean {
  for (;;) {
    if (f.node.final) return true;
    if (!f.node.canEnd(f)) return false;
    f = complete(f);
  }
}

/** UTF-8 bytes of a string as a binary string (one char per byte), for comparing raw key bytes. */
export function binary(s: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(s)) out += String.fromCharCode(b);
  return out;
}

/**
 * The parent of a value parsed on its own (a schema check, a string analysed by the mask builder): it completes
 * once and accepts nothing after, so reaching it means the value is complete.
 */
export class SinkNode extends GrammarNode {
  override step(): void {}
  override need(): number {
    return 0;
  }
  override resume(f: Frame): Frame {
    return f;
  }
}

/** A fresh sink and the top frame to start a value under it. */
export function sinkFrame(): Frame {
  return frame(new SinkNode(), 0, 0, 0, 0, null, null, 0);
}

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
