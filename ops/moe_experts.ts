/**
 * `moe_experts`: the routed expert mix. `x [T, D]`, `route [T, E]` (dense combine weights from `moe_route`),
 * `gateUp [E, 2F, D]` (per expert: F gate rows, then F up rows), `down [E, D, F]` → `[T, D]`:
 * `out[t] = Σ_{e: route[t,e] ≠ 0} route[t,e] · down_e(silu(gate_e·x) · (up_e·x))`, accumulated in f32 or wider
 * (f16 accumulators overflow on this model). Only selected experts are computed. The shared expert is not part
 * of this op: the model builds it from matmul / swiglu / matmul and adds it.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { moeExperts } from "./moe_experts.ts";
 * const g = new GraphBuilder();
 * const y = moeExperts(g, g.input("x", [5, 8], "f32"), g.input("route", [5, 4], "f32"),
 *   g.weight("experts.gate_up", [4, 12, 8], "f8e4m3"), g.weight("experts.down", [4, 8, 6], "f8e4m3"), { topK: 2 });
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import {
  bytesOf,
  concreteDim,
  expectDim,
  expectDType,
  expectFloat,
  expectPositiveInt,
  expectRank,
  type OpDef,
  tensorBytes,
} from "./op.ts";
import { silu } from "./swiglu.ts";

/** `topK`: at most this many non-zeros per route row (sizes kernel work lists and the cost). */
export type MoeExpertsAttrs = { topK: number };

/** The `moe_experts` op. */
export const moeExpertsOp: OpDef<MoeExpertsAttrs> = {
  name: "moe_experts",
  inputNames: ["x", "route", "gateUp", "down"],
  inferShape([x, route, gateUp, down], { topK }) {
    expectRank("x", x, 2);
    expectFloat("x", x);
    expectRank("route", route, 2);
    expectDType("route", route, "f32");
    expectRank("gateUp", gateUp, 3);
    expectRank("down", down, 3);
    expectFloat("gateUp", gateUp);
    expectFloat("down", down);
    expectDim("tokens (route vs x)", route.shape[0], x.shape[0]);
    const e = concreteDim("experts", route.shape[1]);
    expectDim("experts (gateUp dim 0 vs route)", gateUp.shape[0], e);
    expectDim("experts (down dim 0 vs route)", down.shape[0], e);
    expectDim("hidden (gateUp dim 2 vs x)", gateUp.shape[2], x.shape[1]);
    expectDim("hidden (down dim 1 vs x)", down.shape[1], x.shape[1]);
    const f = concreteDim("expert width (down dim 2)", down.shape[2]);
    expectDim("gateUp dim 1 (2 · expert width)", gateUp.shape[1], 2 * f);
    expectPositiveInt("topK", topK);
    if (topK > e) throw new Error(`topK ${topK} > ${e} experts`);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x, route, gateUp, down], out) {
    const [t, d] = x.shape, e = route.shape[1], f = down.shape[2];
    const act = new Float32Array(f);
    const acc = new Float64Array(d);
    for (let r = 0; r < t; r++) {
      const xo = r * d;
      acc.fill(0);
      for (let ex = 0; ex < e; ex++) {
        const wgt = route.data[r * e + ex];
        if (wgt === 0) continue;
        const gu = ex * 2 * f * d, dn = ex * d * f;
        for (let i = 0; i < f; i++) {
          let g = 0, u = 0;
          for (let c = 0; c < d; c++) {
            g += gateUp.data[gu + i * d + c] * x.data[xo + c];
            u += gateUp.data[gu + (f + i) * d + c] * x.data[xo + c];
          }
          act[i] = silu(Math.fround(g)) * Math.fround(u);
        }
        for (let c = 0; c < d; c++) {
          let y = 0;
          for (let i = 0; i < f; i++) y += down.data[dn + c * f + i] * act[i];
          acc[c] += wgt * Math.fround(y);
        }
      }
      for (let c = 0; c < d; c++) out.data[xo + c] = acc[c];
    }
  },
  cost([x, route, gateUp, down], out, { topK }) {
    const [t, d] = x.shape, [e, twoF] = gateUp.shape;
    // Distinct experts touched grows with the batch but never beyond E.
    const touched = Math.min(e, t * topK);
    const weights = bytesOf(touched * twoF * d, gateUp.dtype) + bytesOf(touched * d * (twoF / 2), down.dtype);
    return {
      flops: t * topK * (2 * twoF * d + 2 * d * (twoF / 2) + 2 * d),
      bytes: tensorBytes(x) + tensorBytes(route) + tensorBytes(out) + weights,
    };
  },
};

/** The weighted sum of the selected experts' SwiGLU MLPs. */
export function moeExperts(
  g: GraphBuilder,
  x: Tensor,
  route: Tensor,
  gateUp: Tensor,
  down: Tensor,
  options: NodeOptions & MoeExpertsAttrs,
): Tensor {
  const { topK, ...node } = options;
  return g.op(moeExpertsOp, [x, route, gateUp, down], { topK }, node);
}
