/**
 * Pixtral-style vision encoder (MODEL.md §3.2–3): patch "convolution" as a matmul over host-unfolded patches (no
 * bias), `ln_pre`, then pre-norm blocks of non-causal, block-diagonal attention with 2-D rope and a SwiGLU MLP.
 *
 * @example
 * ```ts
 * // inside buildVision: const h = visionEncoder(g, { patches, pos, segment }, { hidden: 1024, … })
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import { add } from "../../ops/add.ts";
import { attention } from "../../ops/attention.ts";
import { matmul } from "../../ops/matmul.ts";
import { reshape } from "../../ops/reshape.ts";
import { rope } from "../../ops/rope.ts";
import { norm } from "./norm.ts";
import { swigluMlp } from "./swiglu.ts";

/** Encoder sizes and numerics (from `vision_config`). */
export type VisionEncoderOptions = {
  hidden: number;
  layers: number;
  heads: number;
  headDim: number;
  width: number;
  patchSize: number;
  channels: number;
  ropeTheta: number;
  eps: number;
  dtype: DType;
};

/** Inputs: unfolded `patches [P, C·p·p]`, `pos i32 [P, 2]` (row, col), `segment i32 [P]` (image of each patch). */
export type VisionEncoderInputs = { patches: Tensor; pos: Tensor; segment: Tensor };

/**
 * Per-pair speeds of the 2-D rope: `f = θ^(-arange(0, hd, 2)/hd)`; the first hd/4 pairs turn with the row
 * (`f[0::2]`), the rest with the column (`f[1::2]`). Returns the `rope` op's `invFreq` and `pairAxis`.
 */
export function visionRope(headDim: number, theta: number): { invFreq: number[]; pairAxis: number[] } {
  const f = Array.from({ length: headDim / 2 }, (_, i) => Math.pow(theta, -(2 * i) / headDim));
  const rows = f.filter((_, i) => i % 2 === 0), cols = f.filter((_, i) => i % 2 === 1);
  return { invFreq: [...rows, ...cols], pairAxis: [...rows.map(() => 0), ...cols.map(() => 1)] };
}

/** Patches → encoder output `[P, hidden]`. Weights `vision.*`; nodes `vision.*`. */
export function visionEncoder(g: GraphBuilder, x: VisionEncoderInputs, o: VisionEncoderOptions): Tensor {
  const { hidden: Hv, heads: H, headDim: hd, dtype: dt } = o;
  const P = x.patches.shape[0];
  const k = o.channels * o.patchSize * o.patchSize;
  const conv = g.weight("vision.patch_conv", [Hv, o.channels, o.patchSize, o.patchSize], dt);
  const convW = reshape(g, conv, { shape: [Hv, k], name: "vision.patch_w" }); // [Hv, C·p·p], (c, ky, kx) order
  let h = matmul(g, x.patches, convW, { name: "vision.patch_embed" }); // [P, Hv]
  h = norm(g, h, { weight: "vision.ln_pre", dim: Hv, dtype: dt, eps: o.eps, name: "vision.ln_pre_out" });
  const table = visionRope(hd, o.ropeTheta);
  for (let i = 0; i < o.layers; i++) {
    const p = `vision.layers.${i}`;
    const at = (n: string) => ({ name: `${p}.${n}` });
    const xa = norm(g, h, { weight: `${p}.attn_norm`, dim: Hv, dtype: dt, eps: o.eps, name: `${p}.attn_in` });
    const heads = (w: string) => {
      const y = matmul(g, xa, g.weight(`${p}.attn.${w}`, [Hv, Hv], dt), at(w)); // [P, Hv]
      return reshape(g, y, { shape: [P, H, hd], ...at(`${w}_heads`) }); // [P, H, hd]
    };
    const q = rope(g, heads("wq"), x.pos, { ...table, magnitude: 1, ...at("q_rot") });
    const kk = rope(g, heads("wk"), x.pos, { ...table, magnitude: 1, ...at("k_rot") });
    const ctx = attention(g, { q, k: kk, v: heads("wv"), segment: x.segment }, {
      scale: 1 / Math.sqrt(hd),
      ...at("ctx"),
    });
    const flat = reshape(g, ctx, { shape: [P, Hv], ...at("ctx_flat") }); // [P, Hv]
    h = add(g, h, matmul(g, flat, g.weight(`${p}.attn.wo`, [Hv, Hv], dt), at("attn_out")), at("h_attn"));
    const xf = norm(g, h, { weight: `${p}.ffn_norm`, dim: Hv, dtype: dt, eps: o.eps, name: `${p}.ffn_in` });
    h = add(g, h, swigluMlp(g, xf, { prefix: `${p}.ffn`, hidden: Hv, width: o.width, dtype: dt }), at("h"));
  }
  return h;
}
