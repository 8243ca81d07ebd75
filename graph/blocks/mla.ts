/**
 * Multi-head latent attention block (MODEL.md §1, MLA steps 1–6), reading top to bottom like the paper:
 * low-rank query with its latent norm, split nope ‖ rope, rope on the rope part, Llama-4 temperature on the whole
 * query; the compressed `[c_kv ‖ k_rope]` projection with its norm and rope; then `mla_cache_write` (the latent rows
 * into the paged cache), `mla_attention` (which attends through it) and the output projection.
 *
 * @example
 * ```ts
 * // inside a model's build(): h += mla(g, x, { prefix: "layers.0.attn", … }, batch)
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import type { Dim } from "../ir.ts";
import { concat } from "../../ops/concat.ts";
import { matmul } from "../../ops/matmul.ts";
import { mlaAttention } from "../../ops/mla_attention.ts";
import { mlaCacheWrite } from "../../ops/mla_cache_write.ts";
import { reshape } from "../../ops/reshape.ts";
import { slice } from "../../ops/slice.ts";
import { norm } from "./norm.ts";
import { applyRope, applyTemperature, type RopeTable } from "./rope.ts";

/** Widths, dtypes and numerics of one MLA layer (all from the model config). */
export type MlaOptions = {
  /** Canonical prefix: weights `${prefix}.wq_a` …, nodes `${prefix}.q` …. */
  prefix: string;
  layer?: number;
  hidden: number;
  heads: number;
  qLoraRank: number;
  kvLoraRank: number;
  /** qk_nope_head_dim, qk_rope_head_dim, v_head_dim. */
  dn: number;
  dr: number;
  dv: number;
  /** Stored dtype of the projections (f8e4m3 for the real checkpoint) and of the latent norms. */
  linearDtype: DType;
  normDtype: DType;
  /** Epsilon of q_a / kv_a norms (1e-6 whatever rms_norm_eps says). */
  latentEps: number;
  rope: RopeTable;
  temperature: { beta: number; original: number } | null;
  /** Softmax scale (see `softmaxScale`). */
  scale: number;
  form: "absorbed" | "naive";
};

/** The step's varlen batch: per-token positions and sequences, the block table, and this layer's cache. */
export type MlaBatch = { pos: Tensor; seq: Tensor; blockTable: Tensor; cache: Tensor };

/** `x [T, D]` (already normed) → attention output `[T, D]`; stores the batch's latents in `batch.cache`. */
export function mla(g: GraphBuilder, x: Tensor, o: MlaOptions, batch: MlaBatch): Tensor {
  const { prefix: p, layer, heads: H, dn, dr, dv } = o;
  const T: Dim = x.shape[0];
  const w = (n: string, shape: number[], dtype = o.linearDtype) => g.weight(`${p}.${n}`, shape, dtype);
  const at = (name: string) => ({ name: `${p}.${name}`, layer });

  // 1. Query: low rank, latent norm, up-projection to every head.
  let qa = matmul(g, x, w("wq_a", [o.qLoraRank, o.hidden]), at("q_a")); // [T, Q]
  qa = norm(g, qa, {
    weight: `${p}.q_norm`,
    dim: o.qLoraRank,
    dtype: o.normDtype,
    eps: o.latentEps,
    ...at("q_a_norm"),
  });
  const qFlat = matmul(g, qa, w("wq_b", [H * (dn + dr), o.qLoraRank]), at("q")); // [T, H·(dn+dr)]
  const q = reshape(g, qFlat, { shape: [T, H, dn + dr], ...at("q_heads") }); // [T, H, dn+dr]
  const qNope = slice(g, q, { start: 0, end: dn, ...at("q_nope") }); // [T, H, dn]
  const qPe = applyRope(g, slice(g, q, { start: dn, end: dn + dr, ...at("q_pe") }), batch.pos, o.rope, at("q_pe_rot"));
  // 5. The temperature multiplies the whole query (nope and rope parts), as transformers does.
  const qRot = concat(g, [qNope, qPe], at("q_rot")); // [T, H, dn+dr]
  const qFinal = applyTemperature(g, qRot, batch.pos, o.temperature, at("q_temp"));

  // 2. Compressed KV: [c_kv ‖ k_rope] in one projection; only these two are cached.
  const kva = matmul(g, x, w("wkv_a", [o.kvLoraRank + dr, o.hidden]), at("kv_a")); // [T, C+dr]
  const ckvRaw = slice(g, kva, { start: 0, end: o.kvLoraRank, ...at("ckv_raw") }); // [T, C]
  const ckv = norm(g, ckvRaw, {
    weight: `${p}.kv_norm`,
    dim: o.kvLoraRank,
    dtype: o.normDtype,
    eps: o.latentEps,
    ...at("ckv"),
  });
  const kpeRaw = slice(g, kva, { start: o.kvLoraRank, end: o.kvLoraRank + dr, ...at("kpe_raw") }); // [T, dr]
  const kpe = applyRope(g, kpeRaw, batch.pos, o.rope, at("kpe"));

  // 3, 6. The step's latents go into the paged cache, then attention reads it; W_kvb is absorbed or expanded
  // inside the op.
  mlaCacheWrite(g, { ckv, kpe, ...batch }, at("cache_write")); // [T, C+dr]: the rows as stored
  // q4 keeps W_kvb in q8: the absorbed attention decodes its rows inside the attention kernels, which take no q4.
  const wkvb = w("wkv_b", [H * (dn + dv), o.kvLoraRank], o.linearDtype === "q4" ? "q8" : o.linearDtype);
  const ctx = mlaAttention(g, { q: qFinal, wkvb, ...batch }, { scale: o.scale, form: o.form, ...at("ctx") });
  return matmul(g, ctx, w("wo", [o.hidden, H * dv]), at("out")); // [T, D]
}
