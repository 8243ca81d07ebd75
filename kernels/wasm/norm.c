// Row-wise and elementwise kernels: rms_norm, softmax, add/mul/scale, swiglu, gelu (erf), strided row copies.
// Row kernels take [r0, r1) over rows; elementwise kernels take [r0, r1) over elements.
#include "common.h"

// y[r] = x[r] · rsqrt(mean(x[r]²) + eps) · w (w may be 0: no weight). In place when y == x. Sum of squares in f32,
// as transformers computes it; ldx/ldy are row strides so a slice of a wider row can be normalised (c_kv in kv_a).
EXPORT(rms_norm)
void rms_norm(const float *x, int ldx, const float *w, float *y, int ldy, int D, float eps, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *xr = x + (size_t)r * (size_t)ldx;
    float *yr = y + (size_t)r * (size_t)ldy;
    f4 a0 = splat(0.0f), a1 = splat(0.0f);
    int k = 0;
    for (; k + 8 <= D; k += 8) {
      f4 v0 = ld(xr + k), v1 = ld(xr + k + 4);
      a0 = madd(v0, v0, a0);
      a1 = madd(v1, v1, a1);
    }
    float ss = hsum(wasm_f32x4_add(a0, a1));
    for (; k < D; k++) ss += xr[k] * xr[k];
    float inv = 1.0f / __builtin_sqrtf(ss / (float)D + eps);
    f4 iv = splat(inv);
    k = 0;
    for (; k + 4 <= D; k += 4) {
      f4 v = wasm_f32x4_mul(ld(xr + k), iv);
      st(yr + k, w ? wasm_f32x4_mul(v, ld(w + k)) : v);
    }
    for (; k < D; k++) yr[k] = w ? (xr[k] * inv) * w[k] : xr[k] * inv;
  }
}

// y[r] = softmax(scale · x[r]) over D, f32 with max subtraction. In place allowed.
EXPORT(softmax)
void softmax(const float *x, int ldx, float *y, int ldy, int D, float scale, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *xr = x + (size_t)r * (size_t)ldx;
    float *yr = y + (size_t)r * (size_t)ldy;
    float mx = -__builtin_inff();
    for (int k = 0; k < D; k++) mx = xr[k] * scale > mx ? xr[k] * scale : mx;
    f4 sv = splat(scale), mv = splat(mx), acc = splat(0.0f);
    float sum = 0.0f;
    int k = 0;
    for (; k + 4 <= D; k += 4) {
      f4 e = exp4(wasm_f32x4_sub(wasm_f32x4_mul(ld(xr + k), sv), mv));
      st(yr + k, e);
      acc = wasm_f32x4_add(acc, e);
    }
    for (; k < D; k++) {
      float e = expf_(xr[k] * scale - mx);
      yr[k] = e;
      sum += e;
    }
    sum += hsum(acc);
    float inv = 1.0f / sum;
    for (k = 0; k < D; k++) yr[k] *= inv;
  }
}

EXPORT(add)
void add(const float *a, const float *b, float *y, int r0, int r1) {
  int i = r0;
  for (; i + 4 <= r1; i += 4) st(y + i, wasm_f32x4_add(ld(a + i), ld(b + i)));
  for (; i < r1; i++) y[i] = a[i] + b[i];
}

EXPORT(mul)
void mul(const float *a, const float *b, float *y, int r0, int r1) {
  int i = r0;
  for (; i + 4 <= r1; i += 4) st(y + i, wasm_f32x4_mul(ld(a + i), ld(b + i)));
  for (; i < r1; i++) y[i] = a[i] * b[i];
}

// y = a · s (+ b when b ≠ 0): scaling and scaled residual adds.
EXPORT(scale_add)
void scale_add(const float *a, float s, const float *b, float *y, int r0, int r1) {
  int i = r0;
  f4 sv = splat(s);
  for (; i + 4 <= r1; i += 4) {
    f4 v = wasm_f32x4_mul(ld(a + i), sv);
    st(y + i, b ? wasm_f32x4_add(v, ld(b + i)) : v);
  }
  for (; i < r1; i++) y[i] = b ? a[i] * s + b[i] : a[i] * s;
}

INLINE f4 silu4(f4 g) {
  return wasm_f32x4_div(g, wasm_f32x4_add(splat(1.0f), exp4(wasm_f32x4_neg(g))));
}

void swiglu_row(const float *g, const float *u, float *y, int F) {
  int k = 0;
  for (; k + 4 <= F; k += 4) st(y + k, wasm_f32x4_mul(silu4(ld(g + k)), ld(u + k)));
  for (; k < F; k++) y[k] = g[k] / (1.0f + expf_(-g[k])) * u[k];
}

// y[r] = silu(g[r]) · u[r] over F, rows [r0, r1); strides let g and u be the two halves of a fused gate_up row.
EXPORT(swiglu)
void swiglu(const float *g, int ldg, const float *u, int ldu, float *y, int ldy, int F, int r0, int r1) {
  for (int r = r0; r < r1; r++)
    swiglu_row(g + (size_t)r * (size_t)ldg, u + (size_t)r * (size_t)ldu, y + (size_t)r * (size_t)ldy, F);
}

// gelu(x) = x·Φ(x) with Φ through erfc (Abramowitz–Stegun 7.1.26, |Δerfc| ≤ 1.5e-7): computing the tail term
// directly avoids the cancellation of 1 + erf for negative x. |Δgelu| ≲ 1e-7·|x|.
INLINE f4 gelu4(f4 x) {
  f4 z = wasm_f32x4_mul(wasm_f32x4_abs(x), splat(0.70710678118654752f));
  f4 t = wasm_f32x4_div(splat(1.0f), wasm_f32x4_add(splat(1.0f), wasm_f32x4_mul(z, splat(0.3275911f))));
  f4 p = splat(1.061405429f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(-1.453152027f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(1.421413741f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(-0.284496736f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), splat(0.254829592f));
  f4 erfc = wasm_f32x4_mul(wasm_f32x4_mul(p, t), exp4(wasm_f32x4_neg(wasm_f32x4_mul(z, z))));
  f4 tail = wasm_f32x4_mul(wasm_f32x4_mul(splat(0.5f), x), erfc);  // x·(1−Φ(|x|)) up to sign
  return wasm_v128_bitselect(tail, wasm_f32x4_sub(x, tail), wasm_f32x4_lt(x, splat(0.0f)));
}

EXPORT(gelu)
void gelu(const float *x, float *y, int r0, int r1) {
  int i = r0;
  for (; i + 4 <= r1; i += 4) st(y + i, gelu4(ld(x + i)));
  for (; i < r1; i++) y[i] = wasm_f32x4_extract_lane(gelu4(splat(x[i])), 0);
}

// dst[r·ldd .. +bytes) = src[i·lds .. +bytes) with i = idx ? idx[r] : r, rows [r0, r1); strides in bytes. Serves
// slice, concat, gather_rows and reshape for any element type (the backend checks idx bounds first).
EXPORT(copy_rows)
void copy_rows(const uint8_t *src, int lds, const int32_t *idx, uint8_t *dst, int ldd, int bytes, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    size_t i = idx ? (size_t)idx[r] : (size_t)r;
    __builtin_memcpy(dst + (size_t)r * (size_t)ldd, src + i * (size_t)lds, (size_t)bytes);
  }
}
