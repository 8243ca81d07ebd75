/**
 * The per-step decisions every backend makes the same way, from the host copies of a step's integer inputs (the
 * executor hands them to `run`): which tokens of an MLA step take the naive (expanded) prefill form and which the
 * absorbed kernel, when decode attention splits the context, runs of tokens sharing a query temperature, and the
 * index checks that keep cache and gather kernels inside their tensors. No backend reads device memory for these.
 *
 * @example
 * ```ts
 * import { planMla } from "./step_plan.ts";
 * const runs = planMla(Int32Array.of(0, 0, 0, 1), Int32Array.of(0, 1, 2, 9), { naivePrefill: 3 });
 * // [{ kind: "naive", start: 0, n: 3, p0: 0 }, { kind: "absorbed", start: 3, n: 1, context: 10 }]
 * ```
 *
 * @module
 */

import { attnTemperatureScale } from "../ops/attn_temperature.ts";

/** Tokens `[start, start + n)` of a step and the MLA form they take. */
export type MlaRun =
  /** Consecutive positions `p0, p0 + 1, …` of one sequence: expand the context once, attend with full keys. */
  | { kind: "naive"; start: number; n: number; p0: number }
  /** Anything else (decode tokens, short chunks): the absorbed kernel; `context` = the longest `pos + 1`. */
  | { kind: "absorbed"; start: number; n: number; context: number };

/** When the naive form pays (see {@link planMla}). */
export type MlaPlanOptions = {
  /** Runs of at least this many consecutive tokens of one sequence go naive (1: all of them; Infinity: none). */
  naivePrefill: number;
};

/**
 * The step's tokens cut into naive runs (maximal runs of at least `naivePrefill` tokens of one sequence at
 * consecutive positions: the naive prefill needs every earlier position already in the cache, which it is) and the
 * absorbed ranges between them, in token order.
 */
export function planMla(seq: Int32Array, pos: Int32Array, o: MlaPlanOptions): MlaRun[] {
  const runs: MlaRun[] = [];
  let done = 0;
  const absorbed = (start: number, end: number) => {
    if (end <= start) return;
    let context = 0;
    for (let t = start; t < end; t++) context = Math.max(context, pos[t] + 1);
    runs.push({ kind: "absorbed", start, n: end - start, context });
  };
  for (let t = 0; t < seq.length;) {
    let e = t + 1;
    while (e < seq.length && seq[e] === seq[t] && pos[e] === pos[e - 1] + 1) e++;
    if (e - t >= o.naivePrefill) {
      absorbed(done, t);
      runs.push({ kind: "naive", start: t, n: e - t, p0: pos[t] });
      done = e;
    }
    t = e;
  }
  absorbed(done, seq.length);
  return runs;
}

/** What {@link decodeSplits} weighs. */
export type DecodeSplitOptions = {
  /** Tokens of the absorbed range. */
  tokens: number;
  /** Its longest context. */
  context: number;
  /** Work items the backend wants in flight (wasm: 4 per thread; a GPU: some per SM). */
  parallelism: number;
  /** Most `tokens × parts` items its scratch holds. */
  maxItems: number;
  /** Contexts shorter than this are not split (head groups read them whole). */
  splitContext: number;
};

/**
 * Parts the context of a decode range is split into (each attends over a part, a merge pass combines them), or 0
 * for no split: long contexts with few tokens would otherwise leave the backend idle or read the cache per head
 * group. Parts cover at least 64 positions each.
 */
export function decodeSplits(o: DecodeSplitOptions): number {
  const parts = Math.min(
    Math.ceil(o.parallelism / o.tokens),
    Math.ceil(o.context / 64),
    Math.floor(o.maxItems / o.tokens),
  );
  return o.context >= o.splitContext && parts > 1 ? parts : 0;
}

/**
 * Sequence, position and block ids of a step must address the cache (`blockTable [S, maxBlocks]`, `numBlocks`
 * blocks of `blockSize`): a bad one would write or read outside it. Throws a RangeError naming the first.
 */
export function checkCacheIndices(
  seq: Int32Array,
  pos: Int32Array,
  blockTable: Int32Array,
  o: { sequences: number; maxBlocks: number; numBlocks: number; blockSize: number },
): void {
  const { sequences: S, maxBlocks: mb, numBlocks: nb, blockSize: bs } = o;
  const last = new Int32Array(S).fill(-1);
  for (let t = 0; t < seq.length; t++) {
    const q = seq[t], p = pos[t];
    if (!(q >= 0 && q < S)) throw new RangeError(`mla: seq ${q} outside 0..${S - 1}`);
    if (!(p >= 0 && Math.floor(p / bs) < mb)) throw new RangeError(`mla: pos ${p} beyond ${mb} blocks`);
    if (p > last[q]) last[q] = p;
  }
  for (let q = 0; q < S; q++) {
    for (let b = 0; b <= Math.floor(last[q] / bs) && last[q] >= 0; b++) {
      const id = blockTable[q * mb + b];
      if (!(id >= 0 && id < nb)) throw new RangeError(`mla: block ${id} (seq ${q}) outside 0..${nb - 1}`);
    }
  }
}

/** Throws unless every index is in `[0, bound)`, naming the first bad one (`what`: e.g. "gather_rows: row"). */
export function checkIndices(indices: Int32Array, bound: number, what: string): void {
  for (let i = 0; i < indices.length; i++) {
    const v = indices[i];
    if (!(v >= 0 && v < bound)) throw new RangeError(`${what} ${v} at row ${i} outside 0..${bound - 1}`);
  }
}

/** Runs of tokens sharing one llama-4 query temperature (f32), so each run is one scaling pass. */
export function temperatureRuns(
  pos: Int32Array,
  beta: number,
  original: number,
): { start: number; end: number; scale: number }[] {
  const runs: { start: number; end: number; scale: number }[] = [];
  for (let t0 = 0; t0 < pos.length;) {
    const scale = Math.fround(attnTemperatureScale(pos[t0], beta, original));
    let t1 = t0 + 1;
    while (t1 < pos.length && Math.fround(attnTemperatureScale(pos[t1], beta, original)) === scale) t1++;
    runs.push({ start: t0, end: t1, scale });
    t0 = t1;
  }
  return runs;
}
