/**
 * `moe_route`: router logits `[T, E]` → dense combine weights `[T, E]`: softmax over all E (f32), keep the top-k,
 * renormalise them (`p / (Σ p_top + 1e-20)`), zero elsewhere.
 *
 * Why dense rather than (ids, weights): it keeps one output per node with one dtype, and it is exactly the
 * matrix the expert mix multiplies by. `moe_experts` reads the non-zeros (at most k per row); a kernel that wants
 * ids finds them in one pass over E (128) values per token. A selected expert whose weight underflows to 0
 * contributes 0 either way, so nothing is lost.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { moeRoute } from "./moe_route.ts";
 * const g = new GraphBuilder();
 * const w = moeRoute(g, g.input("router_logits", [5, 8], "f32"), { topK: 2 }); // [5, 8], 2 non-zeros per row
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { concreteDim, expectDType, expectPositiveInt, expectRank, ioBytes, type OpDef } from "./op.ts";

/** `topK`: experts per token. */
export type MoeRouteAttrs = { topK: number };

/** The `moe_route` op. */
export const moeRouteOp: OpDef<MoeRouteAttrs> = {
  name: "moe_route",
  inputNames: ["logits"],
  inferShape([logits], { topK }) {
    expectRank("logits", logits, 2);
    expectDType("logits", logits, "f32");
    const e = concreteDim("experts (logits dim 1)", logits.shape[1]);
    expectPositiveInt("topK", topK);
    if (topK > e) throw new Error(`topK ${topK} > ${e} experts`);
    return { shape: [...logits.shape], dtype: "f32" };
  },
  reference([logits], out, { topK }) {
    const [t, e] = logits.shape;
    const p = new Float32Array(e);
    const order = Array.from({ length: e }, (_, i) => i);
    for (let r = 0; r < t; r++) {
      const o = r * e;
      let max = -Infinity, sum = 0;
      for (let i = 0; i < e; i++) max = Math.max(max, logits.data[o + i]);
      for (let i = 0; i < e; i++) sum += p[i] = Math.exp(logits.data[o + i] - max);
      for (let i = 0; i < e; i++) p[i] = p[i] / sum; // rounded to f32 by the array, as an f32 softmax is
      // Highest probability first; ties go to the lower expert index.
      order.sort((a, b) => p[b] - p[a] || a - b);
      let top = 0;
      for (let k = 0; k < topK; k++) top += p[order[k]];
      for (let k = 0; k < topK; k++) out.data[o + order[k]] = p[order[k]] / (top + 1e-20);
    }
  },
  cost(inputs, out) {
    return { flops: 5 * numel(out.shape), bytes: ioBytes(inputs, out) };
  },
};

/** Top-k softmax routing weights, dense over experts. */
export function moeRoute(g: GraphBuilder, logits: Tensor, options: NodeOptions & MoeRouteAttrs): Tensor {
  const { topK, ...node } = options;
  return g.op(moeRouteOp, [logits], { topK }, node);
}
