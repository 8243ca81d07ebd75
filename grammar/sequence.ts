/**
 * The outer shape of a constrained output: a sequence of parts (optional reasoning, then a JSON value or tool
 * calls) followed by the end. Control tokens (`[THINK]`, `[TOOL_CALLS]`, …) appear here as symbols
 * `SPECIAL_BASE + id`, each one token long.
 *
 * @module
 */

import { ByteTrie } from "./byte_trie.ts";
import { again, complete, type Frame, frame, GrammarNode, utf8 } from "./frame.ts";

/** The end of the output: the grammar accepts here, and only end-of-sequence may follow. */
export class AcceptNode extends GrammarNode {
  override readonly final = true;

  override step(): void {}

  override need(): number {
    return 0;
  }

  override resume(f: Frame): Frame {
    return f;
  }
}

/** Parts one after another. Frame: `s` index of the next part. Parts of minimum size 0 are optional. */
export class SeqNode extends GrammarNode {
  /** The parts. */
  readonly parts: GrammarNode[];
  #suffix = new Float64Array(0);

  /** A sequence of `parts`. */
  constructor(parts: GrammarNode[]) {
    super();
    this.parts = parts;
  }

  override children(): GrammarNode[] {
    return this.parts;
  }

  override computeMin(): number {
    return this.parts.reduce((sum, p) => sum + p.minBytes, 0);
  }

  override finalize(): void {
    const n = this.parts.length;
    this.#suffix = new Float64Array(n + 1);
    for (let i = n - 1; i >= 0; i--) this.#suffix[i] = this.#suffix[i + 1] + this.parts[i].minBytes;
  }

  /** The first frame of a sequence that returns to `parent`. */
  begin(parent: Frame, rest: number): Frame {
    return frame(this, 0, 0, 0, 0, null, parent, rest);
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    const n = this.parts.length;
    let i = f.s;
    for (; i < n; i++) {
      this.parts[i].start(sym, again(f, i, 0, 0), this.#suffix[i + 1] + f.rest, out);
      if (this.parts[i].minBytes > 0) return;
    }
    // Every remaining part was optional: the symbol belongs to what follows the sequence.
    const p = complete(again(f, n, 0, 0));
    p.node.step(p, sym, out);
  }

  override need(f: Frame): number {
    return this.#suffix[f.s];
  }

  override canEnd(f: Frame): boolean {
    return this.#suffix[f.s] === 0;
  }

  override resume(f: Frame): Frame {
    const next = again(f, f.s + 1, 0, 0);
    return next.s === this.parts.length ? complete(next) : next;
  }
}

/** Optional reasoning: `[THINK]`, free text, `[/THINK]`. Frame: inside the span. */
export class ThinkNode extends GrammarNode {
  /** Symbol of `[THINK]`. */
  readonly open: number;
  /** Symbol of `[/THINK]`. */
  readonly close: number;

  /** A reasoning span between these two symbols. */
  constructor(open: number, close: number) {
    super();
    this.open = open;
    this.close = close;
  }

  override computeMin(): number {
    return 0;
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    if (sym === this.open) out.push(frame(this, 0, 0, 0, 0, null, parent, rest));
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    if (sym < 256) out.push(f);
    else if (sym === this.close) out.push(complete(f));
  }

  override need(): number {
    return 1;
  }
}

/** One tool a call may name. */
export interface ToolSpec {
  /** The function name. */
  name: string;
  /** Grammar of its arguments. */
  params: GrammarNode;
}

const enum Call {
  NAME,
  ARGS,
  AWAIT,
  AFTER,
}

/**
 * Tool calls: `[TOOL_CALLS]name[ARGS]{…}`, once or repeated. Frame: `s` phase, `a` name trie node, `c` the tool.
 * The name is written bare (Mistral's v11+ format), so one name may be a prefix of another: `[ARGS]` ends it.
 */
export class ToolCallsNode extends GrammarNode {
  /** The tools. */
  readonly tools: ToolSpec[];
  /** Whether several calls may follow one another. */
  readonly multiple: boolean;
  /** Symbol of `[TOOL_CALLS]`. */
  readonly callSym: number;
  /** Symbol of `[ARGS]`. */
  readonly argsSym: number;
  readonly #names = new ByteTrie();

  /** Calls of `tools`; `multiple` allows more than one. */
  constructor(tools: ToolSpec[], multiple: boolean, callSym: number, argsSym: number) {
    super();
    this.tools = tools;
    this.multiple = multiple;
    this.callSym = callSym;
    this.argsSym = argsSym;
    tools.forEach((t, i) => this.#names.add(utf8(t.name), i));
  }

  override children(): GrammarNode[] {
    return this.tools.map((t) => t.params);
  }

  override computeMin(): number {
    this.#names.finish((i) => 1 + this.tools[i].params.minBytes);
    return 1 + this.#names.need[0];
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    if (sym === this.callSym) out.push(frame(this, Call.NAME, 0, 0, -1, null, parent, rest));
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    switch (f.s) {
      case Call.NAME: {
        if (sym === this.argsSym) {
          const t = this.#names.term[f.a];
          if (t >= 0) out.push(again(f, Call.ARGS, 0, 0, t));
          return;
        }
        const c = this.#names.child(f.a, sym);
        if (c >= 0) out.push(again(f, Call.NAME, c, 0));
        return;
      }
      case Call.ARGS:
        this.tools[f.c].params.start(sym, again(f, Call.AWAIT, 0, 0), f.rest, out);
        return;
      case Call.AFTER:
        if (sym === this.callSym && this.multiple) out.push(again(f, Call.NAME, 0, 0, -1));
        else {
          const p = complete(f);
          p.node.step(p, sym, out);
        }
    }
  }

  override need(f: Frame): number {
    switch (f.s) {
      case Call.NAME:
        return this.#names.need[f.a];
      case Call.ARGS:
        return this.tools[f.c].params.minBytes;
      default:
        return 0;
    }
  }

  override canEnd(f: Frame): boolean {
    return f.s === Call.AFTER;
  }

  override resume(f: Frame): Frame {
    return again(f, Call.AFTER, 0, 0, f.c);
  }
}
