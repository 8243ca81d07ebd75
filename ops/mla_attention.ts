/**
 * `mla_attention`: multi-head latent attention over a paged latent KV cache, for a varlen batch (T tokens from S
 * sequences, prefill and decode mixed).
 *
 * Inputs: `q [T, H, dn+dr]` (rope and temperature applied), `wkvb [H·(dn+dv), kvr]` (per head: dn k_nope rows,
 * then dv v rows), `cache [numBlocks, blockSize, kvr+dr]` (the layer's latent cache, already holding this step's
 * rows: `mla_cache_write` stores them first; read only), `seq i32 [T]`, `pos i32 [T]` (sequence index and absolute
 * position of each token), `blockTable i32 [S, maxBlocks]`. Output `[T, H·dv]` (heads concatenated, ready for W_o).
 *
 * Semantics: each token attends to positions `0..pos` of its own sequence (block
 * `blockTable[seq][p / blockSize]`, row `p % blockSize`), read from the cache:
 * `softmax(scale · (q_nope·k_nope + q_rope·k_rope)) · v`, with `[k_nope | v] = W_kvb · c_kv` per head.
 * `form` picks how: "naive" expands k_nope and v from c_kv; "absorbed" folds W_UK into the query
 * (`q_nope·W_UK`, kvr dims) and applies W_UV after the weighted sum of c_kv. Both give the same result; backends
 * may pick either, the attr records what the model asked for. Two tokens of one batch at the same (seq, pos) are
 * a caller error.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { mlaAttention } from "./mla_attention.ts";
 * const g = new GraphBuilder();
 * const out = mlaAttention(g, {
 *   q: g.input("q", [3, 2, 8], "f32"), wkvb: g.weight("wkvb", [2 * (4 + 6), 4], "bf16"),
 *   cache: g.state("cache", [8, 16, 8], "f32"), seq: g.input("seq", [3], "i32"), pos: g.input("pos", [3], "i32"),
 *   blockTable: g.input("bt", [1, 4], "i32"),
 * }, { scale: 1 / Math.sqrt(8) }); // [3, 12]: dr = 8 − 4 = 4 (cache row − kvr), dn = 8 − 4 (q width − dr)
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { formatShape } from "../graph/ir.ts";
import { cacheSlot } from "./mla_cache_write.ts";
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

/** Head count and widths, cache block size, softmax scale (from config), and the computation form. */
export type MlaAttentionAttrs = {
  heads: number;
  dn: number;
  dr: number;
  dv: number;
  kvr: number;
  blockSize: number;
  scale: number;
  form: "absorbed" | "naive";
};

const INPUTS = ["q", "wkvb", "cache", "seq", "pos", "blockTable"];

/** The `mla_attention` op (reads the cache; `mla_cache_write` writes it). */
export const mlaAttentionOp: OpDef<MlaAttentionAttrs> = {
  name: "mla_attention",
  inputNames: INPUTS,
  inferShape([q, wkvb, cache, seq, pos, bt], a) {
    for (const k of ["heads", "dn", "dr", "dv", "kvr", "blockSize"] as const) expectPositiveInt(k, a[k]);
    if (typeof a.scale !== "number" || !(a.scale > 0)) throw new Error("scale must be a positive number");
    if (a.form !== "absorbed" && a.form !== "naive") throw new Error(`form must be "absorbed" or "naive"`);
    const { heads, dn, dr, dv, kvr, blockSize } = a;
    const floats = { q, wkvb, cache };
    for (const [n, x] of Object.entries(floats)) expectFloat(n, x);
    const ranks = { q: 3, wkvb: 2, cache: 3, seq: 1, pos: 1, blockTable: 2 };
    const all = { q, wkvb, cache, seq, pos, blockTable: bt };
    for (const [n, r] of Object.entries(ranks)) expectRank(n, all[n as keyof typeof all], r);
    for (const [n, x] of Object.entries({ seq, pos, blockTable: bt })) expectDType(n, x, "i32");
    const t = q.shape[0];
    for (const [n, x] of [["seq", seq], ["pos", pos]] as const) {
      expectDim(`tokens (${n} dim 0 vs q dim 0)`, x.shape[0], t);
    }
    expectDim("q heads", q.shape[1], heads);
    expectDim("q head width (dn + dr)", q.shape[2], dn + dr);
    expectDim("wkvb rows (heads·(dn+dv))", wkvb.shape[0], heads * (dn + dv));
    expectDim("wkvb cols (kvr)", wkvb.shape[1], kvr);
    concreteDim("cache blocks", cache.shape[0]);
    expectDim("cache block size", cache.shape[1], blockSize);
    expectDim("cache row width (kvr + dr)", cache.shape[2], kvr + dr);
    if (!cache.shape.every((d) => typeof d === "number")) throw new Error(`cache ${formatShape(cache.shape)}`);
    return { shape: [t, heads * dv], dtype: q.dtype };
  },
  reference([q, w, cache, seq, pos, bt], out, a) {
    const { heads: H, dn, dr, dv, kvr, blockSize: bs, scale } = a;
    const T = q.shape[0], nb = cache.shape[0];
    const row = kvr + dr, qw = dn + dr, hw = dn + dv;
    const c = cache.data;
    const slot = (s: number, p: number): number => cacheSlot(bt, nb, bs, row, s, p);
    // Everything below accumulates in f64.
    let longest = 1;
    for (let t = 0; t < T; t++) longest = Math.max(longest, pos.data[t] + 1);
    const probs = new Float64Array(longest);
    const qAbs = new Float64Array(kvr), lat = new Float64Array(kvr), kn = new Float64Array(dn);
    for (let t = 0; t < T; t++) {
      const s = seq.data[t], n = pos.data[t] + 1;
      for (let h = 0; h < H; h++) {
        const qo = (t * H + h) * qw, wk = h * hw * kvr, wv = (h * hw + dn) * kvr;
        if (a.form === "absorbed") {
          // q_abs[c] = Σ_d q_nope[d] · W_UK[d][c]: the query in latent space.
          qAbs.fill(0);
          for (let d = 0; d < dn; d++) {
            const qd = q.data[qo + d];
            for (let k = 0; k < kvr; k++) qAbs[k] += qd * w.data[wk + d * kvr + k];
          }
        }
        let max = -Infinity;
        for (let j = 0; j < n; j++) {
          const o = slot(s, j);
          let score = 0;
          if (a.form === "absorbed") {
            for (let k = 0; k < kvr; k++) score += qAbs[k] * c[o + k];
          } else {
            // k_nope = W_UK · c_kv, expanded per position.
            for (let d = 0; d < dn; d++) {
              let acc = 0;
              for (let k = 0; k < kvr; k++) acc += w.data[wk + d * kvr + k] * c[o + k];
              kn[d] = acc;
            }
            for (let d = 0; d < dn; d++) score += q.data[qo + d] * kn[d];
          }
          for (let r = 0; r < dr; r++) score += q.data[qo + dn + r] * c[o + kvr + r];
          probs[j] = score * scale;
          if (probs[j] > max) max = probs[j];
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += probs[j] = Math.exp(probs[j] - max);
        const oo = t * H * dv + h * dv;
        if (a.form === "absorbed") {
          // Weighted sum in latent space, then W_UV once.
          lat.fill(0);
          for (let j = 0; j < n; j++) {
            const o = slot(s, j), p = probs[j] / sum;
            for (let k = 0; k < kvr; k++) lat[k] += p * c[o + k];
          }
          for (let i = 0; i < dv; i++) {
            let acc = 0;
            for (let k = 0; k < kvr; k++) acc += w.data[wv + i * kvr + k] * lat[k];
            out.data[oo + i] = acc;
          }
        } else {
          for (let i = 0; i < dv; i++) {
            let acc = 0;
            for (let j = 0; j < n; j++) {
              const o = slot(s, j);
              let v = 0;
              for (let k = 0; k < kvr; k++) v += w.data[wv + i * kvr + k] * c[o + k];
              acc += (probs[j] / sum) * v;
            }
            out.data[oo + i] = acc;
          }
        }
      }
    }
  },
  cost([q, wkvb, cache, seq, pos, bt], out, a) {
    // Upper bound: every token attends to a full block table (maxBlocks · blockSize positions).
    const { heads: H, dn, dr, dv, kvr } = a;
    const T = q.shape[0], ctx = bt.shape[1] * a.blockSize;
    const perHead = a.form === "absorbed"
      ? 2 * dn * kvr + 2 * ctx * (kvr + dr) + 2 * ctx * kvr + 2 * dv * kvr
      : 2 * ctx * (dn + dv) * kvr + 2 * ctx * (dn + dr) + 2 * ctx * dv;
    const cacheRead = bytesOf(T * ctx * (kvr + dr), cache.dtype);
    const small = [q, seq, pos, bt, out].reduce((sum, x) => sum + tensorBytes(x), 0);
    return { flops: T * H * perHead, bytes: small + tensorBytes(wkvb) + cacheRead };
  },
};

/** The tensors `mla_attention` reads (see the module doc for shapes). */
export type MlaInputs = {
  q: Tensor;
  wkvb: Tensor;
  cache: Tensor;
  seq: Tensor;
  pos: Tensor;
  blockTable: Tensor;
};

/** `scale` from config; `form` defaults to "absorbed". Dims come from the input shapes. */
export type MlaOptions = NodeOptions & { scale: number; form?: "absorbed" | "naive" };

/** Latent attention over the paged cache (which `mla_cache_write` has filled for this step). */
export function mlaAttention(g: GraphBuilder, x: MlaInputs, options: MlaOptions): Tensor {
  const { scale, form = "absorbed", ...node } = options;
  const dim = (t: Tensor, i: number, what: string) => {
    const d = t.shape[i];
    if (typeof d !== "number") throw new Error(`mla_attention: ${what} must be concrete`);
    return d;
  };
  const heads = dim(x.q, 1, "q heads"), kvr = dim(x.wkvb, 1, "wkvb cols");
  const dr = dim(x.cache, 2, "cache row width") - kvr, dn = dim(x.q, 2, "q head width") - dr;
  const dv = dim(x.wkvb, 0, "wkvb rows") / heads - dn;
  const blockSize = dim(x.cache, 1, "cache block size");
  const attrs: MlaAttentionAttrs = { heads, dn, dr, dv, kvr, blockSize, scale, form };
  const inputs = [x.q, x.wkvb, x.cache, x.seq, x.pos, x.blockTable];
  return g.op(mlaAttentionOp, inputs, attrs, node);
}
