// Vision-encoder kernels: block-diagonal (per-image) non-causal attention, and the projector's patch merge.
#include "common.h"

// ---- seg_attention ----
// out[i, h] = softmax_j(scale · q[i, h] · k[j, h]) · v[j, h] over the rows j of i's segment (ops/attention.ts).
// The host turns the segment ids into work items, each a block of ≤ QB query rows of one segment and one head:
// items[6·w ..] = {q0, q1, k0, k1, h, cost0}: query rows [q0, q1), key rows [k0, k1) (the whole segment, which
// must be one contiguous run of rows), head h, and the item's first cost unit. Costs grow with the segment
// length, so the host passes the total cost as the row count and a range [r0, r1) runs the items whose cost0
// lies in it: threads get equal work even when images differ in size.
#define QB 16  // query rows per item: each packed key tile serves QB rows
#define LT 64  // key rows per tile

// Scores S[i][j] = Q[i] · K[j] for 4 query rows and 8 keys at a time, K packed transposed ([d][LT]).
static void scores(const float *Q, int R4, int d, const float *KT, int n8, float *S) {
  for (int i = 0; i < R4; i += 4) {
    for (int j = 0; j < n8; j += 8) {
      f4 a0 = splat(0.0f), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
      for (int c = 0; c < d; c++) {
        f4 k0 = ld(KT + c * LT + j), k1 = ld(KT + c * LT + j + 4);
        f4 q0 = splat(Q[i * d + c]), q1 = splat(Q[(i + 1) * d + c]);
        f4 q2 = splat(Q[(i + 2) * d + c]), q3 = splat(Q[(i + 3) * d + c]);
        a0 = madd(q0, k0, a0), a1 = madd(q0, k1, a1);
        b0 = madd(q1, k0, b0), b1 = madd(q1, k1, b1);
        c0 = madd(q2, k0, c0), c1 = madd(q2, k1, c1);
        e0 = madd(q3, k0, e0), e1 = madd(q3, k1, e1);
      }
      st(S + i * LT + j, a0), st(S + i * LT + j + 4, a1);
      st(S + (i + 1) * LT + j, b0), st(S + (i + 1) * LT + j + 4, b1);
      st(S + (i + 2) * LT + j, c0), st(S + (i + 2) * LT + j + 4, c1);
      st(S + (i + 3) * LT + j, e0), st(S + (i + 3) * LT + j + 4, e1);
    }
  }
}

// O[dv] += Σ_j p[j] · V[j] for n key rows starting at v (row stride ldv), 16 columns at a time in registers.
static void accumulate(float *O, const float *p, const float *v, size_t ldv, int n, int dv) {
  int c0 = 0;
  for (; c0 + 16 <= dv; c0 += 16) {
    f4 a = ld(O + c0), b = ld(O + c0 + 4), c = ld(O + c0 + 8), e = ld(O + c0 + 12);
    for (int j = 0; j < n; j++) {
      const float *vj = v + (size_t)j * ldv + c0;
      f4 pj = splat(p[j]);
      a = madd(pj, ld(vj), a), b = madd(pj, ld(vj + 4), b);
      c = madd(pj, ld(vj + 8), c), e = madd(pj, ld(vj + 12), e);
    }
    st(O + c0, a), st(O + c0 + 4, b), st(O + c0 + 8, c), st(O + c0 + 12, e);
  }
  for (; c0 + 4 <= dv; c0 += 4) {
    f4 a = ld(O + c0);
    for (int j = 0; j < n; j++) a = madd(splat(p[j]), ld(v + (size_t)j * ldv + c0), a);
    st(O + c0, a);
  }
  for (; c0 < dv; c0++) {
    float a = O[c0];
    for (int j = 0; j < n; j++) a += p[j] * v[(size_t)j * ldv + c0];
    O[c0] = a;
  }
}

// Two rows at once (O1 = O0 + dv, p1 = p0 + LT): each V load serves both, 8 accumulators stay in registers.
static void accumulate2(float *O, const float *p, const float *v, size_t ldv, int n, int dv) {
  float *O1 = O + dv;
  const float *p1 = p + LT;
  int c0 = 0;
  for (; c0 + 16 <= dv; c0 += 16) {
    f4 a = ld(O + c0), b = ld(O + c0 + 4), c = ld(O + c0 + 8), e = ld(O + c0 + 12);
    f4 a1 = ld(O1 + c0), b1 = ld(O1 + c0 + 4), c1 = ld(O1 + c0 + 8), e1 = ld(O1 + c0 + 12);
    for (int j = 0; j < n; j++) {
      const float *vj = v + (size_t)j * ldv + c0;
      f4 v0 = ld(vj), v1 = ld(vj + 4), v2 = ld(vj + 8), v3 = ld(vj + 12), pj = splat(p[j]), qj = splat(p1[j]);
      a = madd(pj, v0, a), b = madd(pj, v1, b), c = madd(pj, v2, c), e = madd(pj, v3, e);
      a1 = madd(qj, v0, a1), b1 = madd(qj, v1, b1), c1 = madd(qj, v2, c1), e1 = madd(qj, v3, e1);
    }
    st(O + c0, a), st(O + c0 + 4, b), st(O + c0 + 8, c), st(O + c0 + 12, e);
    st(O1 + c0, a1), st(O1 + c0 + 4, b1), st(O1 + c0 + 8, c1), st(O1 + c0 + 12, e1);
  }
  if (c0 < dv) {  // the last dv % 16 columns, row by row
    accumulate(O + c0, p, v + c0, ldv, n, dv - c0);
    accumulate(O1 + c0, p1, v + c0, ldv, n, dv - c0);
  }
}

static void seg_item(const float *q, const float *k, const float *v, float *out, int H, int d, int dv, float scale,
                     const int32_t *it) {
  const int q0 = it[0], R = it[1] - it[0], k0 = it[2], k1 = it[3], h = it[4], R4 = (R + 3) & ~3;
  float Q[QB * d] __attribute__((aligned(16)));
  float KT[d * LT] __attribute__((aligned(16)));
  float S[QB * LT] __attribute__((aligned(16)));
  float O[QB * dv] __attribute__((aligned(16)));
  float mx[QB], den[QB];
  // Scaled queries; rows R .. R4 are zeros (their scores are computed and ignored).
  for (int i = 0; i < R4; i++)
    for (int c = 0; c < d; c++)
      Q[i * d + c] = i < R ? q[((size_t)(q0 + i) * (size_t)H + (size_t)h) * (size_t)d + c] * scale : 0.0f;
  for (int i = 0; i < R * dv; i++) O[i] = 0.0f;
  for (int i = 0; i < R; i++) mx[i] = -__builtin_inff(), den[i] = 0.0f;
  const size_t ldk = (size_t)H * (size_t)d, ldv = (size_t)H * (size_t)dv;
  for (int l0 = k0, n; l0 < k1; l0 += n) {
    n = k1 - l0 < LT ? k1 - l0 : LT;
    const int n8 = (n + 7) & ~7;
    const float *kt = k + (size_t)l0 * ldk + (size_t)h * (size_t)d;
    int j = 0;
    if ((d & 3) == 0) {  // 4×4 blocks through registers
      for (; j + 4 <= n; j += 4) {
        for (int c = 0; c < d; c += 4) {
          f4 a = ld(kt + (size_t)j * ldk + c), b = ld(kt + (size_t)(j + 1) * ldk + c);
          f4 e = ld(kt + (size_t)(j + 2) * ldk + c), f = ld(kt + (size_t)(j + 3) * ldk + c);
          transpose4(&a, &b, &e, &f);
          st(KT + c * LT + j, a), st(KT + (c + 1) * LT + j, b), st(KT + (c + 2) * LT + j, e);
          st(KT + (c + 3) * LT + j, f);
        }
      }
    }
    for (; j < n; j++)
      for (int c = 0; c < d; c++) KT[c * LT + j] = kt[(size_t)j * ldk + c];
    for (; j < n8; j++)
      for (int c = 0; c < d; c++) KT[c * LT + j] = 0.0f;
    scores(Q, R4, d, KT, n8, S);
    const float *vt = v + (size_t)l0 * ldv + (size_t)h * (size_t)dv;
    for (int i = 0; i < R; i++) {
      // Online softmax: rescale what the earlier tiles gave by exp(old max − new max).
      float *Si = S + i * LT;
      for (int l = n; l < n8; l++) Si[l] = -__builtin_inff();
      f4 mv4 = splat(mx[i]);
      for (int l = 0; l < n8; l += 4) mv4 = wasm_f32x4_max(mv4, ld(Si + l));
      // Weights below e^-30 (relative to the row's max, whose weight is 1) are flushed to 0: they change no f32
      // result, and their products with V would be denormals, which x86 multiplies ~100× slower.
      float m = hmax(mv4), corr = mx[i] - m < -30.0f ? 0.0f : expf_(mx[i] - m);  // 0 on the first tile
      f4 mv = splat(m), acc = splat(0.0f), lo = splat(-30.0f);
      for (int l = 0; l < n8; l += 4) {
        f4 x = wasm_f32x4_sub(ld(Si + l), mv);
        f4 e = wasm_v128_and(exp4(x), wasm_f32x4_ge(x, lo));
        st(Si + l, e);
        acc = wasm_f32x4_add(acc, e);
      }
      den[i] = den[i] * corr + hsum(acc);
      mx[i] = m;
      float *Oi = O + i * dv;
      if (corr != 1.0f)
        for (int c = 0; c < dv; c++) Oi[c] *= corr;
    }
    int i = 0;
    for (; i + 2 <= R; i += 2) accumulate2(O + i * dv, S + i * LT, vt, ldv, n, dv);
    if (i < R) accumulate(O + i * dv, S + i * LT, vt, ldv, n, dv);
  }
  for (int i = 0; i < R; i++) {
    float inv = 1.0f / den[i], *y = out + ((size_t)(q0 + i) * (size_t)H + (size_t)h) * (size_t)dv;
    for (int c = 0; c < dv; c++) y[c] = O[i * dv + c] * inv;
  }
}

// Runs the items whose first cost unit lies in [r0, r1) (items sorted by cost0, which strictly increases).
EXPORT(seg_attention)
void seg_attention(const float *q, const float *k, const float *v, float *out, int H, int d, int dv, float scale,
                   const int32_t *items, int nItems, int r0, int r1) {
  int lo = 0, hi = nItems;  // first item with cost0 ≥ r0
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (items[6 * mid + 5] < r0) lo = mid + 1;
    else hi = mid;
  }
  for (int w = lo; w < nItems && items[6 * w + 5] < r1; w++) seg_item(q, k, v, out, H, d, dv, scale, items + 6 * w);
}

// ---- patch_merge ----
// out[m, c·K + j] = x[index[m, j], c] for rows m in [r0, r1) (ops/patch_merge.ts); indices checked by the host.
// K = 4 (2×2 merge) moves 4×4 blocks through a register transpose: 4 channels of the 4 source rows.
EXPORT(patch_merge)
void patch_merge(const float *x, int C, const int32_t *index, int K, float *out, int r0, int r1) {
  for (int m = r0; m < r1; m++) {
    const int32_t *ix = index + (size_t)m * (size_t)K;
    float *y = out + (size_t)m * (size_t)C * (size_t)K;
    int c = 0;
    if (K == 4) {
      const float *s0 = x + (size_t)ix[0] * (size_t)C, *s1 = x + (size_t)ix[1] * (size_t)C;
      const float *s2 = x + (size_t)ix[2] * (size_t)C, *s3 = x + (size_t)ix[3] * (size_t)C;
      for (; c + 4 <= C; c += 4) {
        f4 a = ld(s0 + c), b = ld(s1 + c), e = ld(s2 + c), f = ld(s3 + c);
        transpose4(&a, &b, &e, &f);  // a = channel c of the 4 rows, b = channel c + 1, …
        st(y + 4 * c, a), st(y + 4 * c + 4, b), st(y + 4 * c + 8, e), st(y + 4 * c + 12, f);
      }
    }
    for (; c < C; c++)
      for (int j = 0; j < K; j++) y[c * K + j] = x[(size_t)ix[j] * (size_t)C + c];
  }
}
