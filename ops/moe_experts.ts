/**
 * `moe_experts`: the routed expert mix. `x [T, D]`, `ids i32 [T, k]` (from `moe_topk`), `weights [T, k]` (from
 * `moe_gate`), `gateUp [E, 2F, D]` (per expert: F gate rows, then F up rows), `down [E, D, F]` → `[T, D]`:
 * `out[t] = Σ_j weights[t,j] · down_e(silu(gate_e·x) · (up_e·x))` with `e = ids[t,j]`, accumulated in f32 or
 * wider (f16 accumulators overflow on this model). Only selected experts are computed; a backend groups the tokens
 * of each expert from `ids` (on the device, for a GPU). The shared expert is not part of this op: the model builds
 * it from matmul / swiglu / matmul and adds it.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { moeExperts } from "./moe_experts.ts";
 * const g = new GraphBuilder();
 * const y = moeExperts(g, g.input("x", [5, 8], "f32"), g.input("ids", [5, 2], "i32"), g.input("w", [5, 2], "f32"),
 *   g.weight("experts.gate_up", [4, 12, 8], "f8e4m3"), g.weight("experts.down", [4, 8, 6], "f8e4m3"));
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

/** The `moe_experts` op (no attributes: the expert count and k come from the shapes). */
export const moeExpertsOp: OpDef<Record<string, never>> = {
  name: "moe_experts",
  inputNames: ["x", "ids", "weights", "gateUp", "down"],
  inferShape([x, ids, weights, gateUp, down]) {
    expectRank("x", x, 2);
    expectFloat("x", x);
    expectRank("ids", ids, 2);
    expectDType("ids", ids, "i32");
    expectRank("weights", weights, 2);
    expectDType("weights", weights, "f32");
    expectRank("gateUp", gateUp, 3);
    expectRank("down", down, 3);
    expectFloat("gateUp", gateUp);
    expectFloat("down", down);
    expectDim("tokens (ids vs x)", ids.shape[0], x.shape[0]);
    expectDim("tokens (weights vs x)", weights.shape[0], x.shape[0]);
    const k = concreteDim("experts per token (ids dim 1)", ids.shape[1]);
    expectDim("experts per token (weights dim 1 vs ids)", weights.shape[1], k);
    const e = concreteDim("experts (gateUp dim 0)", gateUp.shape[0]);
    expectDim("experts (down dim 0 vs gateUp)", down.shape[0], e);
    expectDim("hidden (gateUp dim 2 vs x)", gateUp.shape[2], x.shape[1]);
    expectDim("hidden (down dim 1 vs x)", down.shape[1], x.shape[1]);
    const f = concreteDim("expert width (down dim 2)", down.shape[2]);
    expectDim("gateUp dim 1 (2 · expert width)", gateUp.shape[1], 2 * f);
    expectPositiveInt("experts per token", k);
    if (k > e) throw new Error(`${k} experts per token > ${e} experts`);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x, ids, weights, gateUp, down], out) {
    const [t, d] = x.shape, k = ids.shape[1], e = gateUp.shape[0], f = down.shape[2];
    const act = new Float32Array(f);
    const acc = new Float64Array(d);
    for (let r = 0; r < t; r++) {
      const xo = r * d;
      acc.fill(0);
      for (let j = 0; j < k; j++) {
        const ex = ids.data[r * k + j], wgt = weights.data[r * k + j];
        if (!(ex >= 0 && ex < e)) throw new RangeError(`moe_experts: expert ${ex} (token ${r}) outside 0..${e - 1}`);
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
  cost([x, ids, weights, gateUp, down], out) {
    const [t, d] = x.shape, [e, twoF] = gateUp.shape, topK = ids.shape[1];
    // Distinct experts touched grows with the batch but never beyond E.
    const touched = Math.min(e, t * topK);
    const expertBytes = bytesOf(touched * twoF * d, gateUp.dtype) + bytesOf(touched * d * (twoF / 2), down.dtype);
    return {
      flops: t * topK * (2 * twoF * d + 2 * d * (twoF / 2) + 2 * d),
      bytes: tensorBytes(x) + tensorBytes(ids) + tensorBytes(weights) + tensorBytes(out) + expertBytes,
    };
  },
};

/** The weighted sum of the selected experts' SwiGLU MLPs. */
export function moeExperts(
  g: GraphBuilder,
  x: Tensor,
  ids: Tensor,
  weights: Tensor,
  gateUp: Tensor,
  down: Tensor,
  options: NodeOptions = {},
): Tensor {
  return g.op(moeExpertsOp, [x, ids, weights, gateUp, down], {}, options);
}
