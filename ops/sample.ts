/**
 * `sample`: one token id per row of `logits [R, V]`, with per-row `temperature f32 [R]`, `topK i32 [R]`
 * (0 = off), `topP f32 [R]` (1 = off), `uniform f32 [R]` (a random number in [0, 1) drawn by the caller, so a
 * run is deterministic) and an optional allowed-id mask → `i32 [R]`.
 *
 * Masks (constrained decoding): `mask i32 [M, ceil(V/32)]` holds M bitmasks in the layout of
 * `ConstraintMatcher.fillMask` (bit `id & 31` of word `id >> 5` set = allowed; bits at ids ≥ V are ignored; i32
 * words because the IR has no u32), and `maskRow i32 [R]` says which of them row r obeys, or −1 for none. So an
 * unconstrained row costs nothing, and a step without constrained rows uploads `M = 0` masks rather than a 16 KB
 * all-ones row per row at the full vocabulary. A masked row whose mask allows no id gives −1.
 *
 * Per row: disallowed ids are dropped first, so nothing below ever sees them. Temperature ≤ 0 → argmax (lowest
 * index on ties). Otherwise candidates are ordered by logit (ties: lower index first), cut to the top k, given
 * probabilities `softmax(logit / temperature)` over the kept set, cut to the shortest prefix whose probability
 * reaches top p, renormalised; the id is the first whose cumulative probability exceeds `uniform · total`. Computed
 * in f64.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sample } from "./sample.ts";
 * const g = new GraphBuilder();
 * const ids = sample(g, {
 *   logits: g.input("logits", [2, 64], "f32"), temperature: g.input("temperature", [2], "f32"),
 *   topK: g.input("top_k", [2], "i32"), topP: g.input("top_p", [2], "f32"), uniform: g.input("uniform", [2], "f32"),
 *   maskRow: g.input("mask_row", [2], "i32"), mask: g.input("mask", [1, 2], "i32"), // row r obeys mask maskRow[r]
 * }); // i32 [2]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import type { DType } from "../graph/dtype.ts";
import { expectDim, expectDType, expectFloat, expectRank, ioBytes, type OpDef } from "./op.ts";

/** The `sample` op (no attributes: every parameter is a per-row input). */
export const sampleOp: OpDef<Record<string, never>> = {
  name: "sample",
  inputNames: ["logits", "temperature", "topK", "topP", "uniform", "maskRow", "mask"],
  inferShape([logits, temperature, topK, topP, uniform, maskRow, mask]) {
    expectRank("logits", logits, 2);
    expectFloat("logits", logits);
    const types: [string, typeof temperature, DType][] = [
      ["temperature", temperature, "f32"],
      ["topK", topK, "i32"],
      ["topP", topP, "f32"],
      ["uniform", uniform, "f32"],
      ["maskRow", maskRow, "i32"],
    ];
    for (const [n, x, dtype] of types) {
      expectRank(n, x, 1);
      expectDType(n, x, dtype);
      expectDim(`rows (${n} vs logits)`, x.shape[0], logits.shape[0]);
    }
    expectRank("mask", mask, 2);
    expectDType("mask", mask, "i32");
    const v = logits.shape[1];
    if (typeof v === "number") expectDim("mask words (ceil(V / 32))", mask.shape[1], maskWords(v));
    return { shape: [logits.shape[0]], dtype: "i32" };
  },
  reference([logits, temperature, topK, topP, uniform, maskRow, mask], out) {
    const [r, v] = logits.shape, w = maskWords(v);
    for (let i = 0; i < r; i++) {
      const row = logits.data.subarray(i * v, (i + 1) * v);
      const m = maskRow.data[i];
      const words = m >= 0 ? mask.data.subarray(m * w, (m + 1) * w) : null;
      out.data[i] = sampleRow(row, temperature.data[i], topK.data[i], topP.data[i], uniform.data[i], words);
    }
  },
  cost(inputs, out) {
    return { flops: 5 * inputs[0].shape[0] * inputs[0].shape[1], bytes: ioBytes(inputs, out) };
  },
};

/** Words of one allowed-id mask over a vocabulary of `v` ids: `ceil(v / 32)`. */
export function maskWords(v: number): number {
  return Math.ceil(v / 32);
}

/**
 * Samples one id from a row of logits (see the module doc); `mask` (null: every id) gives the allowed ids, and a
 * mask allowing none gives −1. Exported as the ground truth for the host-side sampler's tests.
 */
export function sampleRow(
  row: ArrayLike<number>,
  temperature: number,
  topK: number,
  topP: number,
  u: number,
  mask: ArrayLike<number> | null = null,
): number {
  const v = row.length;
  const allowed = (j: number) => mask === null || ((mask[j >> 5] >>> (j & 31)) & 1) === 1;
  if (!(temperature > 0)) {
    let best = -1;
    for (let j = 0; j < v; j++) if (allowed(j) && (best < 0 || row[j] > row[best])) best = j;
    return best;
  }
  const order: number[] = [];
  for (let j = 0; j < v; j++) if (allowed(j)) order.push(j);
  if (order.length === 0) return -1;
  order.sort((a, b) => row[b] - row[a] || a - b);
  const k = topK > 0 ? Math.min(topK, order.length) : order.length;
  const probs = new Float64Array(k);
  let total = 0;
  for (let j = 0; j < k; j++) total += probs[j] = Math.exp((row[order[j]] - row[order[0]]) / temperature);
  // Shortest prefix whose mass reaches topP (always at least one candidate).
  let kept = k;
  if (topP < 1) {
    let cum = 0;
    for (let j = 0; j < k; j++) {
      cum += probs[j] / total;
      if (cum >= topP) {
        kept = j + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let j = 0; j < kept; j++) mass += probs[j];
  const target = Math.min(Math.max(u, 0), 1) * mass;
  let cum = 0;
  for (let j = 0; j < kept; j++) {
    cum += probs[j];
    if (cum > target) return order[j];
  }
  return order[kept - 1];
}

/** The per-row inputs of {@link sample}. */
export type SampleInputs = {
  logits: Tensor;
  temperature: Tensor;
  topK: Tensor;
  topP: Tensor;
  uniform: Tensor;
  /** Which row of `mask` each logits row obeys, −1 for none `i32 [R]`. */
  maskRow: Tensor;
  /** Allowed-id bitmasks `i32 [M, ceil(V/32)]` (M may be 0). */
  mask: Tensor;
};

/** One sampled id per logits row. */
export function sample(g: GraphBuilder, x: SampleInputs, options: NodeOptions = {}): Tensor {
  return g.op(sampleOp, [x.logits, x.temperature, x.topK, x.topP, x.uniform, x.maskRow, x.mask], {}, options);
}
