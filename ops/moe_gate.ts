/**
 * `moe_gate`: router logits `[T, E]` and the chosen experts `ids i32 [T, k]` (from `moe_topk`) → their combine
 * weights `[T, k]`: `p = softmax(logits)` in f32 over all E, then `p[ids] / (Σ_j p[ids_j] + 1e-20)` (the sum in
 * `ids` order), as Mistral 4 renormalises the top-k (`norm_topk_prob`).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { moeGate } from "./moe_gate.ts";
 * import { moeTopK } from "./moe_topk.ts";
 * const g = new GraphBuilder();
 * const logits = g.input("router_logits", [5, 8], "f32");
 * const w = moeGate(g, logits, moeTopK(g, logits, { topK: 2 })); // f32 [5, 2]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { checkRouterLogits, routerProbabilities } from "./moe_topk.ts";
import { expectDim, expectDType, expectRank, ioBytes, type OpDef } from "./op.ts";

/** The `moe_gate` op. */
export const moeGateOp: OpDef<Record<string, never>> = {
  name: "moe_gate",
  inputNames: ["logits", "ids"],
  inferShape([logits, ids]) {
    expectRank("ids", ids, 2);
    expectDType("ids", ids, "i32");
    const k = ids.shape[1];
    if (typeof k !== "number") throw new Error("ids dim 1 (experts per token) must be concrete");
    checkRouterLogits(logits, k);
    expectDim("tokens (ids dim 0 vs logits dim 0)", ids.shape[0], logits.shape[0]);
    return { shape: [logits.shape[0], k], dtype: "f32" };
  },
  reference([logits, ids], out) {
    const [t, e] = logits.shape, k = ids.shape[1];
    const p = new Float32Array(e);
    for (let r = 0; r < t; r++) {
      routerProbabilities(logits.data as Float32Array, r, p);
      let top = 0;
      for (let j = 0; j < k; j++) {
        const id = ids.data[r * k + j];
        if (!(id >= 0 && id < e)) throw new RangeError(`moe_gate: expert ${id} (token ${r}) outside 0..${e - 1}`);
        top = Math.fround(top + p[id]);
      }
      for (let j = 0; j < k; j++) out.data[r * k + j] = p[ids.data[r * k + j]] / Math.fround(top + 1e-20);
    }
  },
  cost(inputs, out) {
    return { flops: 4 * inputs[0].shape[0] * inputs[0].shape[1], bytes: ioBytes(inputs, out) };
  },
};

/** Renormalised softmax weights of the chosen experts. */
export function moeGate(g: GraphBuilder, logits: Tensor, ids: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(moeGateOp, [logits, ids], {}, options);
}
