/**
 * The byte-level lexer of JSON string contents: which bytes may follow inside a string, as a small DFA over UTF-8
 * and JSON escapes. Strings stay valid UTF-8 and valid Unicode (no raw control characters, no `\u` escape of a
 * surrogate: characters beyond the BMP are written as UTF-8), so whatever a client decodes or validates sees
 * exactly the characters the grammar counted.
 *
 * States are small integers so the mask precompute can key tables by them (see `mask.ts`).
 *
 * @module
 */

/** Lexer states inside a string. */
export const Lex = {
  /** Between characters. */
  NORMAL: 0,
  /** After a backslash. */
  ESC: 1,
  /** After `\u`: four hex digits to go. */
  U0: 2,
  /** Three hex digits to go. */
  U1: 3,
  /** Three to go after a leading `d`: the next must be 0–7 (no surrogates). */
  U1D: 4,
  /** Two hex digits to go. */
  U2: 5,
  /** One hex digit to go. */
  U3: 6,
  /** One UTF-8 continuation byte to go. */
  C1: 7,
  /** Two continuation bytes to go. */
  C2: 8,
  /** Three continuation bytes to go. */
  C3: 9,
  /** After `E0`: next in A0–BF (no overlong forms), then one more. */
  E0: 10,
  /** After `ED`: next in 80–9F (no surrogates), then one more. */
  ED: 11,
  /** After `F0`: next in 90–BF, then two more. */
  F0: 12,
  /** After `F4`: next in 80–8F (≤ U+10FFFF), then two more. */
  F4: 13,
} as const;

/** Number of lexer states. */
export const LEX_STATES = 14;

/** Bytes that finish the current character from each state (0 between characters). */
export const FINISH: readonly number[] = [0, 1, 4, 3, 3, 2, 1, 1, 2, 3, 2, 2, 3, 3];

/** {@link lexStep}'s answer for the closing quote. */
export const CLOSE = -2;
/** {@link lexStep}'s answer for a rejected byte. */
export const REJECT = -1;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isHex(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46);
}

/** Builds the transition table for strings with (`escapes`) or without backslash escapes. */
function buildTable(escapes: boolean): Int8Array {
  const t = new Int8Array(LEX_STATES * 256).fill(REJECT);
  const set = (s: number, lo: number, hi: number, to: number) => {
    for (let b = lo; b <= hi; b++) t[s * 256 + b] = to;
  };
  // Between characters: printable ASCII, UTF-8 lead bytes, the quote, the backslash.
  set(Lex.NORMAL, 0x20, 0x7f, Lex.NORMAL);
  t[Lex.NORMAL * 256 + QUOTE] = CLOSE;
  t[Lex.NORMAL * 256 + BACKSLASH] = escapes ? Lex.ESC : REJECT;
  set(Lex.NORMAL, 0xc2, 0xdf, Lex.C1);
  t[Lex.NORMAL * 256 + 0xe0] = Lex.E0;
  set(Lex.NORMAL, 0xe1, 0xec, Lex.C2);
  t[Lex.NORMAL * 256 + 0xed] = Lex.ED;
  set(Lex.NORMAL, 0xee, 0xef, Lex.C2);
  t[Lex.NORMAL * 256 + 0xf0] = Lex.F0;
  set(Lex.NORMAL, 0xf1, 0xf3, Lex.C3);
  t[Lex.NORMAL * 256 + 0xf4] = Lex.F4;
  // Continuations.
  set(Lex.C1, 0x80, 0xbf, Lex.NORMAL);
  set(Lex.C2, 0x80, 0xbf, Lex.C1);
  set(Lex.C3, 0x80, 0xbf, Lex.C2);
  set(Lex.E0, 0xa0, 0xbf, Lex.C1);
  set(Lex.ED, 0x80, 0x9f, Lex.C1);
  set(Lex.F0, 0x90, 0xbf, Lex.C2);
  set(Lex.F4, 0x80, 0x8f, Lex.C2);
  // Escapes.
  for (const c of '"\\/bfnrt') t[Lex.ESC * 256 + c.charCodeAt(0)] = Lex.NORMAL;
  t[Lex.ESC * 256 + 0x75] = Lex.U0;
  for (let b = 0; b < 256; b++) {
    if (!isHex(b)) continue;
    const d = b === 0x64 || b === 0x44;
    t[Lex.U0 * 256 + b] = d ? Lex.U1D : Lex.U1;
    t[Lex.U1 * 256 + b] = Lex.U2;
    if (b <= 0x37 && b >= 0x30) t[Lex.U1D * 256 + b] = Lex.U2;
    t[Lex.U2 * 256 + b] = Lex.U3;
    t[Lex.U3 * 256 + b] = Lex.NORMAL;
  }
  return t;
}

const WITH_ESCAPES = buildTable(true);
const WITHOUT_ESCAPES = buildTable(false);

/** The transition table: `table[state * 256 + byte]` is the next state, {@link CLOSE} or {@link REJECT}. */
export function lexTable(escapes: boolean): Int8Array {
  return escapes ? WITH_ESCAPES : WITHOUT_ESCAPES;
}

/** One lexer step. */
export function lexStep(table: Int8Array, state: number, byte: number): number {
  return byte < 256 ? table[state * 256 + byte] : REJECT;
}

/** True when `byte`, read in `state`, begins a new character (what length limits count). */
export function startsChar(state: number, byte: number): boolean {
  return state === Lex.NORMAL && byte !== QUOTE;
}

/** The code point that a simple escape letter stands for (`n` → 10), or -1. */
export function simpleEscape(byte: number): number {
  switch (byte) {
    case 0x22:
    case 0x5c:
    case 0x2f:
      return byte;
    case 0x62:
      return 8;
    case 0x66:
      return 12;
    case 0x6e:
      return 10;
    case 0x72:
      return 13;
    case 0x74:
      return 9;
    default:
      return -1;
  }
}

/** The value of a hex digit. */
export function hexValue(byte: number): number {
  return byte <= 0x39 ? byte - 0x30 : (byte | 0x20) - 0x57;
}

/** Fewest bytes a code point takes inside a JSON string: escaped when it must be, else its UTF-8 length. */
export function jsonCharBytes(cp: number): number {
  if (cp === 0x22 || cp === 0x5c) return 2;
  if (cp < 0x20) return cp === 8 || cp === 9 || cp === 10 || cp === 12 || cp === 13 ? 2 : 6;
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/** Fewest bytes any code point in [lo, hi] takes inside a JSON string (Infinity for an empty range). */
export function minJsonCharBytes(lo: number, hi: number): number {
  if (lo > hi) return Infinity;
  let best = Infinity;
  // The cost is constant on these pieces; check the cheapest piece the range touches.
  const pieces: [number, number, number][] = [
    [0x20, 0x7f, 1],
    [0x80, 0x7ff, 2],
    [0x800, 0xffff, 3],
    [0x10000, 0x10ffff, 4],
  ];
  for (const [a, b, cost] of pieces) if (lo <= b && hi >= a) best = Math.min(best, cost);
  // Within printable ASCII the quote and backslash cost 2: only a range of nothing else costs more than 1.
  if (best === 1) {
    const onlySpecial = (lo === 0x22 || lo === 0x5c) && hi === lo;
    if (onlySpecial) best = 2;
  }
  if (lo < 0x20) {
    for (let cp = lo; cp <= Math.min(hi, 0x1f); cp++) best = Math.min(best, jsonCharBytes(cp));
  }
  return best;
}
