/**
 * Pixtral-style vision encoder (MODEL.md §3.2–3): patch "convolution" as a matmul over host-unfolded patches (no
 * bias), `ln_pre`, then pre-norm blocks of non-causal, block-diagonal attention with 2-D rope and a SwiGLU MLP.
 *
 * Two forms share every piece: {@link visionEncoder} declares the whole tower over a batch of patches, and the
 * row-wise pieces ({@link patchEmbed}, {@link layerKeysValues}, {@link layerRows}) declare the tower a few rows at a
 * time, for an encoder that runs between engine steps: a block's attention is non-causal, so all of its keys and
 * values are computed (and kept) before any query row runs, and each query row then finishes its block alone.
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
import { attentionRows } from "../../ops/attention_rows.ts";
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
  let h = patchEmbed(g, x.patches, o);
  for (let i = 0; i < o.layers; i++) {
    const xa = attnIn(g, h, i, o);
    const q = heads(g, xa, i, "wq", o, x.pos), k = heads(g, xa, i, "wk", o, x.pos), v = heads(g, xa, i, "wv", o);
    const ctx = attention(g, { q, k, v, segment: x.segment }, { scale: 1 / Math.sqrt(o.headDim), ...at(i, "ctx") });
    h = finishLayer(g, h, ctx, i, o);
  }
  return h;
}

/** Patch rows `[Q, C·p·p]` → their embeddings after `ln_pre`, `[Q, hidden]`. */
export function patchEmbed(g: GraphBuilder, patches: Tensor, o: VisionEncoderOptions): Tensor {
  const { hidden: Hv, dtype: dt } = o;
  const k = o.channels * o.patchSize * o.patchSize;
  const conv = g.weight("vision.patch_conv", [Hv, o.channels, o.patchSize, o.patchSize], dt);
  const convW = reshape(g, conv, { shape: [Hv, k], name: "vision.patch_w" }); // [Hv, C·p·p], (c, ky, kx) order
  const h = matmul(g, patches, convW, { name: "vision.patch_embed" }); // [Q, Hv]
  return norm(g, h, { weight: "vision.ln_pre", dim: Hv, dtype: dt, eps: o.eps, name: "vision.ln_pre_out" });
}

/** Block `i`'s rotated keys and plain values `[Q, heads, headDim]` of the hidden rows `h [Q, hidden]`. */
export function layerKeysValues(
  g: GraphBuilder,
  h: Tensor,
  pos: Tensor,
  i: number,
  o: VisionEncoderOptions,
): { k: Tensor; v: Tensor } {
  const xa = attnIn(g, h, i, o);
  return { k: heads(g, xa, i, "wk", o, pos), v: heads(g, xa, i, "wv", o) };
}

/**
 * Block `i` for the hidden rows `h [Q, hidden]` (batch rows `rows`, positions `pos`), given the keys and values of
 * every row of the batch in `kv` (the first P rows, P = `segment` length) → those rows after the block.
 */
export function layerRows(
  g: GraphBuilder,
  h: Tensor,
  x: { pos: Tensor; rows: Tensor; segment: Tensor; k: Tensor; v: Tensor },
  i: number,
  o: VisionEncoderOptions,
): Tensor {
  const q = heads(g, attnIn(g, h, i, o), i, "wq", o, x.pos);
  const ctx = attentionRows(g, { q, k: x.k, v: x.v, segment: x.segment, rows: x.rows }, {
    scale: 1 / Math.sqrt(o.headDim),
    ...at(i, "ctx"),
  });
  return finishLayer(g, h, ctx, i, o);
}

const at = (i: number, n: string) => ({ name: `vision.layers.${i}.${n}` });

function attnIn(g: GraphBuilder, h: Tensor, i: number, o: VisionEncoderOptions): Tensor {
  const p = `vision.layers.${i}`;
  return norm(g, h, { weight: `${p}.attn_norm`, dim: o.hidden, dtype: o.dtype, eps: o.eps, name: `${p}.attn_in` });
}

/** The normed rows' projection `w` as heads `[Q, H, hd]`, rotated by the 2-D rope when `pos` is given. */
function heads(g: GraphBuilder, xa: Tensor, i: number, w: string, o: VisionEncoderOptions, pos?: Tensor): Tensor {
  const p = `vision.layers.${i}`, Q = xa.shape[0];
  const y = matmul(g, xa, g.weight(`${p}.attn.${w}`, [o.hidden, o.hidden], o.dtype), at(i, w)); // [Q, Hv]
  const split = reshape(g, y, { shape: [Q, o.heads, o.headDim], ...at(i, `${w}_heads`) }); // [Q, H, hd]
  if (!pos) return split;
  const table = visionRope(o.headDim, o.ropeTheta);
  return rope(g, split, pos, { ...table, magnitude: 1, ...at(i, `${w[1]}_rot`) });
}

/** The attention output `ctx [Q, H, hd]` projected and added to `h`, then the MLP's residual: the block's output. */
function finishLayer(g: GraphBuilder, h: Tensor, ctx: Tensor, i: number, o: VisionEncoderOptions): Tensor {
  const p = `vision.layers.${i}`, Hv = o.hidden;
  const flat = reshape(g, ctx, { shape: [h.shape[0], Hv], ...at(i, "ctx_flat") }); // [Q, Hv]
  h = add(g, h, matmul(g, flat, g.weight(`${p}.attn.wo`, [Hv, Hv], o.dtype), at(i, "attn_out")), at(i, "h_attn"));
  const xf = norm(g, h, { weight: `${p}.ffn_norm`, dim: Hv, dtype: o.dtype, eps: o.eps, name: `${p}.ffn_in` });
  return add(g, h, swigluMlp(g, xf, { prefix: `${p}.ffn`, hidden: Hv, width: o.width, dtype: o.dtype }), at(i, "h"));
}
