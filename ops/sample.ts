/**
 * `sample`: one token id per row of `logits [R, V]`, with per-row `temperature f32 [R]`, `topK i32 [R]`
 * (0 = off), `topP f32 [R]` (1 = off) and `uniform f32 [R]` (a random number in [0, 1) drawn by the caller, so a
 * run is deterministic) → `i32 [R]`.
 *
 * Per row: temperature ≤ 0 → argmax (lowest index on ties). Otherwise candidates are ordered by logit (ties: lower
 * index first), cut to the top k, given probabilities `softmax(logit / temperature)` over the kept set, cut to the
 * shortest prefix whose probability reaches top p, renormalised; the id is the first whose cumulative
 * probability exceeds `uniform · total`. Computed in f64.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sample } from "./sample.ts";
 * const g = new GraphBuilder();
 * const ids = sample(g, {
 *   logits: g.input("logits", [2, 10], "f32"), temperature: g.input("temperature", [2], "f32"),
 *   topK: g.input("top_k", [2], "i32"), topP: g.input("top_p", [2], "f32"), uniform: g.input("uniform", [2], "f32"),
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
  inputNames: ["logits", "temperature", "topK", "topP", "uniform"],
  inferShape([logits, temperature, topK, topP, uniform]) {
    expectRank("logits", logits, 2);
    expectFloat("logits", logits);
    const types: [string, typeof temperature, DType][] = [
      ["temperature", temperature, "f32"],
      ["topK", topK, "i32"],
      ["topP", topP, "f32"],
      ["uniform", uniform, "f32"],
    ];
    for (const [n, x, dtype] of types) {
      expectRank(n, x, 1);
      expectDType(n, x, dtype);
      expectDim(`rows (${n} vs logits)`, x.shape[0], logits.shape[0]);
    }
    return { shape: [logits.shape[0]], dtype: "i32" };
  },
  reference([logits, temperature, topK, topP, uniform], out) {
    const [r, v] = logits.shape;
    for (let i = 0; i < r; i++) {
      const row = logits.data.subarray(i * v, (i + 1) * v);
      out.data[i] = sampleRow(row, temperature.data[i], topK.data[i], topP.data[i], uniform.data[i]);
    }
  },
  cost(inputs, out) {
    return { flops: 5 * inputs[0].shape[0] * inputs[0].shape[1], bytes: ioBytes(inputs, out) };
  },
};

/** Samples one id from a row of logits (see the module doc); exported for the engine's host-side sampler. */
export function sampleRow(row: ArrayLike<number>, temperature: number, topK: number, topP: number, u: number): number {
  const v = row.length;
  if (!(temperature > 0)) {
    let best = 0;
    for (let j = 1; j < v; j++) if (row[j] > row[best]) best = j;
    return best;
  }
  const order = Array.from({ length: v }, (_, j) => j).sort((a, b) => row[b] - row[a] || a - b);
  const k = topK > 0 ? Math.min(topK, v) : v;
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
export type SampleInputs = { logits: Tensor; temperature: Tensor; topK: Tensor; topP: Tensor; uniform: Tensor };

/** One sampled id per logits row. */
export function sample(g: GraphBuilder, x: SampleInputs, options: NodeOptions = {}): Tensor {
  return g.op(sampleOp, [x.logits, x.temperature, x.topK, x.topP, x.uniform], {}, options);
}
