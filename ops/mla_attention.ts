/**
 * `mla_attention`: multi-head latent attention over a paged latent KV cache, for a varlen batch (T tokens from S
 * sequences, prefill and decode mixed).
 *
 * Inputs: `q [T, H, dn+dr]` (rope and temperature applied), `ckv [T, kvr]` (after kv_a_layernorm),
 * `kpe [T, dr]` (rope applied), `wkvb [H·(dn+dv), kvr]` (per head: dn k_nope rows, then dv v rows),
 * `cache [numBlocks, blockSize, kvr+dr]` (the layer's latent cache; **written in place**, input 4),
 * `seq i32 [T]`, `pos i32 [T]` (sequence index and absolute position of each token), `blockTable i32 [S, maxBlocks]`.
 * Output `[T, H·dv]` (heads concatenated, ready for W_o).
 *
 * Semantics: first every token's `[ckv | kpe]` is stored at its slot (block `blockTable[seq][pos / blockSize]`,
 * row `pos % blockSize`); then each token attends to positions `0..pos` of its own sequence, read from the cache:
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
 *   q: g.input("q", [3, 2, 8], "f32"), ckv: g.input("ckv", [3, 4], "f32"), kpe: g.input("kpe", [3, 4], "f32"),
 *   wkvb: g.weight("wkvb", [2 * (4 + 6), 4], "bf16"), cache: g.state("cache", [8, 16, 8], "f32"),
 *   seq: g.input("seq", [3], "i32"), pos: g.input("pos", [3], "i32"), blockTable: g.input("bt", [1, 4], "i32"),
 * }, { scale: 1 / Math.sqrt(8) }); // [3, 12]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { formatShape } from "../graph/ir.ts";
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

const INPUTS = ["q", "ckv", "kpe", "wkvb", "cache", "seq", "pos", "blockTable"];

/** The `mla_attention` op. Input 4 (the cache) is written in place. */
export const mlaAttentionOp: OpDef<MlaAttentionAttrs> = {
  name: "mla_attention",
  inputNames: INPUTS,
  writesInputs: [4],
  inferShape([q, ckv, kpe, wkvb, cache, seq, pos, bt], a) {
    for (const k of ["heads", "dn", "dr", "dv", "kvr", "blockSize"] as const) expectPositiveInt(k, a[k]);
    if (typeof a.scale !== "number" || !(a.scale > 0)) throw new Error("scale must be a positive number");
    if (a.form !== "absorbed" && a.form !== "naive") throw new Error(`form must be "absorbed" or "naive"`);
    const { heads, dn, dr, dv, kvr, blockSize } = a;
    const floats = { q, ckv, kpe, wkvb, cache };
    for (const [n, x] of Object.entries(floats)) expectFloat(n, x);
    const ranks = { q: 3, ckv: 2, kpe: 2, wkvb: 2, cache: 3, seq: 1, pos: 1, blockTable: 2 };
    const all = { q, ckv, kpe, wkvb, cache, seq, pos, blockTable: bt };
    for (const [n, r] of Object.entries(ranks)) expectRank(n, all[n as keyof typeof all], r);
    for (const [n, x] of Object.entries({ seq, pos, blockTable: bt })) expectDType(n, x, "i32");
    const t = q.shape[0];
    for (const [n, x] of [["ckv", ckv], ["kpe", kpe], ["seq", seq], ["pos", pos]] as const) {
      expectDim(`tokens (${n} dim 0 vs q dim 0)`, x.shape[0], t);
    }
    expectDim("q heads", q.shape[1], heads);
    expectDim("q head width (dn + dr)", q.shape[2], dn + dr);
    expectDim("ckv width (kvr)", ckv.shape[1], kvr);
    expectDim("kpe width (dr)", kpe.shape[1], dr);
    expectDim("wkvb rows (heads·(dn+dv))", wkvb.shape[0], heads * (dn + dv));
    expectDim("wkvb cols (kvr)", wkvb.shape[1], kvr);
    concreteDim("cache blocks", cache.shape[0]);
    expectDim("cache block size", cache.shape[1], blockSize);
    expectDim("cache row width (kvr + dr)", cache.shape[2], kvr + dr);
    if (!cache.shape.every((d) => typeof d === "number")) throw new Error(`cache ${formatShape(cache.shape)}`);
    return { shape: [t, heads * dv], dtype: q.dtype };
  },
  reference([q, ckv, kpe, w, cache, seq, pos, bt], out, a) {
    const { heads: H, dn, dr, dv, kvr, blockSize: bs, scale } = a;
    const T = q.shape[0], nb = cache.shape[0], [S, mb] = bt.shape;
    const row = kvr + dr, qw = dn + dr, hw = dn + dv;
    const c = cache.data;
    const slot = (s: number, p: number): number => {
      if (s < 0 || s >= S) throw new RangeError(`mla_attention: seq ${s} outside 0..${S - 1}`);
      if (p < 0 || Math.floor(p / bs) >= mb) throw new RangeError(`mla_attention: pos ${p} beyond ${mb} blocks`);
      const b = bt.data[s * mb + Math.floor(p / bs)];
      if (b < 0 || b >= nb) throw new RangeError(`mla_attention: block ${b} (seq ${s}, pos ${p}) outside 0..${nb - 1}`);
      return (b * bs + (p % bs)) * row;
    };
    // 1. Store every token first, so tokens of one chunk see each other.
    for (let t = 0; t < T; t++) {
      const o = slot(seq.data[t], pos.data[t]);
      c.set(ckv.data.subarray(t * kvr, (t + 1) * kvr), o);
      c.set(kpe.data.subarray(t * dr, (t + 1) * dr), o + kvr);
    }
    // 2. Attend. Everything below accumulates in f64.
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
  cost([q, ckv, kpe, wkvb, cache, seq, pos, bt], out, a) {
    // Upper bound: every token attends to a full block table (maxBlocks · blockSize positions).
    const { heads: H, dn, dr, dv, kvr } = a;
    const T = q.shape[0], ctx = bt.shape[1] * a.blockSize;
    const perHead = a.form === "absorbed"
      ? 2 * dn * kvr + 2 * ctx * (kvr + dr) + 2 * ctx * kvr + 2 * dv * kvr
      : 2 * ctx * (dn + dv) * kvr + 2 * ctx * (dn + dr) + 2 * ctx * dv;
    const cacheRead = bytesOf(T * ctx * (kvr + dr), cache.dtype);
    const small = [q, ckv, kpe, seq, pos, bt, out].reduce((sum, x) => sum + tensorBytes(x), 0);
    return {
      flops: T * H * perHead,
      bytes: small + tensorBytes(wkvb) + cacheRead + bytesOf(T * (kvr + dr), cache.dtype),
    };
  },
};

/** The tensors `mla_attention` reads (see the module doc for shapes). */
export type MlaInputs = {
  q: Tensor;
  ckv: Tensor;
  kpe: Tensor;
  wkvb: Tensor;
  cache: Tensor;
  seq: Tensor;
  pos: Tensor;
  blockTable: Tensor;
};

/** `scale` from config; `form` defaults to "absorbed". Dims come from the input shapes. */
export type MlaOptions = NodeOptions & { scale: number; form?: "absorbed" | "naive" };

/** Latent attention over the paged cache; writes the batch's `[ckv | kpe]` into `cache`. */
export function mlaAttention(g: GraphBuilder, x: MlaInputs, options: MlaOptions): Tensor {
  const { scale, form = "absorbed", ...node } = options;
  const dim = (t: Tensor, i: number, what: string) => {
    const d = t.shape[i];
    if (typeof d !== "number") throw new Error(`mla_attention: ${what} must be concrete`);
    return d;
  };
  const heads = dim(x.q, 1, "q heads"), dr = dim(x.kpe, 1, "kpe width"), kvr = dim(x.ckv, 1, "ckv width");
  const dn = dim(x.q, 2, "q head width") - dr;
  const dv = dim(x.wkvb, 0, "wkvb rows") / heads - dn;
  const blockSize = dim(x.cache, 1, "cache block size");
  const attrs: MlaAttentionAttrs = { heads, dn, dr, dv, kvr, blockSize, scale, form };
  const inputs = [x.q, x.ckv, x.kpe, x.wkvb, x.cache, x.seq, x.pos, x.blockTable];
  return g.op(mlaAttentionOp, inputs, attrs, node);
}
