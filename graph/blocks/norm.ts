/**
 * RMSNorm block: declares the norm's weight and applies the `rms_norm` op, so a model reads
 * `norm(g, h, { weight: "layers.3.attn_norm", … })` instead of two lines per norm.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { norm } from "./norm.ts";
 * const g = new GraphBuilder();
 * const h = g.input("h", [4, 64], "f32");
 * const x = norm(g, h, { weight: "norm", dim: 64, dtype: "bf16", eps: 1e-6, name: "final" });
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import { rmsNorm } from "../../ops/rms_norm.ts";

/** Canonical weight name, its width and stored dtype, epsilon, and the result's node name / layer. */
export type NormOptions = { weight: string; dim: number; dtype: DType; eps: number; name: string; layer?: number };

/** `x * rsqrt(mean(x²) + eps) * w` over the last dim. */
export function norm(g: GraphBuilder, x: Tensor, options: NormOptions): Tensor {
  const w = g.weight(options.weight, [options.dim], options.dtype);
  return rmsNorm(g, x, w, { eps: options.eps, name: options.name, layer: options.layer });
}
