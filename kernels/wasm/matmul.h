// Matmul internals shared with attention.c and moe.c.
#pragma once
#include "common.h"

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
void mm_prefill_q8(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
                   size_t K, int n0, int n1);
