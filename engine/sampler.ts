/**
 * Host-side sampling of one token per logits row, with every {@link SamplingParams} setting.
 *
 * Order per row: penalties (repetition over prompt and output, then presence/frequency over the output), then
 * temperature, then top-k, top-p (relative to the top-k set, as in `ops/sample.ts`), min-p (relative to the most
 * likely token), and an inverse-CDF draw from the sequence's own seeded generator. Candidates are ordered by
 * logit, ties by lower id, exactly as the `sample` op orders them, so for the same uniform the two pick the same
 * token (up to summation order at a boundary).
 *
 * Log-probabilities are those of the distribution after penalties and temperature but before the truncation
 * filters (top-k, top-p, min-p): the model's view, sharpened or flattened by temperature, not renormalised over the
 * survivors. At temperature 0 (greedy) they are taken at temperature 1. (vLLM reports the raw model's logprobs by
 * default; ours differ from those only by penalties and temperature.)
 *
 * Everything is O(V) per row: one copy, one exp pass, and quickselect-style partitions for top-k, the top-p cut
 * and the draw itself; only the ≤ 20 reported alternatives are ever sorted.
 *
 * Constrained decoding: when the request has a {@link SamplingParams.constraint}, its matcher's mask sets every
 * disallowed logit to −∞ right after the penalties, before any filter, so temperature, top-k/p, min-p and the
 * log-probabilities all see the constrained distribution; the chosen id then advances the matcher.
 *
 * @example
 * ```ts
 * import { Sampler, SamplingState } from "./sampler.ts";
 * const sampler = new Sampler(4);
 * const state = new SamplingState({ temperature: 0.7, topP: 0.9, topK: 0, minP: 0, presencePenalty: 0,
 *   frequencyPenalty: 0, seed: 42, logprobs: 2 }, [1, 5]);
 * const tok = sampler.sample(new Float32Array([0.1, 2, 1.5, -1]), state); // { id, logprob, topLogprobs }
 * ```
 *
 * @module
 */

import type { ConstraintMatcher, GeneratedToken, SamplingParams, TokenLogprob } from "./types.ts";
import { maskWords } from "../ops/sample.ts";

/** Most alternatives reported per token (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/** Greedy decoding with every filter and penalty off: the settings of tests and deterministic tools. */
export const GREEDY: Readonly<SamplingParams> = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

/**
 * xoshiro128** — a small, fast generator with 128 bits of state, so one sequence's draws never depend on another's.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * const u = rng.uniform(); // in [0, 1), the same for every run seeded 42
 * ```
 */
export class Rng {
  #s = new Uint32Array(4);

  /** Seeds from any safe integer (both 32-bit halves are mixed in); absent = from the OS's random source. */
  constructor(seed?: number) {
    if (seed === undefined) {
      crypto.getRandomValues(this.#s);
    } else {
      // splitmix32 over (low, high) halves: nearby seeds give unrelated states.
      let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 4294967296) | 0, 0x9e3779b9);
      for (let i = 0; i < 4; i++) {
        x = (x + 0x9e3779b9) | 0;
        let z = x;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
        this.#s[i] = z ^ (z >>> 16);
      }
    }
    if ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0) this.#s[0] = 1; // the all-zero state is a fixpoint
  }

  /** The next 32 random bits as an unsigned integer. */
  nextU32(): number {
    const s = this.#s;
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5, lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * One sequence's sampling state: its settings, its generator, and the token statistics the penalties need. The
 * engine keeps it across preemption, so a recomputed sequence continues exactly where it was.
 */
export class SamplingState {
  /** The request's settings. */
  readonly params: SamplingParams;
  /** This sequence's generator. */
  readonly rng: Rng;
  /** How often each id was generated (presence and frequency penalties). */
  readonly counts: Map<number, number> = new Map();
  /** Every id of the prompt and the output (repetition penalty); null when that penalty is off. */
  readonly seen: Set<number> | null;
  /** This sequence's position in the request's constraint; null when unconstrained. */
  readonly matcher: ConstraintMatcher | null;

  /** State for a new sequence with this prompt. */
  constructor(params: SamplingParams, promptIds: readonly number[]) {
    this.params = params;
    this.rng = new Rng(params.seed);
    const rp = params.repetitionPenalty;
    this.seen = rp !== undefined && rp !== 1 ? new Set(promptIds) : null;
    this.matcher = params.constraint?.matcher() ?? null;
  }

  /** Records a generated id. */
  observe(id: number): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.seen?.add(id);
  }
}

/**
 * Samples rows of logits. Holds scratch buffers of the vocabulary's size, so one instance serves every sequence
 * (not concurrently: the engine samples rows one after another).
 */
export class Sampler {
  readonly #x: Float64Array; // penalised logits
  readonly #w: Float64Array; // exp((x - max) / T): unnormalised probabilities
  readonly #idx: Int32Array; // candidate ids, partitioned in place
  readonly #top: Int32Array; // running list of a small top-k
  readonly #mask: Uint32Array; // allowed ids of a constrained row

  /** A sampler for rows of `vocab` logits. */
  constructor(vocab: number) {
    this.#x = new Float64Array(vocab);
    this.#w = new Float64Array(vocab);
    this.#idx = new Int32Array(vocab);
    this.#top = new Int32Array(Math.max(SMALL_K, MAX_TOP_LOGPROBS));
    this.#mask = new Uint32Array(maskWords(vocab));
  }

  /**
   * Picks the next token of a sequence from its logits row, records it in `state`, and reports logprobs if asked.
   * `remaining` (tokens left, this one included) is what a constrained sequence must finish within.
   */
  sample(row: ArrayLike<number>, state: SamplingState, remaining = Infinity): GeneratedToken {
    const token = this.#pick(row, state, remaining);
    state.matcher?.advance(token.id, remaining);
    return token;
  }

  /**
   * The distribution {@link Sampler.sample} draws from for this row and state, as probabilities over the whole
   * vocabulary (penalties, constraint mask, temperature, top-k, top-p, min-p; one-hot at the argmax when greedy),
   * without drawing or recording anything. Speculative verification compares it with the draft's. Written into
   * `out` (zeroed first) when given, else a new array.
   */
  distribution(row: ArrayLike<number>, state: SamplingState, remaining = Infinity, out?: Float64Array): Float64Array {
    const x = this.#prepare(row, state, remaining), v = x.length, p = state.params;
    if (out) out.fill(0);
    else out = new Float64Array(v);
    const best = argmax(x);
    if (state.matcher && x[best] === -Infinity) throw new Error("sampler: the constraint allows no token (a bug)");
    if (!(p.temperature > 0)) {
      out[best] = 1;
      return out;
    }
    const w = this.#w, idx = this.#idx;
    this.#weighAll(x[best], p.temperature);
    let n = 0;
    for (let i = 0; i < v; i++) if (w[i] > 0) idx[n++] = i;
    if (p.topK > 0 && p.topK < n) n = selectPrefix(idx, n, x, null, p.topK, false);
    let total = sumOver(idx, n, w);
    if (p.topP < 1) {
      n = selectPrefix(idx, n, x, w, p.topP * total, false);
      total = sumOver(idx, n, w);
    }
    if (p.minP > 0) {
      let kept = 0;
      for (let i = 0; i < n; i++) if (w[idx[i]] >= p.minP) idx[kept++] = idx[i];
      n = kept;
      total = sumOver(idx, n, w);
    }
    for (let i = 0; i < n; i++) out[idx[i]] = w[idx[i]] / total;
    return out;
  }

  /**
   * Takes `id` as this row's token (chosen elsewhere: speculative verification) exactly as {@link Sampler.sample}
   * would have: its log-probabilities if asked for, then the state records it and the constraint advances.
   */
  record(row: ArrayLike<number>, state: SamplingState, id: number, remaining = Infinity): GeneratedToken {
    let token: GeneratedToken = { id };
    if (state.params.logprobs !== undefined) {
      const x = this.#prepare(row, state, remaining);
      const temperature = state.params.temperature > 0 ? state.params.temperature : 1;
      const max = x[argmax(x)];
      token = this.#withLogprobs(id, state.params, max, temperature, this.#weighAll(max, temperature));
    }
    state.observe(id);
    state.matcher?.advance(id, remaining);
    return token;
  }

  /** Copies the row into the scratch logits with penalties and the constraint's mask applied. */
  #prepare(row: ArrayLike<number>, state: SamplingState, remaining: number): Float64Array {
    const v = row.length;
    if (v !== this.#x.length) throw new Error(`sampler: row of ${v} logits, expected ${this.#x.length}`);
    const x = this.#x;
    for (let i = 0; i < v; i++) x[i] = row[i];
    applyPenalties(x, state);
    if (state.matcher) {
      state.matcher.fillMask(this.#mask, remaining);
      applyMask(x, this.#mask);
    }
    return x;
  }

  #pick(row: ArrayLike<number>, state: SamplingState, remaining: number): GeneratedToken {
    const v = row.length;
    const p = state.params;
    const x = this.#prepare(row, state, remaining);
    const best = argmax(x);
    if (state.matcher && x[best] === -Infinity) throw new Error("sampler: the constraint allows no token (a bug)");
    const greedy = !(p.temperature > 0);
    const wantLogprobs = p.logprobs !== undefined;
    if (greedy && !wantLogprobs) {
      state.observe(best);
      return { id: best };
    }
    // The distribution after temperature (1 when greedy): w[i] = exp((x[i] − max) / T), summing to z.
    const temperature = greedy ? 1 : p.temperature;
    const max = x[best];
    const k = !greedy && p.topK > 0 && p.topK < v ? p.topK : v;
    // z costs an exp per id: skip it when only the top k matter and no logprobs are asked for.
    const z = wantLogprobs || k === v ? this.#weighAll(max, temperature) : NaN;
    let id = greedy ? best : this.#draw(p, k, max, temperature, z, state.rng.uniform());
    // Rounding can leave the draw at the end of the candidate order, where masked (−∞) ids sit.
    if (x[id] === -Infinity) id = best;
    state.observe(id);
    if (!wantLogprobs) return { id };
    return this.#withLogprobs(id, p, max, temperature, z);
  }

  /** `id` with its log-probability and the top alternatives, from the scratch logits `x` (max, temperature, z). */
  #withLogprobs(id: number, p: SamplingParams, max: number, temperature: number, z: number): GeneratedToken {
    const x = this.#x, v = x.length;
    const logZ = Math.log(z);
    const logprobOf = (j: number) => (x[j] - max) / temperature - logZ;
    const token: GeneratedToken = { id, logprob: logprobOf(id), topLogprobs: [] };
    const top = Math.min(p.logprobs!, MAX_TOP_LOGPROBS, v);
    if (top > 0) {
      // The candidate list is done with, so its buffer can hold every id for the scan.
      const all = this.#idx;
      for (let i = 0; i < v; i++) all[i] = i;
      topInto(all, v, x, top, this.#top);
      token.topLogprobs = Array.from(all.subarray(0, top), (j): TokenLogprob => ({ id: j, logprob: logprobOf(j) }))
        // Ids a constraint forbids have no probability: they are not alternatives.
        .filter((t) => t.logprob > -Infinity);
    }
    return token;
  }

  /** Fills w for every id; returns z, their sum. */
  #weighAll(max: number, temperature: number): number {
    const x = this.#x, w = this.#w;
    const inv = 1 / temperature;
    let z = 0;
    for (let i = 0; i < x.length; i++) z += w[i] = Math.exp((x[i] - max) * inv);
    return z;
  }

  /**
   * Top-k (`k` < vocabulary, else off), top-p, min-p, then the inverse-CDF draw of `u`. `z` is the sum of w over
   * the vocabulary (NaN when top-k is on and w was not computed: then only the k kept ids get weights).
   */
  #draw(p: SamplingParams, k: number, max: number, temperature: number, z: number, u: number): number {
    const x = this.#x, w = this.#w, idx = this.#idx;
    const v = x.length;
    // Work on a shortlist: the ids within a logit window of the top, a prefix of the candidate order. Whenever the
    // answer provably lies inside it, the result is the same as over the whole vocabulary. An LM puts nearly all of
    // its mass on a few hundred ids; a flat distribution falls through to the whole vocabulary.
    let n = 0;
    for (const tau of SHORTLIST_CUTS) {
      const cut = max + temperature * Math.log(tau); // w ≥ τ, in logits; −∞ for τ = 0
      n = 0;
      for (let i = 0; i < v; i++) if (x[i] >= cut) idx[n++] = i;
      if (k < v ? n >= k : this.#shortlistFits(p, n, z, u, tau)) break;
    }
    let total = z; // mass of the candidate set over the whole vocabulary
    if (k < v) {
      n = k <= SMALL_K ? topInto(idx, n, x, k, this.#top) : selectPrefix(idx, n, x, null, k, false);
      if (Number.isNaN(z)) {
        const inv = 1 / temperature;
        for (let i = 0; i < n; i++) w[idx[i]] = Math.exp((x[idx[i]] - max) * inv);
      }
      total = sumOver(idx, n, w);
    }
    if (p.topP < 1) {
      n = selectPrefix(idx, n, x, w, p.topP * total, false);
      total = sumOver(idx, n, w);
    }
    if (p.minP > 0) {
      // w of the most likely token is exp(0) = 1, so the cut is w ≥ minP; the top token always survives.
      let kept = 0;
      for (let i = 0; i < n; i++) if (w[idx[i]] >= p.minP) idx[kept++] = idx[i];
      n = kept;
      total = sumOver(idx, n, w);
    }
    // The first candidate, in order, whose cumulative weight exceeds u · total.
    const c = selectPrefix(idx, n, x, w, Math.min(Math.max(u, 0), 1) * total, true);
    return idx[c - 1];
  }

  /** Without top-k: does the shortlist `idx[0, n)` (the ids with w ≥ τ) hold the whole answer? */
  #shortlistFits(p: SamplingParams, n: number, z: number, u: number, tau: number): boolean {
    if (p.minP > tau) return true; // the min-p set, a prefix no longer than the shortlist, bounds the answer
    const mass = sumOver(this.#idx, n, this.#w);
    // Top-p: the nucleus ends inside. Otherwise the draw's point u · z falls inside.
    return p.topP < 1 ? mass >= p.topP * z : mass > u * z;
  }
}

/** Shortlist thresholds on w (relative to the top token's 1), tried in turn; 0 takes every id. */
const SHORTLIST_CUTS = [1e-4, 1e-9, 0];

/** Up to this k, top-k keeps a sorted list while scanning (about one comparison per id) instead of quickselect. */
const SMALL_K = 64;

/**
 * Writes the `k` first of `idx[0, n)` in candidate order (larger key first, lower id on ties), sorted, to
 * `idx[0, k)`, using `scratch` for the running list; returns `k` (or `n` when smaller). One pass; an id costs one
 * comparison unless it enters the list.
 */
export function topInto(idx: Int32Array, n: number, key: Float64Array, k: number, scratch: Int32Array): number {
  const m = Math.min(k, n);
  let len = 0;
  for (let i = 0; i < n; i++) {
    const id = idx[i];
    const kx = key[id];
    if (len === m) {
      const last = scratch[m - 1];
      // Ids arrive in any order, so ties compare ids too.
      if (!(kx > key[last] || (kx === key[last] && id < last))) continue;
      len--;
    }
    let j = len++;
    while (j > 0) {
      const prev = scratch[j - 1];
      if (!(kx > key[prev] || (kx === key[prev] && id < prev))) break;
      scratch[j] = prev;
      j--;
    }
    scratch[j] = id;
  }
  idx.set(scratch.subarray(0, m));
  return m;
}

/** Repetition penalty (CTRL: divide positive logits, multiply negative ones), then OpenAI presence/frequency. */
function applyPenalties(x: Float64Array, state: SamplingState): void {
  const p = state.params;
  const rp = p.repetitionPenalty ?? 1;
  if (state.seen && rp !== 1) {
    for (const id of state.seen) x[id] = x[id] > 0 ? x[id] / rp : x[id] * rp;
  }
  if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
    for (const [id, count] of state.counts) x[id] -= p.frequencyPenalty * count + p.presencePenalty;
  }
}

/** Sets the logits of ids whose mask bit is clear to −∞ (visiting only those: a mask is mostly full or empty). */
function applyMask(x: Float64Array, mask: Uint32Array): void {
  const v = x.length;
  for (let w = 0; w < mask.length; w++) {
    let clear = ~mask[w];
    if (clear === 0) continue;
    const base = w * 32;
    if (clear === -1) {
      x.fill(-Infinity, base, Math.min(base + 32, v));
      continue;
    }
    for (; clear !== 0; clear &= clear - 1) {
      const id = base + 31 - Math.clz32(clear & -clear);
      if (id < v) x[id] = -Infinity;
    }
  }
}

/** Index of the largest value; the lowest index on ties (the greedy pick). */
export function argmax(x: Float64Array | Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

function sumOver(idx: Int32Array, n: number, w: Float64Array): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += w[idx[i]];
  return s;
}

/**
 * Partitions `idx[0, n)` so that its first `c` entries are the `c` first candidates in order (larger `key` first,
 * lower id on ties), where `c` is the smallest count ≥ 1 whose cumulative weight reaches `target` (`strict`: exceeds
 * it). Weights are `weight[id]`, or 1 each when `weight` is null (then `target` is a count). Returns `c`; `idx[c − 1]`
 * is then the c-th candidate. When rounding leaves the target unmet, every candidate is taken (`c = n`).
 *
 * Quickselect: expected O(n), never a full sort. The pivot is a median of three, chosen deterministically so that
 * the same logits always partition the same way.
 */
export function selectPrefix(
  idx: Int32Array,
  n: number,
  key: Float64Array,
  weight: Float64Array | null,
  target: number,
  strict: boolean,
): number {
  const before = (a: number, b: number) => key[a] > key[b] || (key[a] === key[b] && a < b);
  const meets = (cum: number) => strict ? cum > target : cum >= target;
  let lo = 0, hi = n;
  // Invariant: idx[0, lo) precede everything in idx[lo, hi), their weight is already subtracted from `target`, and
  // the answer lies in [lo, hi).
  while (lo < hi) {
    const mid = lo + ((hi - lo) >> 1);
    // Median of three to idx[hi − 1].
    let a = lo, b = mid, c = hi - 1;
    if (before(idx[b], idx[a])) [a, b] = [b, a];
    if (before(idx[c], idx[b])) {
      [b, c] = [c, b];
      if (before(idx[b], idx[a])) [a, b] = [b, a];
    }
    swap(idx, b, hi - 1);
    const pivot = idx[hi - 1];
    // Lomuto partition: idx[lo, store) precede the pivot.
    let store = lo;
    let mass = 0;
    for (let i = lo; i < hi - 1; i++) {
      const id = idx[i];
      if (before(id, pivot)) {
        mass += weight ? weight[id] : 1;
        idx[i] = idx[store];
        idx[store++] = id;
      }
    }
    swap(idx, store, hi - 1);
    if (store > lo && meets(mass)) {
      hi = store;
      continue;
    }
    const withPivot = mass + (weight ? weight[pivot] : 1);
    if (meets(withPivot)) return store + 1;
    target -= withPivot;
    lo = store + 1;
  }
  return Math.max(hi, 1);
}

function swap(a: Int32Array, i: number, j: number): void {
  const t = a[i];
  a[i] = a[j];
  a[j] = t;
}
