// MLA prefill in the naive (expanded) form, as vLLM runs long prefills: for a run of n consecutive tokens of one
// sequence, the latent cache rows of the context are expanded once per tile by a matmul with W_kvb
// (k_nope and v of every head: [rows, H·(dn + dv)]), then each (token block, head) item attends with
// dn + dr = 128-wide keys and dv-wide values instead of the absorbed form's kvr + dr = 320-wide keys and kvr-wide
// values. The expansion costs as much as absorbing q and projecting the output (both rows × kvr × H·(dn + dv)), so
// past a few dozen tokens per run the attention itself does about half the multiply-adds.
//
// Per context tile [c0, c0 + cl): mla_gather (rows = cl) copies the cache rows to f32 c_kv and k_rope tiles, the
// `matmul` kernel expands c_kv into kv, then mla_prefill (rows = ceil(n / tb) · H) folds the tile into each item's
// online-softmax state — the unnormalised O kept in `out` itself, the running max and sum in `state` — and on the last
// tile writes out = O / sum.
#include "attention.h"
#include "matmul.h"

typedef struct {
  const float *q;      // [n, H, dn + dr] of the run's tokens (rope and temperature applied)
  const void *cache;   // [blocks, bs, kvr + dr]
  int32_t cdt;         // DT_F32 or DT_BF16
  const int32_t *table;  // the sequence's block table row
  int32_t bs;
  float *ckv;          // tile [CT, kvr] f32
  float *kr;           // tile [CT, dr] f32
  float *kv;           // tile [CT, H·(dn + dv)]: per head dn of k_nope then dv of v
  float *state;        // [n, H, 2]: running max, running sum
  float *out;          // [n, H, dv]: the unnormalised O between tiles, the result after the last
  int32_t n, p0;       // token i of the run is at position p0 + i
  int32_t c0, cl;      // this context tile
  int32_t last;        // 1 on the run's last tile: normalise into out
  int32_t H, dn, dr, dv, kvr;
  float scale;
  int32_t tb;          // tokens per item
} MlaPrefillParams;

#define LT 64  // kv rows per inner tile
#define TB 8   // most tokens per item (one packed 8-column Q panel)

EXPORT(mla_gather)
void mla_gather(const MlaPrefillParams *p, int r0, int r1) {
  const int kvr = p->kvr, dr = p->dr, QW = kvr + dr;
  for (int l = r0; l < r1; l++) {
    const int pos = p->c0 + l;
    const size_t slot = (size_t)p->table[pos / p->bs] * (size_t)p->bs + (size_t)(pos % p->bs);
    float *ck = p->ckv + (size_t)l * (size_t)kvr, *kr = p->kr + (size_t)l * (size_t)dr;
    if (p->cdt == DT_BF16) {
      const uint16_t *src = (const uint16_t *)p->cache + slot * (size_t)QW;
      for (int c = 0; c < kvr; c++) ck[c] = bf16_to_f32(src[c]);
      for (int c = 0; c < dr; c++) kr[c] = bf16_to_f32(src[kvr + c]);
    } else {
      const float *src = (const float *)p->cache + slot * (size_t)QW;
      for (int c = 0; c < kvr; c++) ck[c] = src[c];
      for (int c = 0; c < dr; c++) kr[c] = src[kvr + c];
    }
  }
}

EXPORT(mla_prefill)
void mla_prefill(const MlaPrefillParams *p, int r0, int r1) {
  const int H = p->H, dn = p->dn, dr = p->dr, dv = p->dv, QD = dn + dr, N = H * (dn + dv);
  const int tb = p->tb > 0 && p->tb < TB ? p->tb : TB;
  float QP[QD * 8] __attribute__((aligned(16)));
  float ST[LT * 8] __attribute__((aligned(16)));
  float S[TB * LT] __attribute__((aligned(16)));
  float O[TB * dv + 8] __attribute__((aligned(16)));
  float mx[TB], den[TB];
  for (int r = r0; r < r1; r++) {
    const int t0 = (r / H) * tb, h = r % H, nt = p->n - t0 < tb ? p->n - t0 : tb;
    // Rows of this tile the block's last token sees (its earlier tokens see fewer: masked below).
    int vis = p->p0 + t0 + nt - p->c0;
    vis = vis < p->cl ? vis : p->cl;
    float *sp = p->state + ((size_t)t0 * (size_t)H + (size_t)h) * 2;
    float *op = p->out + ((size_t)t0 * (size_t)H + (size_t)h) * (size_t)dv;
    const size_t ostride = (size_t)H * (size_t)dv;
    if (p->c0 == 0) {
      for (int i = 0; i < nt * dv; i++) O[i] = 0.0f;
      for (int i = 0; i < nt; i++) mx[i] = -__builtin_inff(), den[i] = 0.0f;
    } else {
      for (int i = 0; i < nt; i++) {
        for (int c = 0; c < dv; c++) O[i * dv + c] = op[(size_t)i * ostride + (size_t)c];
        mx[i] = sp[(size_t)i * (size_t)H * 2];
        den[i] = sp[(size_t)i * (size_t)H * 2 + 1];
      }
    }
    if (vis > 0) {
      // Qᵀ panel [QD][8] with the softmax scale folded in; columns past nt are zero.
      for (int c = 0; c < QD; c++)
        for (int i = 0; i < 8; i++)
          QP[c * 8 + i] = i < nt ? p->q[((size_t)(t0 + i) * (size_t)H + (size_t)h) * (size_t)QD + (size_t)c] * p->scale
                                 : 0.0f;
      for (int l0 = 0; l0 < vis; l0 += LT) {
        const int nl = vis - l0 < LT ? vis - l0 : LT;
        const float *kn = p->kv + (size_t)l0 * (size_t)N + (size_t)h * (size_t)(dn + dv);
        const float *kr = p->kr + (size_t)l0 * (size_t)dr;
        // Sᵀ[l][i] = k_nope[l] · q_nope[i] + k_rope[l] · q_rope[i]
        for (int l = 0; l < nl; l += 4) {
          const int mr = nl - l < 4 ? nl - l : 4;
          const float *a[4], *b[4];
          float *c[4];
          for (int i = 0; i < mr; i++) {
            a[i] = kn + (size_t)(l + i) * (size_t)N;
            b[i] = kr + (size_t)(l + i) * (size_t)dr;
            c[i] = ST + (l + i) * 8;
          }
          ukr(mr, a, QP, 8, dn, c, 8, 0);
          ukr(mr, b, QP + dn * 8, 8, dr, c, 8, 1);
        }
        for (int i = 0; i < nt; i++) {  // causal: token i sees rows up to its position
          float *Si = S + i * LT;
          for (int l = 0; l < nl; l++) Si[l] = ST[l * 8 + i];
          softmax_tile(Si, nl, p->p0 + t0 + i + 1 - (p->c0 + l0), mx + i, den + i, O + i * dv, dv);
        }
        // O[i] += Σ_l S[i][l] · v[l]; the panel rows are v rows in place (stride N); a read past dv stays in kv
        // (it is padded), and only nc columns are stored.
        for (int cv = 0; cv < dv; cv += 8) {
          const int nc = dv - cv < 8 ? dv - cv : 8;
          for (int i0 = 0; i0 < nt; i0 += 4) {
            const int mr = nt - i0 < 4 ? nt - i0 : 4;
            const float *a[4];
            float *c[4];
            for (int i = 0; i < mr; i++) {
              a[i] = S + (i0 + i) * LT;
              c[i] = O + (i0 + i) * dv + cv;
            }
            ukr(mr, a, kn + dn + cv, (size_t)N, nl, c, nc, 1);
          }
        }
      }
    }
    for (int i = 0; i < nt; i++) {
      float inv = !p->last ? 1.0f : den[i] > 0.0f ? 1.0f / den[i] : 0.0f;
      float *o = op + (size_t)i * ostride;
      for (int c = 0; c < dv; c++) o[c] = O[i * dv + c] * inv;
      if (!p->last) {
        sp[(size_t)i * (size_t)H * 2] = mx[i];
        sp[(size_t)i * (size_t)H * 2 + 1] = den[i];
      }
    }
  }
}
