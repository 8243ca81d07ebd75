/**
 * What a q8 `mla_attention` gives on the absorbed path of the CPU kernels, for the conformance table: the latent
 * `O/den` is quantised to int8 per 32-block (`quantize_act_q8` in kernels/wasm/matmul.c: scale amax/127, round half
 * to even) before `W_UV`, as every q8 product with at most 8 activation rows is. The rest is exact (W_UK decodes
 * exactly), so this expectation holds the absorbed rows to the f32-accumulation bound instead of the quantisation
 * bound. Latents whose rounding is a tie at f32 precision may round either way: each such element adds its one
 * quantum's effect to the slack of the outputs it feeds.
 *
 * @module
 */

import type { MlaAttentionAttrs } from "../ops/mla_attention.ts";
import { cacheSlot } from "../ops/mla_cache_write.ts";
import type { RefTensor } from "../ops/op.ts";
import type { CanonicalWeight } from "../weights/load.ts";

const BLOCK = 32;

/** f64 values of a q8 canonical weight `[N, K]`. */
function dequant(w: CanonicalWeight): Float64Array {
  const K = w.shape[w.shape.length - 1], n = w.data.length, nb = Math.ceil(K / BLOCK);
  const q = new Int8Array(w.data.buffer, w.data.byteOffset, n), out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = q[i] * w.scales![Math.floor(i / K) * nb + Math.floor((i % K) / BLOCK)];
  return out;
}

/** Round half to even, as `__builtin_nearbyintf` in the default rounding mode. */
function nearbyint(v: number): number {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/**
 * Expected rows `[H·dv]` of the tokens `tokens` (absorbed ones) and a slack per element. `cache` holds the rows as
 * stored after the step's write (f32 values), `[nb, bs, kvr + dr]`.
 */
export function q8AbsorbedRows(
  a: MlaAttentionAttrs,
  q: Float32Array,
  w: CanonicalWeight,
  cache: RefTensor,
  seq: Int32Array,
  pos: Int32Array,
  blockTable: RefTensor,
  tokens: readonly number[],
): { values: Float64Array[]; slack: Float64Array[] } {
  const { heads: H, dn, dr, dv, kvr, scale } = a, row = kvr + dr, [nb, bs] = cache.shape;
  const W = dequant(w), values: Float64Array[] = [], slack: Float64Array[] = [];
  for (const t of tokens) {
    const y = new Float64Array(H * dv), s = new Float64Array(H * dv), n = pos[t] + 1;
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * (dn + dr), wk = h * (dn + dv) * kvr, wv = (h * (dn + dv) + dn) * kvr;
      const qAbs = new Float64Array(kvr);
      for (let d = 0; d < dn; d++) for (let k = 0; k < kvr; k++) qAbs[k] += q[qo + d] * W[wk + d * kvr + k];
      const p = new Float64Array(n);
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        const o = cacheSlot(blockTable, nb, bs, row, seq[t], j);
        let sc = 0;
        for (let k = 0; k < kvr; k++) sc += qAbs[k] * cache.data[o + k];
        for (let r = 0; r < dr; r++) sc += q[qo + dn + r] * cache.data[o + kvr + r];
        p[j] = sc * scale;
        max = Math.max(max, p[j]);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) sum += p[j] = Math.exp(p[j] - max);
      const lat = new Float64Array(kvr);
      for (let j = 0; j < n; j++) {
        const o = cacheSlot(blockTable, nb, bs, row, seq[t], j);
        for (let k = 0; k < kvr; k++) lat[k] += (p[j] / sum) * cache.data[o + k];
      }
      for (let b = 0; b < kvr; b += BLOCK) {
        const e = Math.min(kvr, b + BLOCK);
        let amax = 0;
        for (let k = b; k < e; k++) amax = Math.max(amax, Math.abs(Math.fround(lat[k])));
        const id = amax > 0 ? Math.fround(127 / amax) : 0, sx = Math.fround(amax / 127);
        for (let k = b; k < e; k++) {
          const v = Math.fround(Math.fround(lat[k]) * id);
          const qk = Math.max(-127, Math.min(127, nearbyint(v)));
          const tie = Math.abs(v - Math.floor(v) - 0.5) < 1e-3;
          for (let i = 0; i < dv; i++) {
            const wi = W[wv + i * kvr + k];
            y[h * dv + i] += sx * qk * wi;
            if (tie) s[h * dv + i] += sx * Math.abs(wi);
          }
        }
      }
    }
    values.push(y);
    slack.push(s);
  }
  return { values, slack };
}
