/**
 * `rms_norm`: `x * rsqrt(mean(x²) + eps) * w` over the last dim, computed in f32 (sum of squares in f64).
 * `x [.., D]`, `w [D]` → `[.., D]`.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { rmsNorm } from "./rms_norm.ts";
 * const g = new GraphBuilder();
 * const y = rmsNorm(g, g.input("x", [2, 8], "f32"), g.weight("norm.weight", [8], "bf16"), { eps: 1e-6 });
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { expectDim, expectFloat, expectRank, ioBytes, lastDim, type OpDef } from "./op.ts";

/** `eps`: added to the mean square (the model's `rms_norm_eps`; the MLA latent norms use 1e-6). */
export type RmsNormAttrs = { eps: number };

/** The `rms_norm` op. */
export const rmsNormOp: OpDef<RmsNormAttrs> = {
  name: "rms_norm",
  inputNames: ["x", "w"],
  inferShape([x, w], { eps }) {
    expectFloat("x", x);
    expectFloat("w", w);
    if (x.shape.length < 1) throw new Error("x must have rank ≥ 1");
    expectRank("w", w, 1);
    expectDim("last dim of x vs w", lastDim(x.shape), w.shape[0]);
    if (typeof eps !== "number" || !(eps >= 0)) throw new Error(`eps must be a number ≥ 0, got ${eps}`);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x, w], out, { eps }) {
    const d = w.shape[0];
    const rows = numel(x.shape) / d;
    for (let r = 0; r < rows; r++) {
      const o = r * d;
      let ss = 0;
      for (let i = 0; i < d; i++) ss += x.data[o + i] * x.data[o + i];
      // rsqrt in f32, as the model computes it.
      const inv = Math.fround(1 / Math.sqrt(Math.fround(ss / d) + eps));
      for (let i = 0; i < d; i++) out.data[o + i] = Math.fround(x.data[o + i] * inv) * w.data[i];
    }
  },
  cost(inputs, out) {
    return { flops: 4 * numel(out.shape), bytes: ioBytes(inputs, out) };
  },
};

/** RMS-normalises the last dim of `x` and scales by `w`. */
export function rmsNorm(g: GraphBuilder, x: Tensor, w: Tensor, options: NodeOptions & RmsNormAttrs): Tensor {
  const { eps, ...node } = options;
  return g.op(rmsNormOp, [x, w], { eps }, node);
}
