// Prefill-sized matmuls (M > 8) with q8 weights on int8 dot products, as llama.cpp's Q8_0 does: each activation row
// is quantised per 32-block exactly as the decode path does (q = round(x·127/amax), |q| ≤ 127, scale amax/127), so
// prefill and decode compute the same integer products. One int8 dot does 16 multiply-adds where an f32 FMA does 4.
//
// The product runs on i32x4.relaxed_dot_i8x16_i7x16_add with the activations as the unsigned operand, offset by 128
// (a = q + 128 ∈ [1, 255]): Σ w·q = Σ w·a − 128·Σ w, the second sum taken once per weight block. That needs a host
// whose relaxed dot multiplies that operand as u8 without saturating (x86 with AVX-VNNI: vpdpbusd). The spec leaves
// the high bit implementation-defined, so the host is probed at first use; elsewhere (pmaddubsw saturates, ARM's
// sdot reads it signed) mm_core keeps the f32 path. Results are exact integer sums scaled in f32 either way.
//
// Layout: weight rows are packed in groups of 4 so one 16-byte vector holds 4 consecutive k of each row; the dot
// against 4 activation bytes broadcast to every lane then yields one partial sum per output row, and a register
// tile of 2 activation rows × 8 output rows needs no horizontal sums.
#include "matmul.h"

#define GK 1024  // K block: the packed panel (8 rows × GK bytes) stays in L1
#define GM 64    // M block: quantised activations (GM × GK bytes) stay in L2 while the panels stream past

static volatile int32_t probe_a = -128, probe_b = 255;
static int32_t mode = -1;         // prefill: −1 not probed yet, 0 f32 path, 1 int8 path
static int32_t decode_mode = -1;  // decode (matmul.c dot_q8u): −1 not probed yet, 0 sign transfer, 1 u8 weights

static int host_dot_is_u8(void) {
  v128_t b = wasm_i8x16_splat((int8_t)probe_b), zero = wasm_i32x4_splat(0);
  v128_t lo = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(wasm_i8x16_splat((int8_t)probe_a), b, zero);
  v128_t hi = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(wasm_i8x16_splat((int8_t)(-probe_a - 1)), b, zero);
  return wasm_i32x4_extract_lane(lo, 0) == 4 * -128 * 255 && wasm_i32x4_extract_lane(hi, 3) == 4 * 127 * 255;
}

// want = 0: always the f32 path; 1: the int8 path where the host allows it. Returns whether the int8 path is on.
// The mode lives in linear memory, so it holds for every thread.
EXPORT(q8_prefill_int8)
int q8_prefill_int8(int want) {
  mode = want && host_dot_is_u8();
  return mode;
}

int q8_gemm_usable(void) {
  if (mode < 0) mode = host_dot_is_u8();
  return mode;
}

// The decode kernels' q8 products (M ≤ 8) with the weight as the u8 operand (1, where the host allows) or with the
// activation's sign moved onto the weight (0). Bit-identical results; returns whether the u8 form is on.
EXPORT(q8_decode_u8)
int q8_decode_u8(int want) {
  decode_mode = want && host_dot_is_u8();
  return decode_mode;
}

int q8_decode_u8_on(void) {
  if (decode_mode < 0) decode_mode = host_dot_is_u8();
  return decode_mode;
}

// Rows x[row(m)] for m in [0, mr), columns [k0, k0 + kc) → A[m][kcp] as q + 128, scales S[m][kcp/32]; columns past
// kc (kcp rounds kc up to 32) hold q = 0.
static void quantize_rows(const float *x, const int32_t *xidx, size_t ldx, int m0, int mr, size_t k0, int kc, int kcp,
                          uint8_t *A, float *S) {
  for (int m = 0; m < mr; m++) {
    const float *xr = x + (xidx ? (size_t)xidx[m0 + m] : (size_t)(m0 + m)) * ldx + k0;
    uint8_t *a = A + (size_t)m * (size_t)kcp;
    for (int b = 0; b < kcp / Q8_BLOCK; b++) {
      int c0 = b * Q8_BLOCK, c1 = c0 + Q8_BLOCK < kc ? c0 + Q8_BLOCK : kc;
      float amax = absmax(xr + c0, c1 - c0), id = amax > 0.0f ? 127.0f / amax : 0.0f;
      S[m * (kcp / Q8_BLOCK) + b] = amax / 127.0f;
      if (c1 - c0 == Q8_BLOCK) {
        f4 idv = splat(id);
        for (int c = c0; c < c1; c += 16)
          st(a + c, wasm_v128_xor(quant16(xr + c, idv), wasm_i8x16_splat((int8_t)0x80)));  // + 128 as u8
      } else {
        for (int c = c0; c < c0 + Q8_BLOCK; c++) {
          float q = c < c1 ? __builtin_nearbyintf(xr[c] * id) : 0.0f;
          q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
          a[c] = (uint8_t)((int32_t)q + 128);
        }
      }
    }
  }
}

// Weight rows [n, n + nr) (nr ≤ 8), columns [k0, k0 + kc) → P[step][group] (step = k/4, group = rows 4g..4g+3, one
// vector of 4 bytes per row), and per (block, group): bias −128·Σw (i32 lanes per row) and the row scales. Rows past
// nr and columns past kc are zero.
static void pack_weights(const WDesc *W, size_t K, int n, int nr, size_t k0, int kc, int kcp, v128_t *P,
                         v128_t *bias, f4 *ws) {
  const int8_t *w = (const int8_t *)W->w;
  const size_t nbK = (K + Q8_BLOCK - 1) / Q8_BLOCK;
  const v128_t ones = wasm_i8x16_splat(1), zero = wasm_i32x4_splat(0);
  for (int g = 0; g < 2; g++) {
    for (int c = 0; c < kcp; c += 16) {
      v128_t v[4];
      for (int i = 0; i < 4; i++) {
        int r = 4 * g + i;
        const int8_t *row = w + (size_t)(n + r) * K + k0;
        if (r >= nr) v[i] = zero;
        else if (c + 16 <= kc) v[i] = ld(row + c);
        else {
          int8_t t[16];
          for (int j = 0; j < 16; j++) t[j] = c + j < kc ? row[c + j] : 0;
          v[i] = ld(t);
        }
      }
      transpose4(&v[0], &v[1], &v[2], &v[3]);  // vector j: k c+4j .. c+4j+3 of each of the 4 rows
      for (int j = 0; j < 4; j++) P[(c / 4 + j) * 2 + g] = v[j];
    }
    for (int b = 0; b < kcp / Q8_BLOCK; b++) {
      v128_t s = zero;
      for (int j = 0; j < 8; j++) s = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(P[(b * 8 + j) * 2 + g], ones, s);
      bias[b * 2 + g] = wasm_i32x4_neg(wasm_i32x4_shl(s, 7));
      float sc[4];
      for (int i = 0; i < 4; i++) {
        int r = 4 * g + i;
        sc[i] = r < nr ? W->qs[(size_t)(n + r) * nbK + k0 / Q8_BLOCK + (size_t)b] : 0.0f;
      }
      ws[b * 2 + g] = ld(sc);
    }
  }
}

// y rows c0 (and c1 when mr = 2), columns 0 .. nc (+)= the tile of 2 activation rows × 8 weight rows over nblk
// blocks: per block the i32 sums start at the bias, take 8 dot steps, then scale into the f32 accumulators.
NOINLINE void ukr_q8(const uint8_t *a0, const uint8_t *a1, const float *s0, const float *s1, const v128_t *P,
                     const v128_t *bias, const f4 *ws, int nblk, float *c0, float *c1, int mr, int nc, int acc) {
  f4 y00 = splat(0.0f), y01 = y00, y10 = y00, y11 = y00;
  for (int b = 0; b < nblk; b++) {
    // Two chains per output vector (even and odd steps): the dot's latency would otherwise bound the loop.
    v128_t d00 = bias[2 * b], d01 = bias[2 * b + 1], d10 = d00, d11 = d01, zero = wasm_i32x4_splat(0);
    v128_t e00 = zero, e01 = zero, e10 = zero, e11 = zero;
    const v128_t *p = P + b * 16;
    const uint8_t *x0 = a0 + b * Q8_BLOCK, *x1 = a1 + b * Q8_BLOCK;
    for (int j = 0; j < 8; j += 2) {
      v128_t w0 = p[2 * j], w1 = p[2 * j + 1];
      v128_t u0 = wasm_v128_load32_splat(x0 + 4 * j), u1 = wasm_v128_load32_splat(x1 + 4 * j);
      d00 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w0, u0, d00);
      d01 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w1, u0, d01);
      d10 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w0, u1, d10);
      d11 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w1, u1, d11);
      w0 = p[2 * j + 2], w1 = p[2 * j + 3];
      u0 = wasm_v128_load32_splat(x0 + 4 * j + 4), u1 = wasm_v128_load32_splat(x1 + 4 * j + 4);
      e00 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w0, u0, e00);
      e01 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w1, u0, e01);
      e10 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w0, u1, e10);
      e11 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(w1, u1, e11);
    }
    d00 = wasm_i32x4_add(d00, e00);
    d01 = wasm_i32x4_add(d01, e01);
    d10 = wasm_i32x4_add(d10, e10);
    d11 = wasm_i32x4_add(d11, e11);
    f4 e0 = splat(s0[b]), e1 = splat(s1[b]);
    y00 = madd(wasm_f32x4_convert_i32x4(d00), wasm_f32x4_mul(ws[2 * b], e0), y00);
    y01 = madd(wasm_f32x4_convert_i32x4(d01), wasm_f32x4_mul(ws[2 * b + 1], e0), y01);
    y10 = madd(wasm_f32x4_convert_i32x4(d10), wasm_f32x4_mul(ws[2 * b], e1), y10);
    y11 = madd(wasm_f32x4_convert_i32x4(d11), wasm_f32x4_mul(ws[2 * b + 1], e1), y11);
  }
  store8(c0, y00, y01, nc, acc);
  if (mr == 2) store8(c1, y10, y11, nc, acc);
}

void mm_prefill_q8(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
                   size_t K, int n0, int n1) {
  uint8_t A[GM * GK] __attribute__((aligned(16)));
  float S[GM * (GK / Q8_BLOCK)];
  v128_t P[GK / 4 * 2], bias[GK / Q8_BLOCK * 2];
  f4 ws[GK / Q8_BLOCK * 2];
  for (int mb = 0; mb < M; mb += GM) {
    int mr = M - mb < GM ? M - mb : GM;
    for (size_t kb = 0; kb < K; kb += GK) {
      int kc = (int)(K - kb < GK ? K - kb : GK), kcp = (kc + Q8_BLOCK - 1) / Q8_BLOCK * Q8_BLOCK;
      int nblk = kcp / Q8_BLOCK;
      quantize_rows(x, xidx, ldx, mb, mr, kb, kc, kcp, A, S);
      for (int nb = n0; nb < n1; nb += 8) {
        int nc = n1 - nb < 8 ? n1 - nb : 8;
        pack_weights(W, K, nb, nc, kb, kc, kcp, P, bias, ws);
        for (int m = 0; m < mr; m += 2) {
          int r = mr - m < 2 ? mr - m : 2, m1 = r == 2 ? m + 1 : m;
          float *c0 = y + (size_t)(mb + m) * ldy + nb, *c1 = y + (size_t)(mb + m1) * ldy + nb;
          ukr_q8(A + (size_t)m * kcp, A + (size_t)m1 * kcp, S + m * nblk, S + m1 * nblk, P, bias, ws, nblk, c0, c1, r,
                 nc, kb > 0);
        }
      }
    }
  }
}
