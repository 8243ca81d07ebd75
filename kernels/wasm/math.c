// Scalar double-precision math without libm. Used where a kernel needs an accurate value once per token or pair
// (rope angles up to ~1e6 rad, the llama-4 log scale), never in inner loops.
#include "common.h"

typedef union { double d; uint64_t u; } D64;

static double ldexp_int(double x, int k) {
  // x · 2^k for the small |k| that exp range reduction produces; two steps keep subnormal results right.
  while (k > 1000) { x *= 0x1p1000; k -= 1000; }
  while (k < -1000) { x *= 0x1p-1000; k += 1000; }
  D64 s = {.u = (uint64_t)(k + 1023) << 52};
  return x * s.d;
}

double kd_exp(double x) {
  if (x != x) return x;
  if (x > 709.78) return 1.0 / 0.0;
  if (x < -745.2) return 0.0;
  // x = k·ln2 + r, |r| ≤ ln2/2; Taylor to degree 13 leaves a relative error below 1e-17.
  double k = __builtin_nearbyint(x * 1.4426950408889634);
  double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;
  static const double inv_fact[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                      1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                                      1.0 / 24.0,        1.0 / 6.0,        0.5,             1.0,
                                      1.0};
  for (int i = 0; i < 13; i++) p = p * r + inv_fact[i];
  return ldexp_int(p, (int)k);
}

double kd_log(double x) {
  if (x != x || x < 0) return 0.0 / 0.0;
  if (x == 0) return -1.0 / 0.0;
  if (x == 1.0 / 0.0) return x;
  D64 v = {.d = x};
  int e = (int)((v.u >> 52) & 0x7ff);
  if (e == 0) {  // subnormal: normalise first
    v.d = x * 0x1p54;
    e = (int)((v.u >> 52) & 0x7ff) - 54;
  }
  e -= 1023;
  v.u = (v.u & 0x000fffffffffffffull) | 0x3ff0000000000000ull;  // m in [1, 2)
  double m = v.d;
  if (m > 1.4142135623730951) { m *= 0.5; e += 1; }
  // log m = 2·atanh(s), s = (m−1)/(m+1), |s| ≤ 0.1716: the odd series converges to 1e-17 in 14 terms.
  double s = (m - 1.0) / (m + 1.0), s2 = s * s, sum = 0.0;
  for (int i = 27; i >= 1; i -= 2) sum = sum * s2 + 1.0 / i;
  return e * 6.93147180559945286227e-01 + 2.0 * s * sum;
}

void kd_sincos(double x, double *s, double *c) {
  // Cody–Waite reduction by π/2 with a three-part constant: exact for |x| < 2^20·π/2 (positions up to ~1.6M at
  // θ = 1), then Taylor on |r| ≤ π/4 (degree 21/20, error below 1e-18).
  double k = __builtin_nearbyint(x * 6.36619772367581382433e-01);
  double r = x - k * 1.57079632673412561417e+00;
  r -= k * 6.07710050630396597660e-11;
  r -= k * 2.02226624871116645580e-21;
  double r2 = r * r, sn = 0.0, cs = 0.0;
  for (int n = 10; n >= 0; n--) {
    // sin: Σ (−1)^n r^(2n+1)/(2n+1)!, cos: Σ (−1)^n r^(2n)/(2n)!, evaluated by Horner from the top term.
    sn = 1.0 - sn * r2 / ((2.0 * n + 2.0) * (2.0 * n + 3.0));
    cs = 1.0 - cs * r2 / ((2.0 * n + 1.0) * (2.0 * n + 2.0));
  }
  sn *= r;
  int q = (int)((int64_t)k & 3);
  double a = sn, b = cs;
  switch (q) {
    case 0: *s = a; *c = b; break;
    case 1: *s = b; *c = -a; break;
    case 2: *s = -a; *c = -b; break;
    default: *s = -b; *c = a; break;
  }
}
