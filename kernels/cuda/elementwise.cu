// Elementwise kernels, one thread per output element (grid ⌈n / 256⌉ × 256): add, mul, swiglu, row_scale
// (attn_temperature), gelu, rope. Semantics: ops/<op>.ts; parameter words as in kernels/wgsl/elementwise.ts.
#include "common.cuh"

// p0 n; ptr0 a, ptr1 b, ptr2 out.
KERNEL(add) {
  u32 i = flat();
  if (i < a.p[0]) ptr<float>(a, 2)[i] = ptr<const float>(a, 0)[i] + ptr<const float>(a, 1)[i];
}
KERNEL(mul) {
  u32 i = flat();
  if (i < a.p[0]) ptr<float>(a, 2)[i] = ptr<const float>(a, 0)[i] * ptr<const float>(a, 1)[i];
}

// out[r, c] = silu(x[r, c]) · x[r, f + c]. p0 n (rows · f), p1 f; ptr0 x [rows, 2f], ptr1 out.
KERNEL(swiglu) {
  u32 i = flat();
  if (i >= a.p[0]) return;
  u32 f = a.p[1], r = i / f, c = i - r * f;
  const float *x = ptr<const float>(a, 0);
  float g = x[r * 2 * f + c];
  ptr<float>(a, 1)[i] = g / (1.0f + expf(-g)) * x[r * 2 * f + f + c];
}

// out[i] = x[i] · s[i / width]. p0 n, p1 width; ptr0 x, ptr1 s, ptr2 out.
KERNEL(row_scale) {
  u32 i = flat();
  if (i < a.p[0]) ptr<float>(a, 2)[i] = ptr<const float>(a, 0)[i] * ptr<const float>(a, 1)[i / a.p[1]];
}

// gelu with erf from Abramowitz & Stegun 7.1.26 (the webgpu kernel's, |Δerf| ≤ 1.5e-7). p0 n; ptr0 x, ptr1 out.
KERNEL(gelu) {
  u32 i = flat();
  if (i >= a.p[0]) return;
  float v = ptr<const float>(a, 0)[i], x = v * 0.70710678118654752f, ax = fabsf(x);
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t +
                    0.254829592f) * t * expf(-ax * ax);
  ptr<float>(a, 1)[i] = 0.5f * v * (1.0f + (x >= 0.0f ? y : -y));
}

// Rotates pairs (x[2p], x[2p+1]) by the host-computed table: cos [T, half] then sin [T, half] (the reference's
// f64 trig of the f32 angle, times the magnitude). p0 pairs (T · heads · half), p1 heads, p2 half, p3 T;
// ptr0 x, ptr1 table, ptr2 out.
KERNEL(rope) {
  u32 p = flat();
  if (p >= a.p[0]) return;
  u32 half = a.p[2], t = p / (a.p[1] * half), i = p % half;
  const float *cs = ptr<const float>(a, 1), *x = ptr<const float>(a, 0);
  float c = cs[t * half + i], s = cs[a.p[3] * half + t * half + i];
  float u = x[2 * p], v = x[2 * p + 1];
  float *o = ptr<float>(a, 2);
  o[2 * p] = u * c - v * s;
  o[2 * p + 1] = u * s + v * c;
}
