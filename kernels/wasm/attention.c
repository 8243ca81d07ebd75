// MLA attention over a paged latent cache, in absorbed form (MODEL.md §1). One kernel serves decode and prefill:
// each query token t attends to positions 0 .. pos[t] of its sequence, whose latents must already be in the cache
// (mla_cache_write first). Work items are (token, group of hg heads): decode uses small groups so one token's
// heads spread across threads; prefill uses hg = H so the cache tile is loaded once for every head.
#include "attention.h"
#include "matmul.h"

// Cache layout: blocks of bs token rows; a row is [c_kv (kvr) | k_rope (dr)] in f32 or bf16; block b of sequence s
// is block_tables[s·maxBlocks + b]. Writes rows [r0, r1) of kv (f32 [T, ldkv], row = [c_kv | k_rope]).
EXPORT(mla_cache_write)
void mla_cache_write(const float *kv, int ldkv, void *cache, int cdt, const int32_t *blockTables, int maxBlocks,
                     int bs, const int32_t *tokSeq, const int32_t *tokPos, int width, int r0, int r1) {
  for (int t = r0; t < r1; t++) {
    int32_t p = tokPos[t];
    size_t slot = (size_t)blockTables[(size_t)tokSeq[t] * (size_t)maxBlocks + (size_t)(p / bs)] * (size_t)bs +
                  (size_t)(p % bs);
    const float *src = kv + (size_t)t * (size_t)ldkv;
    if (cdt == DT_BF16) {
      uint16_t *dst = (uint16_t *)cache + slot * (size_t)width;
      for (int k = 0; k < width; k++) dst[k] = f32_to_bf16(src[k]);
    } else {
      float *dst = (float *)cache + slot * (size_t)width;
      for (int k = 0; k < width; k++) dst[k] = src[k];
    }
  }
}

typedef struct {
  const float *q;        // f32 [T, H, dn + dr]: q_nope | q_rope per head (rope and temperature already applied)
  const void *wkvb;      // W_kvb [H·(dn + dv), kvr]: per head dn rows of W_UK, then dv rows of W_UV
  int32_t wdt;           // DT_*
  float wscale;          // f8 per-tensor scale
  const float *wqs;      // q8 block scales; f8: 0 or per-row scales [H·(dn + dv)]
  const void *cache;     // [blocks, bs, kvr + dr]
  int32_t cdt;           // DT_F32 or DT_BF16
  const int32_t *blockTables;  // [S, maxBlocks]
  int32_t maxBlocks, bs;
  const int32_t *tokSeq, *tokPos;  // [T]
  float *out;            // f32 [T, H, dv]
  int32_t T, H, dn, dr, dv, kvr;
  float scale;           // softmax scale, e.g. 1/sqrt(dn + dr)
  int32_t hg;            // heads per work item
  int32_t tb;            // tokens per work item (prefill chunks: 4–8; decode: 1); rows = ceil(T/tb)·ceil(H/hg)
  int32_t splits;        // > 1: split decode (see mla_attention), context parts per token
  float *part;           // split decode scratch: per (token, part) [H, kvr] unnormalised O, then [H] max, [H] sum
} MlaParams;

#define LT 64       // cache rows per tile
#define MAXROWS 128 // (token, head) query rows per work item: bounds the stack (~0.6 MiB at kv_lora 256)

static WDesc rows_of(const WDesc *W, size_t K, size_t n0) {
  WDesc r = *W;
  switch (W->dt) {
    case DT_F32: r.w = (const float *)W->w + n0 * K; break;
    case DT_BF16: r.w = (const uint16_t *)W->w + n0 * K; break;
    case DT_F8E4M3:
      r.w = (const uint8_t *)W->w + n0 * K;
      if (W->qs) r.qs = W->qs + n0;  // per-row scales
      break;
    case DT_Q8:
      r.w = (const int8_t *)W->w + n0 * K;
      r.qs = W->qs + n0 * ((K + Q8_BLOCK - 1) / Q8_BLOCK);
      break;
    case DT_NVFP4:  // rows of K/2 code bytes and K/16 scale codes; per-row globals
      r.w = (const uint8_t *)W->w + n0 * (K / 2 + K / 16);
      if (W->qs) r.qs = W->qs + n0;
      break;
  }
  return r;
}

// Attention for nt tokens of one sequence (positions pos[0..nt)) and heads h0 .. h0+nh, query rows ordered
// (token, head). Work shared by the rows: every W_kvb row is decoded once, every cache tile loaded once.
// Cache rows [c0, c1) only (clipped to the context). part == 0: the finished output. Otherwise (one token) the
// unnormalised state of this context part goes to part ([H, kvr] O, [H] max, [H] sum; heads h0.. of it) for
// mla_merge, which applies the W_UV projection after combining the parts.
static void mla_block(const MlaParams *p, const WDesc *W, int t0, int nt, int h0, int nh, const int32_t *pos,
                      int c0, int c1, float *part) {
  const int H = p->H, dn = p->dn, dr = p->dr, dv = p->dv, kvr = p->kvr, QW = kvr + dr, R = nt * nh;
  // Cache tiles are used in place when they are f32 and an 8-wide read at the last c_kv column stays in the row.
  const int direct = p->cdt == DT_F32 && (kvr % 8 == 0 || dr >= 8);
  const int narrow = R <= 4, np = narrow ? 1 : (R + 7) / 8;
  float Q[R * QW] __attribute__((aligned(16)));
  float QP[np * QW * 8] __attribute__((aligned(16)));
  float O[R * kvr] __attribute__((aligned(16)));
  float S[R * LT] __attribute__((aligned(16)));
  float ST[LT * 8] __attribute__((aligned(16)));
  float kbuf[direct ? 4 : LT * QW + 8] __attribute__((aligned(16)));
  float row[kvr] __attribute__((aligned(16)));
  float mx[R], den[R];
  int ctx = 0;
  for (int ti = 0; ti < nt; ti++) ctx = pos[ti] + 1 > ctx ? pos[ti] + 1 : ctx;
  ctx = ctx < c1 ? ctx : c1;
  // 1. Absorb: q_lat = q_nope · W_UK[h] ([dn] · [dn, kvr] → [kvr]); append q_rope; fold in the scale.
  for (int i = 0; i < R * kvr; i++) Q[(i / kvr) * QW + i % kvr] = 0.0f;
  for (int h = 0; h < nh; h++) {
    for (int j = 0; j < dn; j++) {
      decode_row(W, (size_t)kvr, (size_t)(h0 + h) * (size_t)(dn + dv) + (size_t)j, 0, kvr, row);
      for (int ti = 0; ti < nt; ti++) {
        float *Qr = Q + (ti * nh + h) * QW;
        float qj = p->q[((size_t)(t0 + ti) * (size_t)H + (size_t)(h0 + h)) * (size_t)(dn + dr) + (size_t)j];
        f4 a = splat(qj);
        int c = 0;
        for (; c + 4 <= kvr; c += 4) st(Qr + c, madd(a, ld(row + c), ld(Qr + c)));
        for (; c < kvr; c++) Qr[c] += qj * row[c];
      }
    }
  }
  for (int ti = 0; ti < nt; ti++)
    for (int h = 0; h < nh; h++) {
      const float *qh = p->q + ((size_t)(t0 + ti) * (size_t)H + (size_t)(h0 + h)) * (size_t)(dn + dr);
      float *Qr = Q + (ti * nh + h) * QW;
      for (int c = 0; c < dr; c++) Qr[kvr + c] = qh[dn + c];
      for (int c = 0; c < QW; c++) Qr[c] *= p->scale;
    }
  for (int i = 0; i < R * kvr; i++) O[i] = 0.0f;
  for (int i = 0; i < R; i++) {
    mx[i] = -__builtin_inff();
    den[i] = 0.0f;
  }
  // Qᵀ panels [QW][8] (or one [QW][4] for ≤ 4 rows, so small items cost proportionally less): the cache rows are
  // the streamed operand of the register tile, so cache tiles need no packing (transposing every tile would cost
  // as much as the products).
  if (narrow) {
    for (int c = 0; c < QW; c++)
      for (int i = 0; i < 4; i++) QP[c * 4 + i] = i < R ? Q[i * QW + c] : 0.0f;
  } else {
    for (int g = 0; g < np; g++) pack_panel(Q + g * 8 * QW, QW, R - 8 * g < 8 ? R - 8 * g : 8, QW, QP + g * QW * 8);
  }
  // 2. Flash-style pass over the cache: S = Q·Kᵀ per tile, causal mask per token, online softmax, O += P·C_kv.
  const int32_t *table = p->blockTables + (size_t)p->tokSeq[t0] * (size_t)p->maxBlocks;
  for (int l0 = c0, n; l0 < ctx; l0 += n) {
    n = ctx - l0 < LT ? ctx - l0 : LT;
    int bsz = p->bs - l0 % p->bs;  // a tile never crosses a block boundary
    n = n < bsz ? n : bsz;
    size_t slot = (size_t)table[l0 / p->bs] * (size_t)p->bs + (size_t)(l0 % p->bs);
    const float *Kf;
    if (direct) {
      Kf = (const float *)p->cache + slot * (size_t)QW;
    } else {
      for (int l = 0; l < n; l++) {
        if (p->cdt == DT_BF16) {
          const uint16_t *src = (const uint16_t *)p->cache + (slot + (size_t)l) * (size_t)QW;
          int c = 0;
          for (; c + 8 <= QW; c += 8) {
            f4 lo, hi;
            bf16x8_dec(ld(src + c), &lo, &hi);
            st(kbuf + l * QW + c, lo);
            st(kbuf + l * QW + c + 4, hi);
          }
          for (; c < QW; c++) kbuf[l * QW + c] = bf16_to_f32(src[c]);
        } else {
          const float *src = (const float *)p->cache + (slot + (size_t)l) * (size_t)QW;
          for (int c = 0; c < QW; c++) kbuf[l * QW + c] = src[c];
        }
      }
      for (int c = 0; c < 8; c++) kbuf[n * QW + c] = 0.0f;
      Kf = kbuf;
    }
    for (int g = 0; g < np; g++) {
      int gn = narrow ? R : (R - 8 * g < 8 ? R - 8 * g : 8);
      for (int l = 0; l < n; l += 4) {  // Sᵀ[l][i] = K[l] · Qᵀ[:, i]
        int mr = n - l < 4 ? n - l : 4;
        const float *a[4];
        float *c[4];
        for (int i = 0; i < mr; i++) {
          a[i] = Kf + (size_t)(l + i) * (size_t)QW;
          c[i] = ST + (l + i) * 8;
        }
        if (narrow) ukr_n4(mr, a, QP, 4, QW, c, 0);
        else ukr(mr, a, QP + g * QW * 8, 8, QW, c, 8, 0);
      }
      for (int i = 0; i < gn; i++)
        for (int l = 0; l < n; l++) S[(8 * g + i) * LT + l] = ST[l * 8 + i];
    }
    for (int i = 0; i < R; i++)  // causal: token i / nh sees cache rows l0 .. pos
      softmax_tile(S + i * LT, n, pos[i / nh] + 1 - l0, mx + i, den + i, O + i * kvr, kvr);
    for (int c0 = 0; c0 < kvr; c0 += 8) {
      int nc = kvr - c0 < 8 ? kvr - c0 : 8;
      for (int i0 = 0; i0 < R; i0 += 4) {
        int mr = R - i0 < 4 ? R - i0 : 4;
        const float *a[4];
        float *c[4];
        for (int i = 0; i < mr; i++) {
          a[i] = S + (i0 + i) * LT;
          c[i] = O + (i0 + i) * kvr + c0;
        }
        ukr(mr, a, Kf + c0, (size_t)QW, n, c, nc, 1);
      }
    }
  }
  if (part) {  // one token: its rows are its heads
    for (int i = 0; i < R; i++) {
      for (int c = 0; c < kvr; c++) part[(size_t)(h0 + i) * (size_t)kvr + (size_t)c] = O[i * kvr + c];
      part[(size_t)H * (size_t)kvr + (size_t)(h0 + i)] = mx[i];
      part[(size_t)H * (size_t)(kvr + 1) + (size_t)(h0 + i)] = den[i];
    }
    return;
  }
  // 3. out[t, h] = W_UV[h] · (O / den) ([dv, kvr] · [kvr] → [dv]); one pass over W_UV[h] for all nt tokens.
  for (int i = 0; i < R; i++) {
    float inv = den[i] > 0.0f ? 1.0f / den[i] : 0.0f;  // no visible position (pos < 0): zeros, not NaN
    for (int c = 0; c < kvr; c++) O[i * kvr + c] *= inv;
  }
  for (int h = 0; h < nh; h++) {
    WDesc Wv = rows_of(W, (size_t)kvr, (size_t)(h0 + h) * (size_t)(dn + dv) + (size_t)dn);
    float *y = p->out + ((size_t)t0 * (size_t)H + (size_t)(h0 + h)) * (size_t)dv;
    mm_core(&Wv, O + h * kvr, 0, (size_t)(nh * kvr), y, (size_t)(H * dv), nt, (size_t)kvr, 0, dv);
  }
}

// Rows [r0, r1) of ceil(T/tb) · ceil(H/hg) work items (token block, head group). Inside an item, blocks larger
// than MAXROWS query rows are processed in parts, and a block whose tokens are not all of one sequence token by
// token, so any (tb, hg) is valid.
//
// Split decode (splits > 1): rows = T · splits, item (t, s) runs every head of token t over part s of its context
// (equal parts of whole 64-row tiles), so each part of the latent cache is read once for all heads and a long
// context spreads over the threads; mla_merge then finishes each (token, head).
EXPORT(mla_attention)
void mla_attention(const MlaParams *p, int r0, int r1) {
  const int H = p->H, hg = p->hg > 0 && p->hg < H ? p->hg : H, tb = p->tb > 0 ? p->tb : 1;
  const int G = (H + hg - 1) / hg;
  const WDesc W = {p->wkvb, p->wqs, p->wscale, p->wdt};
  if (p->splits > 1) {
    const int S = p->splits;
    for (int r = r0; r < r1; r++) {
      const int t = r / S, s = r % S, tiles = (p->tokPos[t] + 1 + LT - 1) / LT;
      const int c0 = (int)(((int64_t)tiles * s / S) * LT), c1 = (int)(((int64_t)tiles * (s + 1) / S) * LT);
      float *part = p->part + (size_t)r * (size_t)H * (size_t)(p->kvr + 2);
      for (int h0 = 0; h0 < H; h0 += MAXROWS)
        mla_block(p, &W, t, 1, h0, H - h0 < MAXROWS ? H - h0 : MAXROWS, p->tokPos + t, c0, c1, part);
    }
    return;
  }
  for (int r = r0; r < r1; r++) {
    const int t0 = (r / G) * tb, g0 = (r % G) * hg, gn = H - g0 < hg ? H - g0 : hg;
    const int nt = p->T - t0 < tb ? p->T - t0 : tb;
    int same = 1;
    for (int ti = 1; ti < nt; ti++) same &= p->tokSeq[t0 + ti] == p->tokSeq[t0];
    for (int h0 = g0; h0 < g0 + gn; h0 += MAXROWS) {
      const int nh = g0 + gn - h0 < MAXROWS ? g0 + gn - h0 : MAXROWS;
      const int step = same ? (MAXROWS / nh > 0 ? MAXROWS / nh : 1) : 1;
      for (int ti = 0; ti < nt; ti += step) {
        const int n = nt - ti < step ? nt - ti : step;
        mla_block(p, &W, t0 + ti, n, h0, nh, p->tokPos + t0 + ti, 0, 1 << 30, 0);
      }
    }
  }
}

// Split decode, second pass: rows = T · H, item (t, h) combines the splits parts of mla_attention (online-softmax
// rescaling to the largest max), normalises, and projects with W_UV[h] into out[t, h].
EXPORT(mla_merge)
void mla_merge(const MlaParams *p, int r0, int r1) {
  const int H = p->H, kvr = p->kvr, dn = p->dn, dv = p->dv, S = p->splits;
  const WDesc W = {p->wkvb, p->wqs, p->wscale, p->wdt};
  const size_t stride = (size_t)H * (size_t)(kvr + 2);
  float O[kvr] __attribute__((aligned(16)));
  for (int r = r0; r < r1; r++) {
    const int t = r / H, h = r % H;
    const float *base = p->part + (size_t)t * (size_t)S * stride;
    float m = -__builtin_inff(), den = 0.0f;
    for (int s = 0; s < S; s++) {
      float ms = base[s * stride + (size_t)H * (size_t)kvr + (size_t)h];
      m = ms > m ? ms : m;
    }
    for (int c = 0; c < kvr; c++) O[c] = 0.0f;
    for (int s = 0; s < S; s++) {
      const float *ps = base + s * stride;
      float ms = ps[(size_t)H * (size_t)kvr + (size_t)h], ds = ps[(size_t)H * (size_t)(kvr + 1) + (size_t)h];
      if (ds == 0.0f) continue;  // nothing visible in this part
      float f = expf_(ms - m);
      den += ds * f;
      const float *os = ps + (size_t)h * (size_t)kvr;
      f4 fv = splat(f);
      int c = 0;
      for (; c + 4 <= kvr; c += 4) st(O + c, madd(ld(os + c), fv, ld(O + c)));
      for (; c < kvr; c++) O[c] += os[c] * f;
    }
    float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (int c = 0; c < kvr; c++) O[c] *= inv;
    WDesc Wv = rows_of(&W, (size_t)kvr, (size_t)h * (size_t)(dn + dv) + (size_t)dn);
    mm_core(&Wv, O, 0, (size_t)kvr, p->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)dv, 0, 1, (size_t)kvr, 0,
            dv);
  }
}
