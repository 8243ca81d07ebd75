// Rotary embedding on interleaved pairs (2i, 2i+1), in place, rows [r0, r1) = tokens.
#include "common.h"

// x[t, h·ldh + off + 2i .. +1] rotated by angle pos·θ_i for h < nh, i < dr/2. The angle is the f32 product (as
// PyTorch forms it); its sine and cosine are evaluated in double, so they are the correctly rounded f32 values
// even at ~1e6 rad. mag multiplies cos and sin (the YaRN magnitude, 1.0 for Mistral Small 4).
// Positions: pos[t·posStride]; pairs i ≥ split use pos[t·posStride + 1] instead (2-D vision rope: rows, then
// columns); text passes posStride 1 and split = dr/2.
// Llama-4 query temperature: when beta ≠ 0 the first nh·ldh values of the row are multiplied by
// 1 + beta·ln(1 + floor(p / orig)) with p the first position.
EXPORT(rope)
void rope(float *x, int ldx, int nh, int ldh, int off, int dr, const float *theta, const int32_t *pos, int posStride,
          int split, float mag, float beta, int orig, int r0, int r1) {
  int np = dr / 2;
  float cs[np * 2];
  for (int t = r0; t < r1; t++) {
    float *row = x + (size_t)t * (size_t)ldx;
    int32_t p0 = pos[(size_t)t * (size_t)posStride];
    int32_t p1 = split < np ? pos[(size_t)t * (size_t)posStride + 1] : p0;
    for (int i = 0; i < np; i++) {
      float ang = (float)(i < split ? p0 : p1) * theta[i];
      double s, c;
      kd_sincos((double)ang, &s, &c);
      cs[2 * i] = (float)c * mag;
      cs[2 * i + 1] = (float)s * mag;
    }
    for (int h = 0; h < nh; h++) {
      float *v = row + (size_t)h * (size_t)ldh + off;
      int i = 0;
      for (; i + 2 <= np; i += 2) {
        // Two pairs per vector: [x0 x1 x2 x3] → [x0·c0 − x1·s0, x0·s0 + x1·c0, …].
        f4 xv = ld(v + 2 * i), csv = ld(cs + 2 * i);
        f4 c = wasm_i32x4_shuffle(csv, csv, 0, 0, 2, 2), s = wasm_i32x4_shuffle(csv, csv, 1, 1, 3, 3);
        f4 sw = wasm_i32x4_shuffle(xv, xv, 1, 0, 3, 2);
        f4 sgn = wasm_f32x4_make(-1.0f, 1.0f, -1.0f, 1.0f);
        st(v + 2 * i, wasm_f32x4_add(wasm_f32x4_mul(xv, c), wasm_f32x4_mul(wasm_f32x4_mul(sw, s), sgn)));
      }
      for (; i < np; i++) {
        float a = v[2 * i], b = v[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
      }
    }
    if (beta != 0.0f && orig > 0 && p0 >= orig) {
      float sc = (float)(1.0 + (double)beta * kd_log(1.0 + (double)(p0 / orig)));
      int n = nh * ldh, k = 0;
      f4 sv = splat(sc);
      for (; k + 4 <= n; k += 4) st(row + k, wasm_f32x4_mul(ld(row + k), sv));
      for (; k < n; k++) row[k] *= sc;
    }
  }
}
