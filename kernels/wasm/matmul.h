// Matmul internals shared with attention.c and moe.c.
#pragma once
#include "common.h"

// c[0, nc) (+)= the 8 values lo ‖ hi (nc ≤ 8).
INLINE void store8(float *c, f4 lo, f4 hi, int nc, int acc) {
  if (nc == 8) {
    st(c, acc ? wasm_f32x4_add(lo, ld(c)) : lo);
    st(c + 4, acc ? wasm_f32x4_add(hi, ld(c + 4)) : hi);
  } else {
    float t[8];
    st(t, lo);
    st(t + 4, hi);
    for (int j = 0; j < nc; j++) c[j] = acc ? c[j] + t[j] : t[j];
  }
}

// max |x[i]| over [0, n).
INLINE float absmax(const float *x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; i++) {
    float a = __builtin_fabsf(x[i]);
    m = a > m ? a : m;
  }
  return m;
}

// 16 activations x[0, 16) → int8 round(x·id), clamped to ±127 (never −128, so |q| fits in 7 bits): the activation
// quantisation of the q8 decode and prefill paths.
INLINE v128_t quant16(const float *x, f4 id) {
  v128_t q[4];
  for (int j = 0; j < 4; j++) q[j] = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_nearest(wasm_f32x4_mul(ld(x + 4 * j), id)));
  v128_t q8 = wasm_i8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(q[0], q[1]), wasm_i16x8_narrow_i32x4(q[2], q[3]));
  return wasm_i8x16_max(q8, wasm_i8x16_splat(-127));
}

// y[m*ldy + n] = Σ_k x[row(m)*ldx + k] · W[n, k] for n in [n0, n1); row(m) = xidx ? xidx[m] : m.
void mm_core(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M, size_t K,
             int n0, int n1);
// W[n, k0 .. k0+len) → out as f32 (dequantised).
void decode_row(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out);
// C[mr, 0..nc) (+)= A[mr, 0..kc) · P[kc, 8] with P's row stride ldp (mr ≤ 4, nc ≤ 8).
void ukr(int mr, const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int nc, int acc);
// C[mr, 0..4) (+)= A[mr, 0..kc) · P[kc, 4] (every C row holds 4 writable floats).
void ukr_n4(int mr, const float *const *a, const float *P, size_t ldp, int kc, float *const *c, int acc);
// nr ≤ 8 rows of R (row stride ldr) → P[kc][8], zero-padded.
void pack_panel(const float *R, int ldr, int nr, int kc, float *P);
// gemm_q8.c: whether this host runs the int8 prefill path and the u8 decode products (both probed once), and the
// prefill path (M > 8, q8 weights).
int q8_gemm_usable(void);
int q8_decode_u8_on(void);
// gemm_nvfp4.c: NVFP4 rows as f32 (the reference's values), and the int8-product matmul (any M).
void nvfp4_decode_row(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out);
int nvfp4_gemm_int8(int M);
void mm_nvfp4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
              size_t K, int n0, int n1);
// The q8 decode (M ≤ 8) on activation rows q8_quantize wrote into xq, as mm_q4_quantised.
void mm_q8_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                     size_t ldy, int n0, int n1);
// The NVFP4 product (M ≤ 8) on activation rows nvfp4_quantize wrote into xq, as mm_q4_quantised.
void mm_nvfp4_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                        size_t ldy, int n0, int n1);
void mm_prefill_q8(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
                   size_t K, int n0, int n1);
// One call per (MR, NR) of a decode tile (matmul.c per dtype, gemm_q4.c): the switch makes both constant so the
// accumulators live in registers. Only the shapes the decode paths ask for exist (NR = 4 when M ≤ 2, else 2; NR = 1
// for leftover rows) to keep code small: V8 compiles the optimised tier in the background, and smaller functions get
// there sooner.
#define DECODE_CASES(CALL)             \
  switch (mr * 8 + nr) {               \
    case 4 * 8 + 2: CALL(4, 2); break; \
    case 4 * 8 + 1: CALL(4, 1); break; \
    case 3 * 8 + 2: CALL(3, 2); break; \
    case 3 * 8 + 1: CALL(3, 1); break; \
    case 2 * 8 + 4: CALL(2, 4); break; \
    case 2 * 8 + 2: CALL(2, 2); break; \
    case 2 * 8 + 1: CALL(2, 1); break; \
    case 1 * 8 + 4: CALL(1, 4); break; \
    case 1 * 8 + 2: CALL(1, 2); break; \
    default: CALL(1, 1); break;        \
  }

// gemm_q4.c: W[n, k0 .. k0+len) of a q4 weight as f32, and the q4 matmul where it has its own kernels (returns 1:
// decode shapes; prefill with int8 activations) — else 0, and mm_core's f32 prefill runs on decode_row_q4.
void decode_row_q4(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out);
int mm_q4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M, size_t K,
          int n0, int n1);
// The q4 decode (M ≤ 8) on activation rows q4_quantize wrote into xq: row m is xq's row ridx[m] (ridx = 0: base + m).
void mm_q4_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                     size_t ldy, int n0, int n1);
