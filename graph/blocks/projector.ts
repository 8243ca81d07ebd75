/**
 * Mistral 3 multimodal projector (MODEL.md §3.4): RMSNorm → 2×2 patch merge (`patch_merge`, channel-major) →
 * merging linear (4·Hv → Hv) → linear_1 (Hv → D) → GELU (erf) → linear_2 (D → D). One vector per token-grid cell.
 *
 * @example
 * ```ts
 * // inside buildVision: const features = projector(g, encoded, mergeIndex, { visionHidden: 1024, hidden: 4096, … })
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import { gelu } from "../../ops/gelu.ts";
import { matmul } from "../../ops/matmul.ts";
import { patchMerge } from "../../ops/patch_merge.ts";
import { norm } from "./norm.ts";

/** Sizes and numerics: encoder width Hv, text width D, merge side, norm epsilon, weights' dtype. */
export type ProjectorOptions = { visionHidden: number; hidden: number; merge: number; eps: number; dtype: DType };

/** `x [P, Hv]` (encoder output), `mergeIndex i32 [M, merge²]` → `[M, D]`. Weights `projector.*`. */
export function projector(g: GraphBuilder, x: Tensor, mergeIndex: Tensor, o: ProjectorOptions): Tensor {
  const { visionHidden: Hv, hidden: D, dtype: dt } = o;
  const k = o.merge * o.merge;
  const xn = norm(g, x, { weight: "projector.norm", dim: Hv, dtype: dt, eps: o.eps, name: "projector.norm_out" });
  const merged = patchMerge(g, xn, mergeIndex, { name: "projector.merged" }); // [M, Hv·merge²]
  const w = (n: string, shape: number[]) => g.weight(`projector.${n}`, shape, dt);
  const m = matmul(g, merged, w("patch_merger", [Hv, Hv * k]), { name: "projector.merge_out" }); // [M, Hv]
  const a = matmul(g, m, w("linear_1", [D, Hv]), { name: "projector.linear_1_out" }); // [M, D]
  const act = gelu(g, a, { name: "projector.act" });
  return matmul(g, act, w("linear_2", [D, D]), { name: "projector.out" }); // [M, D]
}
