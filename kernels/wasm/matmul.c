// y[M, N] = x[M, K] · W[N, K]ᵀ for W in f32, bf16, f8e4m3 (per-tensor scale), q8 (32-blocks along K) and q4 (its
// own kernels in gemm_q4.c, but for the f32 prefill, which runs here on decode_row).
// Decode (M ≤ DECODE_MAX_M) streams W once and reuses each loaded W vector for every activation row;
// prefill packs 8 W rows × KB columns into an f32 panel (dequantising once) and runs a 4×8 register tile.
// Work splits over output features [n0, n1): every thread reads all of x and its own slice of W.
#include "matmul.h"

#define DECODE_MAX_M 8
#define KB 256  // K block: the packed panel (8 × KB f32 = 8 KiB) stays in L1
#define MB 128  // M block: x rows × KB (128 KiB) stay in L2 while the panel is reused

// ---------------------------------------------------------------- row decoding (natural order)

void decode_row(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out) {
  size_t base = n * K + k0;
  int k = 0;
  switch (W->dt) {
    case DT_F32: {
      const float *w = (const float *)W->w + base;
      for (; k + 4 <= len; k += 4) st(out + k, ld(w + k));
      for (; k < len; k++) out[k] = w[k];
      break;
    }
    case DT_BF16: {
      const uint16_t *w = (const uint16_t *)W->w + base;
      for (; k + 8 <= len; k += 8) {
        f4 lo, hi;
        bf16x8_dec(ld(w + k), &lo, &hi);
        st(out + k, lo);
        st(out + k + 4, hi);
      }
      for (; k < len; k++) out[k] = bf16_to_f32(w[k]);
      break;
    }
    case DT_F8E4M3: {
      const uint8_t *w = (const uint8_t *)W->w + base;
      float sc = W->qs ? W->qs[n] : W->scale;  // per-row scales when given, else the per-tensor one
      f4 s = splat(sc);
      for (; k + 16 <= len; k += 16) {
        f4 d[4];
        f8x16_dec(ld(w + k), d);
        for (int j = 0; j < 4; j++) st(out + k + 4 * j, wasm_f32x4_mul(d[j], s));
      }
      for (; k < len; k++) out[k] = f8_to_f32(w[k]) * sc;
      break;
    }
    case DT_Q8: {
      const int8_t *w = (const int8_t *)W->w + base;
      size_t nb = (K + Q8_BLOCK - 1) / Q8_BLOCK;
      const float *qs = W->qs + n * nb;
      while (k < len) {
        size_t kk = k0 + (size_t)k;  // absolute column: its block gives the scale
        int end = (int)((kk / Q8_BLOCK + 1) * Q8_BLOCK - k0);
        if (end > len) end = len;
        float s = qs[kk / Q8_BLOCK];
        f4 sv = splat(s);
        for (; k + 4 <= end; k += 4) {
          v128_t q = wasm_i32x4_extend_low_i16x8(wasm_i16x8_extend_low_i8x16(wasm_v128_load32_zero(w + k)));
          st(out + k, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(q), sv));
        }
        for (; k < end; k++) out[k] = (float)w[k] * s;
      }
      break;
    }
    case DT_NVFP4: nvfp4_decode_row(W, K, n, k0, len, out); break;
    case DT_Q4: decode_row_q4(W, K, n, k0, len, out); break;
  }
}

// ---------------------------------------------------------------- prefill: packed panel × 4×8 register tile

// C[mr, 0..nc) (+)= A[mr, 0..kc) · P[0..kc, 0..8); P row stride ldp (8 when packed, wider when P is a cache tile).
INLINE void ukr_t(int MR, const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc,
                  int acc) {
  f4 c0[4], c1[4];
  for (int i = 0; i < MR; i++) c0[i] = c1[i] = wasm_f32x4_splat(0.0f);
  for (int k = 0; k < kc; k++) {
    f4 b0 = ld(P + (size_t)k * ldp), b1 = ld(P + (size_t)k * ldp + 4);
    for (int i = 0; i < MR; i++) {
      f4 av = wasm_v128_load32_splat(a[i] + k);
      c0[i] = madd(av, b0, c0[i]);
      c1[i] = madd(av, b1, c1[i]);
    }
  }
  for (int i = 0; i < MR; i++) store8(c[i], c0[i], c1[i], nc, acc);
}
NOINLINE void ukr1(const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc, int acc) {
  ukr_t(1, a, P, ldp, kc, c, nc, acc);
}
NOINLINE void ukr2(const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc, int acc) {
  ukr_t(2, a, P, ldp, kc, c, nc, acc);
}
NOINLINE void ukr3(const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc, int acc) {
  ukr_t(3, a, P, ldp, kc, c, nc, acc);
}
NOINLINE void ukr4(const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc, int acc) {
  ukr_t(4, a, P, ldp, kc, c, nc, acc);
}
void ukr(int mr, const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc, int acc) {
  switch (mr) {
    case 4: ukr4(a, P, ldp, kc, c, nc, acc); break;
    case 3: ukr3(a, P, ldp, kc, c, nc, acc); break;
    case 2: ukr2(a, P, ldp, kc, c, nc, acc); break;
    default: ukr1(a, P, ldp, kc, c, nc, acc); break;
  }
}

// 4-column variant for narrow right-hand sides (attention with ≤ 4 heads per work item): C[mr, 0..4) (+)=
// A[mr, 0..kc) · P[kc, 4] with P's row stride ldp.
INLINE void ukr_n4_t(int MR, const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int acc) {
  f4 c0[4];
  for (int i = 0; i < MR; i++) c0[i] = wasm_f32x4_splat(0.0f);
  for (int k = 0; k < kc; k++) {
    f4 b0 = ld(P + (size_t)k * ldp);
    for (int i = 0; i < MR; i++) c0[i] = madd(wasm_v128_load32_splat(a[i] + k), b0, c0[i]);
  }
  for (int i = 0; i < MR; i++) st(c[i], acc ? wasm_f32x4_add(c0[i], ld(c[i])) : c0[i]);
}
NOINLINE void ukr_n4_4(const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int acc) {
  ukr_n4_t(4, a, P, ldp, kc, c, acc);
}
NOINLINE void ukr_n4_1(const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int acc) {
  ukr_n4_t(1, a, P, ldp, kc, c, acc);
}
void ukr_n4(int mr, const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int acc) {
  if (mr == 4) {
    ukr_n4_4(a, P, ldp, kc, c, acc);
  } else {
    for (int i = 0; i < mr; i++) ukr_n4_1(a + i, P, ldp, kc, c + i, acc);
  }
}

// R: nr rows of kc floats (row stride ldr) → P[kc][8], rows nr..7 zero.
void pack_panel(const float *R, int ldr, int nr, int kc, float *P) {
  int k = 0;
  f4 z = wasm_f32x4_splat(0.0f);
  for (; k + 4 <= kc; k += 4) {
    for (int jg = 0; jg < 8; jg += 4) {
      f4 v[4];
      for (int j = 0; j < 4; j++) v[j] = jg + j < nr ? ld(R + (jg + j) * ldr + k) : z;
      transpose4(&v[0], &v[1], &v[2], &v[3]);
      for (int i = 0; i < 4; i++) st(P + (k + i) * 8 + jg, v[i]);
    }
  }
  for (; k < kc; k++)
    for (int j = 0; j < 8; j++) P[k * 8 + j] = j < nr ? R[j * ldr + k] : 0.0f;
}

// A rows a[0..mr) × [0, kc) → Ap[kc][4], k-major so one 16-byte load holds the four rows' values at k; rows mr..3
// are zero.
static void pack_a4(const float *const *a, int mr, int kc, float *Ap) {
  f4 z = wasm_f32x4_splat(0.0f);
  int k = 0;
  for (; k + 4 <= kc; k += 4) {
    f4 v[4];
    for (int i = 0; i < 4; i++) v[i] = i < mr ? ld(a[i] + k) : z;
    transpose4(&v[0], &v[1], &v[2], &v[3]);
    for (int i = 0; i < 4; i++) st(Ap + (k + i) * 4, v[i]);
  }
  for (; k < kc; k++)
    for (int i = 0; i < 4; i++) Ap[k * 4 + i] = i < mr ? a[i][k] : 0.0f;
}

// C[mr, 0..nc) (+)= Ap[0..kc)[4]ᵀ · P[kc][8] with both operands packed: per k one load of the four A values,
// whose lanes are broadcast by shuffles, and two of the panel. Against broadcasting loads from four row pointers
// this leaves the load ports to the panel and needs no address arithmetic per row (measured ~20% faster).
NOINLINE void ukr_p4(const float *Ap, const float *P, int kc, float *const *c, int mr, int nc, int acc) {
  f4 c0[4], c1[4];
  for (int i = 0; i < 4; i++) c0[i] = c1[i] = wasm_f32x4_splat(0.0f);
  for (int k = 0; k < kc; k++) {
    f4 b0 = ld(P + k * 8), b1 = ld(P + k * 8 + 4), av = ld(Ap + k * 4);
    f4 a0 = wasm_i32x4_shuffle(av, av, 0, 0, 0, 0), a1 = wasm_i32x4_shuffle(av, av, 1, 1, 1, 1);
    f4 a2 = wasm_i32x4_shuffle(av, av, 2, 2, 2, 2), a3 = wasm_i32x4_shuffle(av, av, 3, 3, 3, 3);
    c0[0] = madd(a0, b0, c0[0]);
    c1[0] = madd(a0, b1, c1[0]);
    c0[1] = madd(a1, b0, c0[1]);
    c1[1] = madd(a1, b1, c1[1]);
    c0[2] = madd(a2, b0, c0[2]);
    c1[2] = madd(a2, b1, c1[2]);
    c0[3] = madd(a3, b0, c0[3]);
    c1[3] = madd(a3, b1, c1[3]);
  }
  for (int i = 0; i < mr; i++) store8(c[i], c0[i], c1[i], nc, acc);
}

static void mm_prefill(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
                       size_t K, int n0, int n1) {
  float P[KB * 8] __attribute__((aligned(16)));
  float R[8 * KB] __attribute__((aligned(16)));
  float Ap[MB * KB] __attribute__((aligned(16)));  // the x block, packed in groups of 4 rows
  for (int mb = 0; mb < M; mb += MB) {
    int me = mb + MB < M ? mb + MB : M;
    for (size_t kb = 0; kb < K; kb += KB) {
      int kc = (int)(K - kb < KB ? K - kb : KB);
      for (int m = mb; m < me; m += 4) {
        int mr = me - m < 4 ? me - m : 4;
        const float *a[4];
        for (int i = 0; i < mr; i++) a[i] = x + (xidx ? (size_t)xidx[m + i] : (size_t)(m + i)) * ldx + kb;
        pack_a4(a, mr, kc, Ap + (m - mb) * kc);
      }
      for (int nb = n0; nb < n1; nb += 8) {
        int nc = n1 - nb < 8 ? n1 - nb : 8;
        for (int j = 0; j < nc; j++) decode_row(W, K, (size_t)(nb + j), kb, kc, R + j * KB);
        pack_panel(R, KB, nc, kc, P);
        for (int m = mb; m < me; m += 4) {
          int mr = me - m < 4 ? me - m : 4;
          float *c[4];
          for (int i = 0; i < mr; i++) c[i] = y + (size_t)(m + i) * ldy + nb;
          ukr_p4(Ap + (m - mb) * kc, P, kc, c, mr, nc, kb > 0);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- decode: stream W once for ≤ 8 rows

// out[m][r] = Σ_k x_m[k] · W[n + r, k] for MR activation rows and NR consecutive W rows.
// Each W row is decoded once per chunk and used for every activation row. With one activation row a second set of
// accumulators splits the FMA chain, which would otherwise bound the loop by FMA latency rather than throughput.
// The choice depends on MR only, never on NR, so a row's result does not depend on how rows were split or grouped.
// xp: activations permuted to match the cheap lane order of the dtype's decoder (see perm_rows).
#define ACC_DECL                                                      \
  f4 acc[4][4], acc2[4][4];                                           \
  const int two = MR == 1;                                            \
  for (int m = 0; m < MR; m++)                                        \
    for (int r = 0; r < NR; r++) acc[m][r] = acc2[m][r] = wasm_f32x4_splat(0.0f);
#define ACC_SUM(m, r) hsum(two ? wasm_f32x4_add(acc[m][r], acc2[m][r]) : acc[m][r])

INLINE void dot_f32(int MR, int NR, const float *const *xr, const float *w, size_t K, size_t dr, float out[4][4]) {
  const size_t rs = dr * K;
  ACC_DECL
  size_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int r = 0; r < NR; r++) {
      f4 w0 = ld(w + r * rs + k), w1 = ld(w + r * rs + k + 4);
      for (int m = 0; m < MR; m++) {
        f4 x0 = ld(xr[m] + k), x1 = ld(xr[m] + k + 4);
        if (two) {
          acc[m][r] = madd(x0, w0, acc[m][r]);
          acc2[m][r] = madd(x1, w1, acc2[m][r]);
        } else {
          acc[m][r] = madd(x1, w1, madd(x0, w0, acc[m][r]));
        }
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) {
      float s = ACC_SUM(m, r);
      for (size_t kk = k; kk < K; kk++) s += xr[m][kk] * w[r * rs + kk];
      out[m][r] = s;
    }
}

// bf16: a 32-bit lane holds elements (2i, 2i+1); `<< 16` yields the even ones, `& 0xffff0000` the odd ones, so
// each 8-chunk of x is stored as [x0 x2 x4 x6 | x1 x3 x5 x7].
INLINE void dot_bf16(int MR, int NR, const float *const *xr, const float *const *xp, const uint16_t *w, size_t K,
                     size_t dr, float out[4][4]) {
  const size_t rs = dr * K;
  ACC_DECL
  size_t k = 0;
  v128_t hi_mask = splat_u32(0xffff0000u);
  for (; k + 8 <= K; k += 8) {
    for (int r = 0; r < NR; r++) {
      v128_t v = ld(w + r * rs + k);
      f4 we = wasm_i32x4_shl(v, 16), wo = wasm_v128_and(v, hi_mask);
      for (int m = 0; m < MR; m++) {
        f4 xe = ld(xp[m] + k), xo = ld(xp[m] + k + 4);
        if (two) {
          acc[m][r] = madd(xe, we, acc[m][r]);
          acc2[m][r] = madd(xo, wo, acc2[m][r]);
        } else {
          acc[m][r] = madd(xo, wo, madd(xe, we, acc[m][r]));
        }
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) {
      float s = ACC_SUM(m, r);
      for (size_t kk = k; kk < K; kk++) s += xr[m][kk] * bf16_to_f32(w[r * rs + kk]);
      out[m][r] = s;
    }
}

// f8: 16-chunks of x stored transposed as 4×4 ([x0 x4 x8 x12 | x1 x5 …]) to match f8x16_dec_perm.
INLINE void dot_f8(int MR, int NR, const float *const *xr, const float *const *xp, const uint8_t *w, size_t K,
                   size_t dr, float scale, float out[4][4]) {
  const size_t rs = dr * K;
  ACC_DECL
  size_t k = 0;
  for (; k + 16 <= K; k += 16) {
    // With ≤ 2 activation rows, one exponent-0 test for the NR weight rows' chunks (common.h, f8_any_e0): a byte with
    // exponent 0 in any sends all NR to the exact path (the decoders agree on every other code). Measured at M = 1
    // (NR 4): +13–15%; with 4 activation rows (NR 2) it measured 15% slower than a test per chunk, so those keep that.
    v128_t v[4];
    int exact = 0;
    for (int r = 0; r < NR; r++) v[r] = ld(w + r * rs + k);
    if (MR <= 2) {
      v128_t e = wasm_v128_and(v[0], splat_u8(0x78));
      for (int r = 1; r < NR; r++) e = wasm_u8x16_min(e, wasm_v128_and(v[r], splat_u8(0x78)));
      exact = !wasm_i8x16_all_true(e);
    }
    for (int r = 0; r < NR; r++) {
      f4 d[4];
      if (MR > 2) f8x16_dec_perm(v[r], d);
      else if (__builtin_expect(exact, 0)) f8x16_dec_perm_exact(v[r], d);
      else f8x16_dec_perm_fast(v[r], d);
      for (int m = 0; m < MR; m++) {
        const float *x = xp[m] + k;
        if (two) {
          acc[m][r] = madd(ld(x + 8), d[2], madd(ld(x), d[0], acc[m][r]));
          acc2[m][r] = madd(ld(x + 12), d[3], madd(ld(x + 4), d[1], acc2[m][r]));
        } else {
          acc[m][r] = madd(ld(x + 12), d[3], madd(ld(x + 8), d[2], madd(ld(x + 4), d[1], madd(ld(x), d[0], acc[m][r]))));
        }
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) {
      float s = ACC_SUM(m, r);
      for (size_t kk = k; kk < K; kk++) s += xr[m][kk] * f8_to_f32(w[r * rs + kk]);
      out[m][r] = s * scale;
    }
}

// q8 × q8: activation rows quantised to int8 blocks (q = round(x·127/amax), scale amax/127) and kept as |q| and a
// sign mask, so the int8 product runs on relaxed_dot_i8x16_i7x16 with the sign moved onto the weight:
// w·q = (w ⊕ s − s)·|q| with |q| ≤ 127 — exact in i32 (no saturation) and valid on every host.
typedef struct {
  const uint8_t *ab;    // |q| [K]
  const uint8_t *sg;    // 0xff where q < 0 [K]
  const int8_t *q;      // q [K]
  const int32_t *corr;  // per block 4 lanes: −128 · Σ q over the bytes of that lane in both halves [nb][4] (dot_q8u)
  const float *s;       // scale per block [nb]
} QAct;

// The short last block of a row (K not a multiple of 32) of both q8 decode kernels, scalar: the same integer product.
INLINE float q8_tail(const QAct *a, const int8_t *w, const float *ws, size_t K, size_t nfull) {
  int32_t isum = 0;
  for (size_t k = nfull * Q8_BLOCK; k < K; k++) isum += (int32_t)a->q[k] * (int32_t)w[k];
  return (float)isum * (ws[nfull] * a->s[nfull]);
}

INLINE void dot_q8(int MR, int NR, const QAct *xa, const int8_t *w, const float *ws, size_t K, size_t dr,
                   float out[4][4]) {
  size_t nb = (K + Q8_BLOCK - 1) / Q8_BLOCK, nfull = K / Q8_BLOCK;
  const size_t rs = dr * K, rsb = dr * nb;
  f4 acc[4][4];
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) acc[m][r] = wasm_f32x4_splat(0.0f);
  v128_t zero = wasm_i32x4_splat(0);
  for (size_t b = 0; b < nfull; b++) {
    size_t k = b * Q8_BLOCK;
    v128_t w0[4], w1[4];
    for (int r = 0; r < NR; r++) {
      w0[r] = ld(w + r * rs + k);
      w1[r] = ld(w + r * rs + k + 16);
    }
    for (int m = 0; m < MR; m++) {
      v128_t s0 = ld(xa[m].sg + k), s1 = ld(xa[m].sg + k + 16);
      v128_t a0 = ld(xa[m].ab + k), a1 = ld(xa[m].ab + k + 16);
      float xs = xa[m].s[b];
      for (int r = 0; r < NR; r++) {
        v128_t p0 = wasm_i8x16_sub(wasm_v128_xor(w0[r], s0), s0);
        v128_t p1 = wasm_i8x16_sub(wasm_v128_xor(w1[r], s1), s1);
        v128_t d = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(p0, a0, zero);
        d = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(p1, a1, d);
        acc[m][r] = madd(wasm_f32x4_convert_i32x4(d), splat(ws[r * rsb + b] * xs), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) {
      float s = hsum(acc[m][r]);
      if (nfull < nb) s += q8_tail(&xa[m], w + r * rs, ws + r * rsb, K, nfull);
      out[m][r] = s;
    }
}

// q8 × q8 where the host's relaxed dot multiplies its second operand as u8 exactly (q8_u8_dot): the weight goes in
// as w + 128 (one xor per weight vector, shared by every activation row) and the signed activation as the first
// operand, so Σ q·(w + 128) = Σ q·w + 128·Σ q, and each lane starts at −128 · Σ q over its own bytes. Every lane
// then holds the same integer as in dot_q8 (for weights in ±127, as every q8 encoder here makes them: dot_q8's sign
// transfer would wrap −128), so the results are bit-identical; per (activation row, weight row, block)
// it saves the sign transfer (an xor and a subtraction per 16 bytes), which is most of the work at batch > 1.
INLINE void dot_q8u(int MR, int NR, const QAct *xa, const int8_t *w, const float *ws, size_t K, size_t dr,
                    float out[4][4]) {
  size_t nb = (K + Q8_BLOCK - 1) / Q8_BLOCK, nfull = K / Q8_BLOCK;
  const size_t rs = dr * K, rsb = dr * nb;
  const v128_t bias = wasm_i8x16_splat((int8_t)0x80);
  f4 acc[4][4];
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) acc[m][r] = wasm_f32x4_splat(0.0f);
  for (size_t b = 0; b < nfull; b++) {
    size_t k = b * Q8_BLOCK;
    v128_t w0[4], w1[4];
    for (int r = 0; r < NR; r++) {
      w0[r] = wasm_v128_xor(ld(w + r * rs + k), bias);
      w1[r] = wasm_v128_xor(ld(w + r * rs + k + 16), bias);
    }
    for (int m = 0; m < MR; m++) {
      v128_t q0 = ld(xa[m].q + k), q1 = ld(xa[m].q + k + 16), c = ld(xa[m].corr + 4 * b);
      float xs = xa[m].s[b];
      for (int r = 0; r < NR; r++) {
        v128_t d = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(q0, w0[r], c);
        d = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(q1, w1[r], d);
        acc[m][r] = madd(wasm_f32x4_convert_i32x4(d), splat(ws[r * rsb + b] * xs), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) {
      float s = hsum(acc[m][r]);
      if (nfull < nb) s += q8_tail(&xa[m], w + r * rs, ws + r * rsb, K, nfull);
      out[m][r] = s;
    }
}

// Also writes q itself, and each block's per-lane −128·Σq when corr (0: skip it).
void quantize_act_q8(const float *x, size_t K, uint8_t *ab, uint8_t *sg, int8_t *q8out, int32_t *corr, float *s) {
  size_t nb = (K + Q8_BLOCK - 1) / Q8_BLOCK;
  for (size_t b = 0; b < nb; b++) {
    size_t k0 = b * Q8_BLOCK, k1 = k0 + Q8_BLOCK < K ? k0 + Q8_BLOCK : K;
    float amax = absmax(x + k0, (int)(k1 - k0)), id = amax > 0.0f ? 127.0f / amax : 0.0f;
    s[b] = amax / 127.0f;
    size_t k = k0;
    if (k1 - k0 == Q8_BLOCK) {
      f4 idv = splat(id);
      for (int h = 0; h < 2; h++, k += 16) {
        v128_t q8 = quant16(x + k, idv);
        st(ab + k, wasm_i8x16_abs(q8));
        st(sg + k, wasm_i8x16_shr(q8, 7));
        st(q8out + k, q8);
      }
    }
    for (; k < k1; k++) {
      float q = __builtin_nearbyintf(x[k] * id);
      q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
      int32_t qi = (int32_t)q;
      ab[k] = (uint8_t)(qi < 0 ? -qi : qi);
      sg[k] = qi < 0 ? 0xff : 0;
      q8out[k] = (int8_t)qi;
    }
    if (corr) {  // lane j of a full block's dot products covers bytes 4j..4j+3 of each 16-byte half
      for (int j = 0; j < 4; j++) {
        int32_t sum = 0;
        for (size_t kk = k0 + 4 * (size_t)j; kk < k1; kk += 16)
          for (size_t i = kk; i < kk + 4 && i < k1; i++) sum += q8out[i];
        corr[4 * b + (size_t)j] = -128 * sum;
      }
    }
  }
}

// Activation permutations for the bf16 / f8 decoders (only the SIMD body; tails read x directly).
static void perm_rows(int dt, const float *x, size_t K, float *xp) {
  if (dt == DT_BF16) {
    for (size_t k = 0; k + 8 <= K; k += 8) {
      f4 a = ld(x + k), b = ld(x + k + 4);
      st(xp + k, wasm_i32x4_shuffle(a, b, 0, 2, 4, 6));
      st(xp + k + 4, wasm_i32x4_shuffle(a, b, 1, 3, 5, 7));
    }
  } else {
    for (size_t k = 0; k + 16 <= K; k += 16) {
      f4 a = ld(x + k), b = ld(x + k + 4), c = ld(x + k + 8), d = ld(x + k + 12);
      transpose4(&a, &b, &c, &d);
      st(xp + k, a);
      st(xp + k + 4, b);
      st(xp + k + 8, c);
      st(xp + k + 12, d);
    }
  }
}

// One function per dtype keeps each compiled body small enough for V8 to allocate registers well.
NOINLINE void dec_f32(int mr, int nr, const float *const *xr, const float *w, size_t K, size_t dr, float out[4][4]) {
#define CALL(A, B) dot_f32(A, B, xr, w, K, dr, out)
  DECODE_CASES(CALL)
#undef CALL
}
NOINLINE void dec_bf16(int mr, int nr, const float *const *xr, const float *const *xp, const uint16_t *w, size_t K,
                       size_t dr, float out[4][4]) {
#define CALL(A, B) dot_bf16(A, B, xr, xp, w, K, dr, out)
  DECODE_CASES(CALL)
#undef CALL
}
NOINLINE void dec_f8(int mr, int nr, const float *const *xr, const float *const *xp, const uint8_t *w, size_t K,
                     size_t dr, float scale, float out[4][4]) {
#define CALL(A, B) dot_f8(A, B, xr, xp, w, K, dr, scale, out)
  DECODE_CASES(CALL)
#undef CALL
}
NOINLINE void dec_q8(int mr, int nr, const QAct *qa, const int8_t *w, const float *ws, size_t K, size_t dr,
                     float out[4][4]) {
#define CALL(A, B) dot_q8(A, B, qa, w, ws, K, dr, out)
  DECODE_CASES(CALL)
#undef CALL
}
NOINLINE void dec_q8u(int mr, int nr, const QAct *qa, const int8_t *w, const float *ws, size_t K, size_t dr,
                      float out[4][4]) {
#define CALL(A, B) dot_q8u(A, B, qa, w, ws, K, dr, out)
  DECODE_CASES(CALL)
#undef CALL
}

// Rows n, n + dr, …, n + (nr − 1)·dr of W against mr activation rows.
static void dec_group(const WDesc *W, int mr, int nr, const float *const *xr, const float *const *xp,
                      const QAct *qa, size_t n, size_t dr, size_t K, float out[4][4]) {
  switch (W->dt) {
    case DT_F32: dec_f32(mr, nr, xr, (const float *)W->w + n * K, K, dr, out); break;
    case DT_BF16: dec_bf16(mr, nr, xr, xp, (const uint16_t *)W->w + n * K, K, dr, out); break;
    case DT_F8E4M3:
      dec_f8(mr, nr, xr, xp, (const uint8_t *)W->w + n * K, K, dr, W->qs ? 1.0f : W->scale, out);
      if (W->qs)  // per-row scales (block scales expanded to rows by the backend)
        for (int m = 0; m < mr; m++)
          for (int r = 0; r < nr; r++) out[m][r] *= W->qs[n + (size_t)r * dr];
      break;
    case DT_Q8: {
      size_t nb = (K + Q8_BLOCK - 1) / Q8_BLOCK;
      if (qa[0].corr) dec_q8u(mr, nr, qa, (const int8_t *)W->w + n * K, W->qs + n * nb, K, dr, out);
      else dec_q8(mr, nr, qa, (const int8_t *)W->w + n * K, W->qs + n * nb, K, dr, out);
      break;
    }
  }
}

// y[:, n + r·dr] for r < nr, every activation row (groups of ≤ 4).
static void dec_rows(const WDesc *W, int M, const float *const *xr, const float *const *xp, const QAct *qa, size_t n,
                     int nr, size_t dr, size_t K, float *y, size_t ldy) {
  for (int mg = 0; mg < M; mg += 4) {
    int mr = M - mg < 4 ? M - mg : 4;
    float out[4][4];
    dec_group(W, mr, nr, xr + mg, xp + mg, qa + mg, n, dr, K, out);
    for (int m = 0; m < mr; m++)
      for (int r = 0; r < nr; r++) y[(size_t)(mg + m) * ldy + n + (size_t)r * dr] = out[m][r];
  }
}

// q8 decode activations in one buffer, q8_act_bytes(K) bytes a row: |q|, the sign mask and q [qk] each, the block
// scales [nb] and, where the u8 product is on, the per-lane corrections [4·nb] (QAct).
INLINE size_t q8_act_stride(size_t K) {
  size_t qk = (K + 15) & ~(size_t)15, nb = (K + Q8_BLOCK - 1) / Q8_BLOCK;
  return 3 * qk + ((4 * nb + 15) & ~(size_t)15) + 16 * nb;
}
EXPORT(q8_act_bytes)
int q8_act_bytes(int K) { return (int)q8_act_stride((size_t)K); }

INLINE QAct q8_act_at(const uint8_t *buf, size_t K, size_t row) {
  size_t qk = (K + 15) & ~(size_t)15, nb = (K + Q8_BLOCK - 1) / Q8_BLOCK;
  const uint8_t *p = buf + row * q8_act_stride(K);
  const float *s = (const float *)(const void *)(p + 3 * qk);
  QAct a = {p, p + qk, (const int8_t *)(p + 2 * qk),
            q8_decode_u8_on() ? (const int32_t *)(const void *)(p + 3 * qk + ((4 * nb + 15) & ~(size_t)15)) : 0, s};
  return a;
}

// Rows [r0, r1) of x (ldx apart) quantised into rows r0.. of buf, once for all the threads of a decode matmul
// (each would otherwise quantise the rows again for every piece it takes).
EXPORT(q8_quantize)
void q8_quantize(const float *x, int ldx, int K, uint8_t *buf, int r0, int r1) {
  for (int m = r0; m < r1; m++) {
    QAct a = q8_act_at(buf, (size_t)K, (size_t)m);
    quantize_act_q8(x + (size_t)m * (size_t)ldx, (size_t)K, (uint8_t *)a.ab, (uint8_t *)a.sg, (int8_t *)a.q,
                    (int32_t *)a.corr, (float *)a.s);
  }
}

// Output rows [n0, n1) of a decode step. Fewer activation rows → more W rows per step (MR·NR ≤ 8 accumulators).
// Rows beyond 4 form a second group that re-reads the same W rows from L1 instead of memory.
// The nrmax rows of a step are q rows apart, not adjacent: each of the nrmax streams then reads its rows in
// order, sequential in memory. Adjacent rows of 1–2 KiB (q8, f8, bf16 at K = 1024) would put nrmax interleaved
// streams in one 4 KiB page, which the hardware prefetcher (one stream per page) does not follow: measured
// 4.5 → 9 GB/s per thread for the q8 lm head. A row's result does not depend on its group.
static void dec_all(const WDesc *W, int M, const float *const *xr, const float *const *xp, const QAct *qa, size_t K,
                    float *y, size_t ldy, int n0, int n1) {
  int nrmax = M <= 2 ? 4 : 2;
  int q = (n1 - n0) / nrmax, tail = n0 + q * nrmax;
  for (int i = 0; i < q; i++) dec_rows(W, M, xr, xp, qa, (size_t)(n0 + i), nrmax, (size_t)q, K, y, ldy);
  for (int n = tail; n < n1; n++) dec_rows(W, M, xr, xp, qa, (size_t)n, 1, 0, K, y, ldy);
}

static void mm_decode(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
                      size_t K, int n0, int n1) {
  const float *xr[DECODE_MAX_M];
  for (int m = 0; m < M; m++) xr[m] = x + (xidx ? (size_t)xidx[m] : (size_t)m) * ldx;
  // Per-call activation copies on the stack: permuted f32 rows (bf16/f8) or int8 rows (q8).
  int perm = W->dt == DT_BF16 || W->dt == DT_F8E4M3;
  size_t pk = perm ? (K + 15) & ~(size_t)15 : 4;
  float xpbuf[M * pk] __attribute__((aligned(16)));
  uint8_t qbuf[W->dt == DT_Q8 ? (size_t)M * q8_act_stride(K) : 16] __attribute__((aligned(16)));
  const float *xp[DECODE_MAX_M];
  QAct qa[DECODE_MAX_M];
  for (int m = 0; m < M; m++) {
    xp[m] = xpbuf + m * pk;
    if (perm) perm_rows(W->dt, xr[m], K, xpbuf + m * pk);
    if (W->dt == DT_Q8) {
      q8_quantize(xr[m], 0, (int)K, qbuf + (size_t)m * q8_act_stride(K), 0, 1);
      qa[m] = q8_act_at(qbuf, K, (size_t)m);
    }
  }
  dec_all(W, M, xr, xp, qa, K, y, ldy, n0, n1);
}

void mm_q8_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                     size_t ldy, int n0, int n1) {
  const float *none[DECODE_MAX_M] = {0};  // q8 reads only the quantised rows
  QAct qa[DECODE_MAX_M];
  for (int m = 0; m < M; m++) qa[m] = q8_act_at(xq, K, (size_t)(ridx ? ridx[m] : base + m));
  dec_all(W, M, none, none, qa, K, y, ldy, n0, n1);
}

// y[:, r0 .. r1) = x · Wᵀ for a q8 W and M ≤ 8 activation rows already quantised by q8_quantize into xq.
EXPORT(matmul_q8_act)
void matmul_q8_act(const uint8_t *xq, const void *w, const float *wqs, float *y, int M, int N, int K, int r0, int r1) {
  WDesc W = {w, wqs, 1.0f, DT_Q8};
  mm_q8_quantised(&W, xq, 0, 0, M, (size_t)K, y, (size_t)N, r0, r1);
}

void mm_core(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M, size_t K,
             int n0, int n1) {
  if (M <= 0 || n1 <= n0) return;
  // NVFP4 on int8 products: always in decode, in prefill as nvfp4_prefill_int8 says (gemm_nvfp4.c); else f32 panels.
  if (W->dt == DT_NVFP4 && K <= 16384 && (M <= DECODE_MAX_M || nvfp4_gemm_int8(M))) {
    mm_nvfp4(W, x, xidx, ldx, y, ldy, M, K, n0, n1);
    return;
  }
  if (W->dt == DT_Q4 && mm_q4(W, x, xidx, ldx, y, ldy, M, K, n0, n1)) return;
  // The decode path keeps per-call activation copies on the stack (≤ 8 rows × K): beyond K = 16384 use packing.
  if (M <= DECODE_MAX_M && K <= 16384) mm_decode(W, x, xidx, ldx, y, ldy, M, K, n0, n1);
  else if (W->dt == DT_Q8 && q8_gemm_usable()) mm_prefill_q8(W, x, xidx, ldx, y, ldy, M, K, n0, n1);
  else mm_prefill(W, x, xidx, ldx, y, ldy, M, K, n0, n1);
}

// ---------------------------------------------------------------- exports

// y[M, N] = x[M, K] · W[N, K]ᵀ, rows [r0, r1) of N. wdt: DT_*; wscale: f8 per-tensor scale; wqs: q8 block scales
// (q4: its f16 block scales), or for f8 (when non-zero) one scale per row of W, replacing wscale.
EXPORT(matmul)
void matmul(const float *x, const void *w, int wdt, float wscale, const float *wqs, float *y, int M, int N, int K,
            int r0, int r1) {
  WDesc W = {w, wqs, wscale, wdt};
  mm_core(&W, x, 0, (size_t)K, y, (size_t)N, M, (size_t)K, r0, r1);
}

// out[r, K] = W[ids ? ids[r] : r, :] dequantised to f32, rows [r0, r1): embedding lookup and weight dequant.
EXPORT(dequant_rows)
void dequant_rows(const void *w, int wdt, float wscale, const float *wqs, const int32_t *ids, float *out, int K,
                  int r0, int r1) {
  WDesc W = {w, wqs, wscale, wdt};
  for (int r = r0; r < r1; r++)
    decode_row(&W, (size_t)K, ids ? (size_t)ids[r] : (size_t)r, 0, K, out + (size_t)r * (size_t)K);
}

// Weight quantisation to q8, rows [r0, r1) of src [N, K]: q = round(w·127/amax) per 32-block, scale amax/127.
EXPORT(quantize_q8)
void quantize_q8(const float *src, int8_t *q, float *qs, int K, int r0, int r1) {
  size_t nb = ((size_t)K + Q8_BLOCK - 1) / Q8_BLOCK;
  for (int r = r0; r < r1; r++) {
    const float *x = src + (size_t)r * (size_t)K;
    int8_t *qr = q + (size_t)r * (size_t)K;
    for (size_t b = 0; b < nb; b++) {
      size_t k0 = b * Q8_BLOCK, k1 = k0 + Q8_BLOCK < (size_t)K ? k0 + Q8_BLOCK : (size_t)K;
      float amax = absmax(x + k0, (int)(k1 - k0)), id = amax > 0.0f ? 127.0f / amax : 0.0f;
      qs[(size_t)r * nb + b] = amax / 127.0f;
      for (size_t k = k0; k < k1; k++) {
        float v = __builtin_nearbyintf(x[k] * id);
        qr[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
      }
    }
  }
}

// Elementwise dtype conversions over [r0, r1) elements (weights loading, bf16 caches).
EXPORT(f32_to_bf16_n)
void f32_to_bf16_n(const float *src, uint16_t *dst, int r0, int r1) {
  for (int i = r0; i < r1; i++) dst[i] = f32_to_bf16(src[i]);
}
EXPORT(bf16_to_f32_n)
void bf16_to_f32_n(const uint16_t *src, float *dst, int r0, int r1) {
  for (int i = r0; i < r1; i++) dst[i] = bf16_to_f32(src[i]);
}
