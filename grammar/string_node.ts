/**
 * JSON strings: free text with optional length limits (counted in code points, as JSON Schema counts them), object
 * keys that must differ from the declared property names, and strings whose characters must follow an automaton
 * (a `pattern` or a `format`).
 *
 * @module
 */

import { again, complete, type Frame, GrammarNode } from "./frame.ts";
import { CLOSE, FINISH, hexValue, Lex, lexTable, REJECT, simpleEscape } from "./string_lexer.ts";

/** A code-point automaton that constrains a string's characters (a compiled regular expression). */
export interface CharAutomaton {
  /** The start state. */
  readonly start: number;
  /** The state after `cp`, or -1 when no string with that prefix can match. */
  step(state: number, cp: number): number;
  /** True when the characters so far form a match. */
  accepting(state: number): boolean;
  /** Fewest JSON-string bytes of characters that reach a match from `state` (0 when accepting). */
  need(state: number): number;
  /** The fewest of `need(step(state, cp))` over code points in [lo, hi]; Infinity when none leads anywhere. */
  needAfterRange(state: number, lo: number, hi: number): number;
}

/** Options of a {@link StringNode}. */
export interface StringOptions {
  /** Fewest code points (default 0). */
  minLength?: number;
  /** Most code points (default unbounded). */
  maxLength?: number;
  /** Whether backslash escapes are allowed (default true; object keys without them compare by raw bytes). */
  escapes?: boolean;
  /** Contents (UTF-8 as binary strings) the string must not be: the declared names, for an additional key. */
  exclude?: ReadonlySet<string> | null;
  /** An automaton over the characters (pattern, format); length limits must already be folded into it. */
  automaton?: CharAutomaton | null;
}

const QUOTE = 0x22;
const ESCAPED = [0x22, 0x5c, 0x2f, 8, 12, 10, 13, 9];

/**
 * A string value or key. Frame: `s` lexer state, `a` characters started (plain) or automaton state, `b` the partial
 * code point (automaton), `x` the raw bytes so far when names are excluded.
 */
export class StringNode extends GrammarNode {
  /** Fewest code points. */
  readonly minLength: number;
  /** Most code points. */
  readonly maxLength: number;
  /** Whether backslash escapes are allowed. */
  readonly escapes: boolean;
  /** Excluded contents (raw bytes), or null. */
  readonly exclude: ReadonlySet<string> | null;
  /** The character automaton, or null for a plain string (which the mask has precomputed tables for). */
  readonly automaton: CharAutomaton | null;
  readonly #table: Int8Array;
  readonly #longestExcluded: number;

  /** A string node; see {@link StringOptions}. */
  constructor(opts: StringOptions = {}) {
    super();
    this.minLength = opts.minLength ?? 0;
    this.maxLength = opts.maxLength ?? Infinity;
    this.escapes = opts.escapes ?? true;
    this.exclude = opts.exclude && opts.exclude.size > 0 ? opts.exclude : null;
    this.automaton = opts.automaton ?? null;
    this.#table = lexTable(this.escapes);
    let longest = 0;
    for (const e of this.exclude ?? []) longest = Math.max(longest, e.length);
    this.#longestExcluded = longest;
  }

  /** True when only the lexer and the length limits apply (the mask's fast path). */
  get plain(): boolean {
    return this.automaton === null;
  }

  override computeMin(): number {
    if (this.automaton) return 2 + this.automaton.need(this.automaton.start);
    if (this.minLength > this.maxLength) return Infinity;
    const chars = Math.max(this.minLength, this.minLength === 0 ? this.#exclusionExtra("") : 0);
    return chars > this.maxLength ? Infinity : 2 + chars;
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    if (sym !== QUOTE) return;
    const a = this.automaton ? this.automaton.start : 0;
    out.push({ node: this, s: Lex.NORMAL, a, b: 0, c: 0, x: this.exclude ? "" : null, parent, rest });
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    if (sym >= 256) return;
    const next = this.#table[f.s * 256 + sym];
    if (next === REJECT) return;
    if (next === CLOSE) {
      if (this.closeAllowed(f)) out.push(complete(f));
      return;
    }
    if (this.automaton) return this.#stepAutomaton(f, sym, next, out);
    let count = f.a;
    if (f.s === Lex.NORMAL) {
      if (count >= this.maxLength) return;
      count++;
    }
    out.push(again(f, next, count, 0, 0, this.#extend(f.x, sym)));
  }

  /** Whether the closing quote may come now (length, automaton, excluded names). */
  closeAllowed(f: Frame): boolean {
    if (this.automaton) return this.automaton.accepting(f.a);
    return f.a >= this.minLength && !(f.x !== null && this.exclude!.has(f.x as string));
  }

  override need(f: Frame): number {
    if (this.automaton) return this.#needAutomaton(f) + 1;
    let chars = Math.max(0, this.minLength - f.a);
    if (chars === 0 && f.s === Lex.NORMAL && f.x !== null) chars = this.#exclusionExtra(f.x as string);
    return FINISH[f.s] + chars + 1;
  }

  /** Raw key bytes so far, while they could still equal an excluded name (null once longer than all of them). */
  #extend(x: unknown, byte: number): string | null {
    if (x === null) return null;
    const s = x as string;
    return s.length >= this.#longestExcluded ? null : s + String.fromCharCode(byte);
  }

  /** Fewest characters to append to `x` so that it is not an excluded name. */
  #exclusionExtra(x: string): number {
    if (this.exclude === null || !this.exclude.has(x)) return 0;
    for (let c = 0x20; c < 0x7f; c++) {
      if (c !== QUOTE && c !== 0x5c && !this.exclude.has(x + String.fromCharCode(c))) return 1;
    }
    return 2; // every printable one-character extension is a declared name too: two characters always suffice
  }

  #stepAutomaton(f: Frame, sym: number, next: number, out: Frame[]): void {
    const auto = this.automaton!;
    let cp = -1;
    let partial = 0;
    switch (f.s) {
      case Lex.NORMAL:
        if (sym < 0x80 && sym !== 0x5c) cp = sym;
        else if (sym === 0x5c) partial = 0;
        else partial = sym >= 0xf0 ? sym & 0x07 : sym >= 0xe0 ? sym & 0x0f : sym & 0x1f;
        break;
      case Lex.ESC:
        if (next === Lex.NORMAL) cp = simpleEscape(sym);
        break;
      case Lex.U0:
      case Lex.U1:
      case Lex.U1D:
      case Lex.U2:
      case Lex.U3:
        partial = f.b * 16 + hexValue(sym);
        if (next === Lex.NORMAL) cp = partial;
        break;
      default: // a UTF-8 continuation
        partial = (f.b << 6) | (sym & 0x3f);
        if (next === Lex.NORMAL) cp = partial;
    }
    if (cp >= 0) {
      const st = auto.step(f.a, cp);
      if (st >= 0) out.push(again(f, Lex.NORMAL, st, 0));
      return;
    }
    const g = again(f, next, f.a, partial);
    if (this.#needAutomaton(g) < Infinity) out.push(g);
  }

  /** Fewest bytes to reach a match from an automaton frame, the current partial character included. */
  #needAutomaton(f: Frame): number {
    const auto = this.automaton!;
    const s = f.s;
    if (s === Lex.NORMAL) return auto.need(f.a);
    if (s === Lex.ESC) {
      let best = 5 + rangeNeed(auto, f.a, 0, 0xffff);
      for (const cp of ESCAPED) {
        const st = auto.step(f.a, cp);
        if (st >= 0) best = Math.min(best, 1 + auto.need(st));
      }
      return best;
    }
    let lo: number, hi: number;
    if (s >= Lex.U0 && s <= Lex.U3) {
      const left = s === Lex.U0 ? 4 : s === Lex.U2 ? 2 : s === Lex.U3 ? 1 : 3;
      lo = f.b * 16 ** left;
      hi = lo + 16 ** left - 1;
      if (s === Lex.U1D) hi = Math.min(hi, 0xd7ff);
    } else {
      const left = FINISH[s];
      lo = f.b * 2 ** (6 * left);
      hi = lo + 2 ** (6 * left) - 1;
      if (s === Lex.E0) lo = Math.max(lo, 0x800);
      if (s === Lex.F0) lo = Math.max(lo, 0x10000);
      if (s === Lex.ED) hi = Math.min(hi, 0xd7ff);
      if (s === Lex.F4) hi = Math.min(hi, 0x10ffff);
    }
    return FINISH[s] + rangeNeed(auto, f.a, lo, hi);
  }
}

/** `needAfterRange` over [lo, hi] without the surrogates, which no string may contain. */
function rangeNeed(auto: CharAutomaton, state: number, lo: number, hi: number): number {
  if (hi < 0xd800 || lo > 0xdfff) return auto.needAfterRange(state, lo, hi);
  return Math.min(
    lo < 0xd800 ? auto.needAfterRange(state, lo, 0xd7ff) : Infinity,
    hi > 0xdfff ? auto.needAfterRange(state, 0xe000, hi) : Infinity,
  );
}
