/**
 * JSON numbers, optionally integers only and within bounds (`minimum`, `maximum`, `exclusiveMinimum`,
 * `exclusiveMaximum`).
 *
 * Numbers have at most {@link MAX_DIGITS} digits (integer and fraction together) and, only when unbounded, an
 * exponent of at most two digits. Fifteen decimal digits survive a round trip through a double exactly, so a
 * validator that parses the output with `JSON.parse` compares the very value the grammar checked: bounds are
 * compared exactly, as decimals, against the shortest text of each bound.
 *
 * With bounds, every prefix is kept only if some completion lands inside them, and {@link NumberNode.need} is the
 * fewest bytes of such a completion: the completions of a prefix with j more integer digits and f fraction digits
 * form a run of consecutive multiples of 10^-f, so each (j, f) is one interval test.
 *
 * @module
 */

import { again, complete, type Frame, GrammarNode } from "./frame.ts";

/** Most digits in a number, integer and fraction parts together. */
export const MAX_DIGITS = 15;
const MAX_EXP_DIGITS = 2;

const enum Num {
  MINUS,
  ZERO,
  INT,
  DOT,
  FRAC,
  E,
  ESIGN,
  EXP,
}

/** An exact decimal n·10^-e. */
interface Decimal {
  n: bigint;
  e: number;
}

/** Numeric bounds; null sides are open. */
export interface NumberBounds {
  /** Lower bound. */
  min: number | null;
  /** Whether the lower bound itself is excluded. */
  minExclusive: boolean;
  /** Upper bound. */
  max: number | null;
  /** Whether the upper bound itself is excluded. */
  maxExclusive: boolean;
}

/** The exact decimal a number's shortest text denotes (`0.1` → 1·10^-1, `1e+21` → 10^21). */
function decimal(x: number): Decimal {
  const [mant, expText] = x.toString().split("e");
  const exp = expText === undefined ? 0 : Number(expText);
  const neg = mant.startsWith("-");
  const [ip, fp = ""] = (neg ? mant.slice(1) : mant).split(".");
  let n = BigInt(ip + fp);
  let e = fp.length - exp;
  if (e < 0) {
    n *= 10n ** BigInt(-e);
    e = 0;
  }
  return { n: neg ? -n : n, e };
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

/** Bounds on a magnitude m (in units of 10^-f): inclusive integer range [lo, hi] of allowed m. */
function unitRange(lo: Decimal | null, loEx: boolean, hi: Decimal | null, hiEx: boolean, f: number): [bigint, bigint] {
  let a = -(1n << 200n), b = 1n << 200n;
  if (lo) {
    // Smallest m with m·10^-f ≥ lo (or >).
    const num = lo.n * 10n ** BigInt(Math.max(0, f - lo.e)), den = 10n ** BigInt(Math.max(0, lo.e - f));
    const fl = floorDiv(num, den);
    const exact = fl * den === num;
    a = exact ? (loEx ? fl + 1n : fl) : fl + 1n;
  }
  if (hi) {
    const num = hi.n * 10n ** BigInt(Math.max(0, f - hi.e)), den = 10n ** BigInt(Math.max(0, hi.e - f));
    const fl = floorDiv(num, den);
    const exact = fl * den === num;
    b = exact && hiEx ? fl - 1n : fl;
  }
  return [a, b];
}

/**
 * A number. Frame: `s` phase, `a` digits of the integer and fraction parts, `b` exponent digits, `x` the text so
 * far. `start` takes the first byte; the number ends when a byte that cannot continue it arrives, which then goes
 * to the parent.
 */
export class NumberNode extends GrammarNode {
  /** Integers only (no fraction, no exponent). */
  readonly integer: boolean;
  /** Whether any bound applies (then exponents are not allowed). */
  readonly bounded: boolean;
  readonly #lo: Decimal | null;
  readonly #hi: Decimal | null;
  readonly #loEx: boolean;
  readonly #hiEx: boolean;
  #memo = new Map<string, number>();

  /** A number node; `bounds` null for any value. */
  constructor(integer: boolean, bounds: NumberBounds | null = null) {
    super();
    this.integer = integer;
    this.#lo = bounds?.min != null ? decimal(bounds.min) : null;
    this.#hi = bounds?.max != null ? decimal(bounds.max) : null;
    this.#loEx = bounds?.minExclusive ?? false;
    this.#hiEx = bounds?.maxExclusive ?? false;
    this.bounded = this.#lo !== null || this.#hi !== null;
  }

  override computeMin(): number {
    return this.#needText("");
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    const phase = sym === 0x2d ? Num.MINUS : sym === 0x30 ? Num.ZERO : sym > 0x30 && sym <= 0x39 ? Num.INT : -1;
    if (phase < 0) return;
    const text = String.fromCharCode(sym);
    const digits = phase === Num.MINUS ? 0 : 1;
    if (this.#needText(text) < Infinity) {
      out.push({ node: this, s: phase, a: digits, b: 0, c: 0, x: text, parent, rest });
    }
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    const phase = this.#next(f, sym);
    if (phase >= 0) {
      const text = (f.x as string) + String.fromCharCode(sym);
      const digit = sym >= 0x30 && sym <= 0x39 ? 1 : 0;
      const inExp = phase >= Num.E;
      if (this.#needText(text) < Infinity) {
        out.push(again(f, phase, f.a + (inExp ? 0 : digit), f.b + (inExp ? digit : 0), 0, text));
      }
    }
    if (this.canEnd(f)) {
      const p = complete(f);
      p.node.step(p, sym, out);
    }
  }

  /** The phase after `sym`, or -1 when the syntax (or a digit limit) forbids it. */
  #next(f: Frame, sym: number): number {
    const phase = f.s;
    const digit = sym >= 0x30 && sym <= 0x39;
    const room = f.a < MAX_DIGITS;
    switch (phase) {
      case Num.MINUS:
        return sym === 0x30 ? Num.ZERO : digit ? Num.INT : -1;
      case Num.ZERO:
      case Num.INT:
        if (digit) return phase === Num.INT && room ? Num.INT : -1;
        if (sym === 0x2e) return this.integer || !room ? -1 : Num.DOT;
        return (sym === 0x65 || sym === 0x45) && !this.integer && !this.bounded ? Num.E : -1;
      case Num.DOT:
        return digit ? Num.FRAC : -1;
      case Num.FRAC:
        if (digit) return room ? Num.FRAC : -1;
        return (sym === 0x65 || sym === 0x45) && !this.bounded ? Num.E : -1;
      case Num.E:
        return sym === 0x2b || sym === 0x2d ? Num.ESIGN : digit ? Num.EXP : -1;
      case Num.ESIGN:
        return digit ? Num.EXP : -1;
      case Num.EXP:
        return digit && f.b < MAX_EXP_DIGITS ? Num.EXP : -1;
    }
    return -1;
  }

  override canEnd(f: Frame): boolean {
    const s = f.s;
    return (s === Num.ZERO || s === Num.INT || s === Num.FRAC || s === Num.EXP) && this.#needText(f.x as string) === 0;
  }

  override need(f: Frame): number {
    return this.#needText(f.x as string);
  }

  /** Fewest bytes that complete `text` to a valid number within the bounds (Infinity: impossible). */
  #needText(text: string): number {
    if (!this.bounded) return needUnbounded(text);
    let v = this.#memo.get(text);
    if (v === undefined) {
      v = this.#needBounded(text);
      if (this.#memo.size > 100_000) this.#memo.clear();
      this.#memo.set(text, v);
    }
    return v;
  }

  #needBounded(text: string): number {
    if (text === "") return Math.min(this.#needDigits(1, "", null), 1 + this.#needDigits(-1, "", null));
    const neg = text.startsWith("-");
    const body = neg ? text.slice(1) : text;
    const dot = body.indexOf(".");
    const ip = dot < 0 ? body : body.slice(0, dot);
    return this.#needDigits(neg ? -1 : 1, ip, dot < 0 ? null : body.slice(dot + 1));
  }

  /**
   * Fewest bytes after sign `sign`, integer digits `ip` and fraction digits `fp` (null: no dot yet) to reach a value
   * within the bounds; tries completions in order of length.
   */
  #needDigits(sign: number, ip: string, fp: string | null): number {
    const k = ip.length;
    const used = k + (fp?.length ?? 0);
    // Bounds on the magnitude: sign · m ∈ [lo, hi].
    const neg = (d: Decimal | null) => d && { n: -d.n, e: d.e };
    const [lo, loEx, hi, hiEx] = sign > 0
      ? [this.#lo, this.#loEx, this.#hi, this.#hiEx]
      : [neg(this.#hi), this.#hiEx, neg(this.#lo), this.#loEx];
    const fits = (m0: bigint, m1: bigint, f: number) => {
      const [a, b] = unitRange(lo, loEx, hi, hiEx, f);
      const x = m0 > a ? m0 : a, y = m1 < b ? m1 : b;
      return x <= y;
    };
    if (fp !== null) {
      // After the dot: only more fraction digits (at least one when there is none yet).
      const base = BigInt(ip + fp);
      for (let f = fp.length === 0 ? 1 : 0; used + f <= MAX_DIGITS; f++) {
        const scale = 10n ** BigInt(f);
        if (fits(base * scale, base * scale + scale - 1n, fp.length + f)) return f;
      }
      return Infinity;
    }
    const d = k > 0 ? BigInt(ip) : 0n;
    for (let cost = 0; cost <= 2 * MAX_DIGITS + 1; cost++) {
      for (let j = 0; j <= cost; j++) {
        const tail = cost - j; // 0: no fraction; else a dot and tail − 1 digits
        if (tail === 1) continue;
        const f = tail === 0 ? 0 : tail - 1;
        if (f > 0 && this.integer) continue;
        if (k + j + f > MAX_DIGITS) continue;
        let lo0: bigint, hi0: bigint;
        if (k === 0) {
          if (j === 0) continue;
          [lo0, hi0] = j === 1 ? [0n, 9n] : [10n ** BigInt(j - 1), 10n ** BigInt(j) - 1n];
        } else {
          if (ip === "0" && j > 0) continue;
          const p = 10n ** BigInt(j);
          [lo0, hi0] = [d * p, d * p + p - 1n];
        }
        const scale = 10n ** BigInt(f);
        if (fits(lo0 * scale, hi0 * scale + scale - 1n, f)) return cost;
      }
    }
    return Infinity;
  }
}

/** Fewest bytes completing an unbounded number: one digit after a sign, a dot or an exponent mark. */
function needUnbounded(text: string): number {
  if (text === "") return 1;
  const last = text.charCodeAt(text.length - 1);
  return last >= 0x30 && last <= 0x39 ? 0 : 1;
}
