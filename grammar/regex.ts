/**
 * Regular expressions over code points, for `pattern` and `format`: a parser for the ECMAScript subset that has
 * no lookaround or backreferences, a Thompson NFA with ε-moves removed, optional intersection with length limits,
 * and a lazily built DFA that implements {@link CharAutomaton} (including the fewest JSON-string bytes to a match
 * from any state, for the budget).
 *
 * JSON Schema patterns are unanchored: `"abc"` matches any string containing `abc`. Anchors are supported at the
 * start and end of top-level alternatives only.
 *
 * @module
 */

import type { CharAutomaton } from "./string_node.ts";
import { minJsonCharBytes } from "./string_lexer.ts";

/** A pattern outside the supported subset, or one too large. */
export class RegexError extends Error {
  /** An error with a message naming the feature. */
  constructor(message: string) {
    super(message);
    this.name = "RegexError";
  }
}

/** Sorted, disjoint, inclusive code-point ranges. */
type Ranges = [number, number][];

type Ast =
  | { t: "set"; r: Ranges }
  | { t: "cat"; items: Ast[] }
  | { t: "alt"; items: Ast[] }
  | { t: "rep"; item: Ast; min: number; max: number }
  | { t: "bol" }
  | { t: "eol" };

const MAX_CP = 0x10ffff;
/** Every code point a JSON string can hold (no lone surrogates). */
const ANY: Ranges = [[0, 0xd7ff], [0xe000, MAX_CP]];
const DIGIT: Ranges = [[0x30, 0x39]];
const WORD: Ranges = [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]];
const SPACE: Ranges = normalize([
  [9, 13],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
]);
/** `.` without the `s` flag: anything but line terminators. */
const DOT: Ranges = subtract(ANY, [[10, 10], [13, 13], [0x2028, 0x2029]]);
/** Most NFA states a pattern may expand to. */
const MAX_STATES = 20_000;

function normalize(r: Ranges): Ranges {
  const s = r.filter(([a, b]) => a <= b).sort((x, y) => x[0] - y[0]);
  const out: Ranges = [];
  for (const [a, b] of s) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function subtract(a: Ranges, b: Ranges): Ranges {
  const out: Ranges = [];
  for (const [lo, hi] of a) {
    let cur = lo;
    for (const [x, y] of b) {
      if (y < cur || x > hi) continue;
      if (x > cur) out.push([cur, x - 1]);
      cur = Math.max(cur, y + 1);
    }
    if (cur <= hi) out.push([cur, hi]);
  }
  return out;
}

function complement(r: Ranges): Ranges {
  return subtract(ANY, r);
}

/** Recursive-descent parser of the supported subset. */
class Parser {
  #i = 0;
  readonly #src: string;
  readonly #cps: number[];

  constructor(src: string) {
    this.#src = src;
    this.#cps = [...src].map((c) => c.codePointAt(0)!);
  }

  parse(): Ast {
    const ast = this.#alt();
    if (this.#i < this.#cps.length) throw new RegexError(`unbalanced ")" in pattern ${JSON.stringify(this.#src)}`);
    return ast;
  }

  #peek(): number {
    return this.#cps[this.#i] ?? -1;
  }

  #eat(c: string): boolean {
    if (this.#peek() === c.codePointAt(0)) {
      this.#i++;
      return true;
    }
    return false;
  }

  #alt(): Ast {
    const items = [this.#cat()];
    while (this.#eat("|")) items.push(this.#cat());
    return items.length === 1 ? items[0] : { t: "alt", items };
  }

  #cat(): Ast {
    const items: Ast[] = [];
    while (this.#i < this.#cps.length && this.#peek() !== 0x7c && this.#peek() !== 0x29) items.push(this.#repeat());
    return { t: "cat", items };
  }

  #repeat(): Ast {
    let item = this.#atom();
    for (;;) {
      let min: number, max: number;
      if (this.#eat("*")) [min, max] = [0, Infinity];
      else if (this.#eat("+")) [min, max] = [1, Infinity];
      else if (this.#eat("?")) [min, max] = [0, 1];
      else if (this.#peek() === 0x7b && this.#braceAhead()) [min, max] = this.#braces();
      else return item;
      if (item.t === "bol" || item.t === "eol") throw new RegexError("a quantified anchor is not supported");
      this.#eat("?"); // lazy or greedy: the same language
      item = { t: "rep", item, min, max };
    }
  }

  /** Whether `{` starts a quantifier (otherwise it is a literal brace, as in JavaScript without the u flag). */
  #braceAhead(): boolean {
    return /^\{\d+(,\d*)?\}/.test(String.fromCodePoint(...this.#cps.slice(this.#i, this.#i + 24)));
  }

  #braces(): [number, number] {
    const m = /^\{(\d+)(,(\d*))?\}/.exec(String.fromCodePoint(...this.#cps.slice(this.#i, this.#i + 24)))!;
    this.#i += [...m[0]].length;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
    if (max < min) throw new RegexError("a quantifier {n,m} with m < n");
    return [min, max];
  }

  #atom(): Ast {
    const c = this.#cps[this.#i++];
    switch (c) {
      case 0x28: { // (
        if (this.#eat("?")) {
          if (this.#eat(":")) { /* non-capturing */ }
          else if (this.#peek() === 0x3c && this.#cps[this.#i + 1] !== 0x3d && this.#cps[this.#i + 1] !== 0x21) {
            while (this.#i < this.#cps.length && !this.#eat(">")) this.#i++; // a named group
          } else throw new RegexError("lookahead and lookbehind in pattern are not supported");
        }
        const inner = this.#alt();
        if (!this.#eat(")")) throw new RegexError('unbalanced "(" in pattern');
        return inner;
      }
      case 0x5b: // [
        return { t: "set", r: this.#class() };
      case 0x2e: // .
        return { t: "set", r: DOT };
      case 0x5e: // ^
        return { t: "bol" };
      case 0x24: // $
        return { t: "eol" };
      case 0x5c: // \
        return { t: "set", r: this.#escape(false) };
      case 0x2a:
      case 0x2b:
      case 0x3f:
        throw new RegexError("a quantifier with nothing to repeat in pattern");
      default:
        return { t: "set", r: [[c, c]] };
    }
  }

  #class(): Ranges {
    const negate = this.#eat("^");
    const out: Ranges = [];
    // JavaScript reads `[]` as the empty class and `[^]` as any character.
    while (this.#i < this.#cps.length && this.#peek() !== 0x5d) {
      const lo = this.#classAtom();
      if (this.#peek() === 0x2d && this.#cps[this.#i + 1] !== 0x5d && this.#i + 1 < this.#cps.length) {
        this.#i++;
        const hi = this.#classAtom();
        if (lo.length !== 1 || hi.length !== 1 || lo[0][0] !== lo[0][1] || hi[0][0] !== hi[0][1]) {
          throw new RegexError("a class range between character classes in pattern");
        }
        if (hi[0][0] < lo[0][0]) throw new RegexError("a class range out of order in pattern");
        out.push([lo[0][0], hi[0][0]]);
      } else out.push(...lo);
    }
    if (!this.#eat("]")) throw new RegexError("unterminated character class in pattern");
    const set = normalize(out);
    return negate ? complement(set) : subtract(set, [[0xd800, 0xdfff]]);
  }

  #classAtom(): Ranges {
    const c = this.#cps[this.#i++];
    if (c === 0x5c) return this.#escape(true);
    return [[c, c]];
  }

  #escape(inClass: boolean): Ranges {
    const c = this.#cps[this.#i++];
    if (c === undefined) throw new RegexError("a pattern ending in a backslash");
    const ch = String.fromCodePoint(c);
    switch (ch) {
      case "d":
        return DIGIT;
      case "D":
        return complement(DIGIT);
      case "w":
        return WORD;
      case "W":
        return complement(WORD);
      case "s":
        return SPACE;
      case "S":
        return complement(SPACE);
      case "t":
        return [[9, 9]];
      case "n":
        return [[10, 10]];
      case "r":
        return [[13, 13]];
      case "f":
        return [[12, 12]];
      case "v":
        return [[11, 11]];
      case "0":
        return [[0, 0]];
      case "b":
        if (inClass) return [[8, 8]];
        throw new RegexError("word boundaries (\\b) in pattern are not supported");
      case "B":
        throw new RegexError("word boundaries (\\B) in pattern are not supported");
      case "x":
        return single(this.#hex(2));
      case "u": {
        if (this.#eat("{")) {
          let v = 0, n = 0;
          while (!this.#eat("}")) {
            v = v * 16 + this.#hexDigit();
            if (++n > 6) throw new RegexError("a bad \\u{…} escape in pattern");
          }
          return single(v);
        }
        return single(this.#hex(4));
      }
      case "c": {
        const l = this.#cps[this.#i++];
        return single(l % 32);
      }
      case "p":
      case "P":
        throw new RegexError("Unicode property escapes (\\p) in pattern are not supported");
      case "k":
        throw new RegexError("backreferences in pattern are not supported");
      default:
        if (c >= 0x31 && c <= 0x39) throw new RegexError("backreferences in pattern are not supported");
        return [[c, c]];
    }
  }

  #hexDigit(): number {
    const c = this.#cps[this.#i++];
    const ch = c === undefined ? "" : String.fromCodePoint(c);
    if (!/^[0-9a-fA-F]$/.test(ch)) throw new RegexError("a bad hex escape in pattern");
    return parseInt(ch, 16);
  }

  #hex(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 16 + this.#hexDigit();
    return v;
  }
}

function single(cp: number): Ranges {
  if (cp > MAX_CP) throw new RegexError("a code point beyond U+10FFFF in pattern");
  return [[cp, cp]];
}

/** A Thompson NFA: states with ε-moves and range transitions; one start, one accept. */
class Nfa {
  readonly eps: number[][] = [];
  readonly moves: { r: Ranges; to: number }[][] = [];

  add(): number {
    this.eps.push([]);
    this.moves.push([]);
    if (this.eps.length > MAX_STATES) throw new RegexError("pattern is too large (too many repetitions)");
    return this.eps.length - 1;
  }

  /** Builds `ast` between two new states; returns [start, end]. */
  build(ast: Ast): [number, number] {
    const s = this.add();
    switch (ast.t) {
      case "set": {
        const e = this.add();
        if (ast.r.length > 0) this.moves[s].push({ r: ast.r, to: e });
        return [s, e];
      }
      case "cat": {
        let end = s;
        for (const item of ast.items) {
          const [a, b] = this.build(item);
          this.eps[end].push(a);
          end = b;
        }
        return [s, end];
      }
      case "alt": {
        const e = this.add();
        for (const item of ast.items) {
          const [a, b] = this.build(item);
          this.eps[s].push(a);
          this.eps[b].push(e);
        }
        return [s, e];
      }
      case "rep": {
        let end = s;
        for (let k = 0; k < ast.min; k++) {
          const [a, b] = this.build(ast.item);
          this.eps[end].push(a);
          end = b;
        }
        if (ast.max === Infinity) {
          const [a, b] = this.build(ast.item);
          this.eps[end].push(a);
          this.eps[b].push(a);
          const e = this.add();
          this.eps[end].push(e);
          this.eps[b].push(e);
          return [s, e];
        }
        const e = this.add();
        for (let k = ast.min; k < ast.max; k++) {
          const [a, b] = this.build(ast.item);
          this.eps[end].push(a, e);
          end = b;
        }
        this.eps[end].push(e);
        return [s, e];
      }
      default:
        throw new RegexError("anchors (^, $) are supported only at the start and end of the pattern");
    }
  }
}

/** The language of an unanchored pattern: `.*` before and after each alternative that is not anchored there. */
function anchored(ast: Ast): Ast {
  const alts = ast.t === "alt" ? ast.items : [ast];
  const star: Ast = { t: "rep", item: { t: "set", r: ANY }, min: 0, max: Infinity };
  return {
    t: "alt",
    items: alts.map((alt) => {
      const items = alt.t === "cat" ? [...alt.items] : [alt];
      const bol = items[0]?.t === "bol";
      if (bol) items.shift();
      const eol = items[items.length - 1]?.t === "eol";
      if (eol) items.pop();
      return { t: "cat", items: [...(bol ? [] : [star]), ...items, ...(eol ? [] : [star])] };
    }),
  };
}

/** Length limits in code points. */
export interface Lengths {
  /** Fewest code points. */
  minLength: number;
  /** Most code points (Infinity: none). */
  maxLength: number;
}

/**
 * An ε-free NFA (optionally times a length counter) and the lazy DFA over it. States of the DFA are sets of NFA
 * states, interned on first sight.
 */
class RegexAutomaton implements CharAutomaton {
  readonly start: number;
  readonly #moves: { r: Ranges; to: number; cost: number }[][];
  readonly #accept: boolean[];
  readonly #dist: Float64Array;
  readonly #bounds: number[]; // class boundaries: class k is [bounds[k], bounds[k+1])
  readonly #sets: number[][] = [];
  readonly #ids = new Map<string, number>();
  readonly #table: (Int32Array | Map<number, number>)[] = [];
  readonly #need: number[] = [];

  constructor(moves: { r: Ranges; to: number }[][], accept: boolean[], start: number[]) {
    this.#moves = moves.map((ms) =>
      ms.map((m) => ({ ...m, cost: Math.min(...m.r.map(([a, b]) => minJsonCharBytes(a, b))) }))
    );
    this.#accept = accept;
    this.#dist = distances(this.#moves, accept);
    const points = new Set<number>([0, MAX_CP + 1]);
    for (const ms of moves) for (const m of ms) for (const [a, b] of m.r) points.add(a).add(b + 1);
    this.#bounds = [...points].sort((x, y) => x - y);
    this.start = this.#intern(start);
    if (this.start < 0) throw new RegexError("pattern matches no string (within the length limits)");
  }

  #intern(states: number[]): number {
    const live = [...new Set(states)].filter((q) => this.#dist[q] < Infinity).sort((a, b) => a - b);
    if (live.length === 0) return -1;
    const key = live.join(",");
    let id = this.#ids.get(key);
    if (id === undefined) {
      id = this.#sets.length;
      this.#sets.push(live);
      this.#ids.set(key, id);
      // Dense rows while the alphabet of classes is small; a map per state when a pattern names many characters.
      this.#table.push(this.#bounds.length <= 257 ? new Int32Array(this.#bounds.length).fill(-2) : new Map());
      this.#need.push(Math.min(...live.map((q) => this.#dist[q])));
      if (this.#sets.length > 50_000) throw new RegexError("pattern is too complex (too many automaton states)");
    }
    return id;
  }

  #classOf(cp: number): number {
    const b = this.#bounds;
    let lo = 0, hi = b.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (b[mid] <= cp) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  step(state: number, cp: number): number {
    const k = this.#classOf(cp);
    const row = this.#table[state];
    let next = row instanceof Map ? row.get(k) ?? -2 : row[k];
    if (next === -2) {
      const lo = this.#bounds[k];
      const targets: number[] = [];
      for (const q of this.#sets[state]) {
        for (const m of this.#moves[q]) if (contains(m.r, lo)) targets.push(m.to);
      }
      next = this.#intern(targets);
      if (row instanceof Map) row.set(k, next);
      else row[k] = next;
    }
    return next;
  }

  accepting(state: number): boolean {
    return this.#sets[state].some((q) => this.#accept[q]);
  }

  need(state: number): number {
    return this.#need[state];
  }

  needAfterRange(state: number, lo: number, hi: number): number {
    let best = Infinity;
    for (const q of this.#sets[state]) {
      for (const m of this.#moves[q]) {
        if (this.#dist[m.to] < best && overlaps(m.r, lo, hi)) best = this.#dist[m.to];
      }
    }
    return best;
  }
}

function contains(r: Ranges, cp: number): boolean {
  for (const [a, b] of r) if (cp >= a && cp <= b) return true;
  return false;
}

function overlaps(r: Ranges, lo: number, hi: number): boolean {
  for (const [a, b] of r) if (a <= hi && b >= lo) return true;
  return false;
}

/** Fewest JSON bytes from each state to acceptance (Dijkstra on reversed moves; costs are small integers). */
function distances(moves: { to: number; cost: number }[][], accept: boolean[]): Float64Array {
  const n = moves.length;
  const back: { from: number; cost: number }[][] = Array.from({ length: n }, () => []);
  moves.forEach((ms, q) => ms.forEach((m) => back[m.to].push({ from: q, cost: m.cost })));
  const dist = new Float64Array(n).fill(Infinity);
  // Bucket queue: costs are 1–6 bytes.
  const buckets: number[][] = [];
  for (let q = 0; q < n; q++) {
    if (accept[q]) {
      dist[q] = 0;
      (buckets[0] ??= []).push(q);
    }
  }
  for (let d = 0; d < buckets.length; d++) {
    for (const q of buckets[d] ?? []) {
      if (dist[q] !== d) continue;
      for (const { from, cost } of back[q]) {
        if (d + cost < dist[from]) {
          dist[from] = d + cost;
          (buckets[d + cost] ??= []).push(from);
        }
      }
    }
  }
  return dist;
}

/** Removes ε-moves: each state gets the moves and acceptance of its ε-closure. */
function epsilonFree(nfa: Nfa, accept: number): { moves: { r: Ranges; to: number }[][]; accept: boolean[] } {
  const n = nfa.eps.length;
  const moves: { r: Ranges; to: number }[][] = [];
  const acc: boolean[] = [];
  for (let q = 0; q < n; q++) {
    const seen = new Set<number>([q]);
    const stack = [q];
    while (stack.length) for (const p of nfa.eps[stack.pop()!]) if (!seen.has(p)) seen.add(p), stack.push(p);
    const ms: { r: Ranges; to: number }[] = [];
    for (const p of seen) ms.push(...nfa.moves[p]);
    moves.push(ms);
    acc.push(seen.has(accept));
  }
  return { moves, accept: acc };
}

/** Intersects an ε-free NFA with a length counter (0…cap, where cap is the max or, if unbounded, the min). */
function withLengths(
  moves: { r: Ranges; to: number }[][],
  accept: boolean[],
  start: number,
  { minLength, maxLength }: Lengths,
): { moves: { r: Ranges; to: number }[][]; accept: boolean[]; start: number } {
  const cap = maxLength < Infinity ? maxLength : minLength;
  const width = cap + 1;
  const n = moves.length * width;
  if (n > 400_000) throw new RegexError("pattern with this maxLength is too large");
  const out: { r: Ranges; to: number }[][] = Array.from({ length: n }, () => []);
  const acc = new Array<boolean>(n).fill(false);
  for (let q = 0; q < moves.length; q++) {
    for (let c = 0; c <= cap; c++) {
      const id = q * width + c;
      acc[id] = accept[q] && c >= minLength;
      if (c === cap && maxLength < Infinity) continue;
      const next = Math.min(c + 1, cap);
      for (const m of moves[q]) out[id].push({ r: m.r, to: m.to * width + next });
    }
  }
  return { moves: out, accept: acc, start: start * width };
}

function automaton(ast: Ast, lengths: Lengths): CharAutomaton {
  const nfa = new Nfa();
  const [s, e] = nfa.build(ast);
  let { moves, accept } = epsilonFree(nfa, e);
  let start = s;
  if (lengths.minLength > 0 || lengths.maxLength < Infinity) {
    ({ moves, accept, start } = withLengths(moves, accept, s, lengths));
  }
  return new RegexAutomaton(moves, accept, [start]);
}

const cache = new Map<string, CharAutomaton>();

/** The automaton of a JSON Schema `pattern` (unanchored, as JSON Schema reads it) with length limits. */
export function patternAutomaton(pattern: unknown, lengths: Lengths): CharAutomaton {
  if (typeof pattern !== "string") throw new RegexError("pattern must be a string");
  const key = `${pattern}\u0000${lengths.minLength}\u0000${lengths.maxLength}`;
  let a = cache.get(key);
  if (!a) {
    a = automaton(anchored(new Parser(pattern).parse()), lengths);
    if (cache.size > 256) cache.clear();
    cache.set(key, a);
  }
  return a;
}

const DATE = "\\d{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)";
const TIME = "(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,6})?(?:Z|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)";
const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const PCHAR = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";

/**
 * The string formats enforced, as anchored patterns. Each accepts a subset of what RFC 3339 / 4122 / 5321 / 1123 /
 * 3986 allow (no leap seconds or February 29, only http(s) URIs, plain dotted e-mail addresses), so every output
 * is valid under any validator's reading of the format.
 */
export const FORMATS: Readonly<Record<string, string>> = {
  "date": `^${DATE}$`,
  "time": `^${TIME}$`,
  "date-time": `^${DATE}T${TIME}$`,
  "uuid": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
  "email": "^[A-Za-z0-9]+(?:[._+-][A-Za-z0-9]+)*@[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?:\\.[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)*" +
    "\\.[A-Za-z]{2,}$",
  "ipv4": `^(?:${OCTET}\\.){3}${OCTET}$`,
  "hostname": `^${LABEL}(?:\\.${LABEL})*$`,
  "uri": `^https?://${LABEL}(?:\\.${LABEL})*(?::\\d{1,5})?(?:/${PCHAR}*)*(?:\\?(?:${PCHAR}|[/?])*)?` +
    `(?:#(?:${PCHAR}|[/?])*)?$`,
};

/** The automaton of a JSON Schema `format`, with length limits. */
export function formatAutomaton(format: unknown, lengths: Lengths): CharAutomaton {
  if (typeof format !== "string" || !(format in FORMATS)) {
    const known = Object.keys(FORMATS).join(", ");
    throw new RegexError(`format ${JSON.stringify(format)} is not supported (supported: ${known})`);
  }
  return patternAutomaton(FORMATS[format], lengths);
}
