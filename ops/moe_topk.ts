/**
 * `moe_topk`: router logits `[T, E]` → the ids of each token's `topK` experts `i32 [T, k]`, most probable first:
 * `p = softmax(logits)` in f32 over all E, ordered by `p` (ties → the lower expert id). Ordering by the f32
 * probabilities rather than the logits matters only on ties, and keeps every backend on one rule.
 *
 * Routing is two ops with one output each (ids here, weights in `moe_gate`) so that routes stay sparse on every
 * backend: a GPU groups tokens per expert from the ids on the device, and nothing densifies them.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { moeTopK } from "./moe_topk.ts";
 * const g = new GraphBuilder();
 * const ids = moeTopK(g, g.input("router_logits", [5, 8], "f32"), { topK: 2 }); // i32 [5, 2]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import type { TensorType } from "../graph/ir.ts";
import { concreteDim, expectDType, expectPositiveInt, expectRank, ioBytes, type OpDef } from "./op.ts";

/** `topK`: experts per token. */
export type MoeTopKAttrs = { topK: number };

/** Checks router logits and `topK`; returns the expert count. */
export function checkRouterLogits(logits: TensorType, topK: number): number {
  expectRank("logits", logits, 2);
  expectDType("logits", logits, "f32");
  const e = concreteDim("experts (logits dim 1)", logits.shape[1]);
  expectPositiveInt("topK", topK);
  if (topK > e) throw new Error(`topK ${topK} > ${e} experts`);
  return e;
}

/**
 * Row `r` of `logits` (`[T, E]`, f32 values) as f32 softmax probabilities into `p` (length E): the one softmax
 * `moe_topk` and `moe_gate` share, so both see exactly the same numbers.
 */
export function routerProbabilities(logits: Float32Array, r: number, p: Float32Array): void {
  const e = p.length, o = r * e;
  let max = -Infinity, sum = 0;
  for (let i = 0; i < e; i++) max = Math.max(max, logits[o + i]);
  for (let i = 0; i < e; i++) sum += p[i] = Math.exp(logits[o + i] - max);
  for (let i = 0; i < e; i++) p[i] = p[i] / sum; // rounded to f32 by the array, as an f32 softmax is
}

/** The `moe_topk` op. */
export const moeTopKOp: OpDef<MoeTopKAttrs> = {
  name: "moe_topk",
  inputNames: ["logits"],
  inferShape([logits], { topK }) {
    checkRouterLogits(logits, topK);
    return { shape: [logits.shape[0], topK], dtype: "i32" };
  },
  reference([logits], out, { topK }) {
    const [t, e] = logits.shape;
    const p = new Float32Array(e);
    const order = Array.from({ length: e }, (_, i) => i);
    for (let r = 0; r < t; r++) {
      routerProbabilities(logits.data as Float32Array, r, p);
      order.sort((a, b) => p[b] - p[a] || a - b);
      for (let k = 0; k < topK; k++) out.data[r * topK + k] = order[k];
    }
  },
  cost(inputs, out) {
    return { flops: 4 * inputs[0].shape[0] * inputs[0].shape[1], bytes: ioBytes(inputs, out) };
  },
};

/** Each token's `topK` experts, most probable first. */
export function moeTopK(g: GraphBuilder, logits: Tensor, options: NodeOptions & MoeTopKAttrs): Tensor {
  const { topK, ...node } = options;
  return g.op(moeTopKOp, [logits], { topK }, node);
}
