// Shared helpers for the WASM SIMD kernels: exports, dtype codes, SIMD loads and decoders, math.
// Pointers are byte offsets in the one shared linear memory; sizes that can exceed 2^31 bytes use size_t. Both
// targets build from these sources (build.sh): wasm32 (pointers and size_t 32-bit) and wasm64 (memory64: pointers
// and size_t 64-bit, so element offsets must be formed in size_t, never in int). Params structs passed by pointer
// (MlaParams, MlaPrefillParams, MoeParams) keep C's natural layout on both: int32/float fields 4 bytes, pointers 4
// bytes in wasm32 and 8 (8-aligned) in wasm64; runtime/backends/wasm/module.ts (paramLayout) mirrors it.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))

// Weight dtype codes shared with runtime/backends/wasm/module.ts (keep in sync).
enum { DT_F32 = 0, DT_BF16 = 1, DT_F8E4M3 = 2, DT_Q8 = 3, DT_NVFP4 = 4, DT_Q4 = 5 };
// q8: int8 values [N, K] row-major, one f32 scale per 32 values along K (the last block of a row may be short).
#define Q8_BLOCK 32
// q4: 16 bytes per 32 values along K (a row padded to whole blocks), f16 scales [N, ceil(K/32)] (gemm_q4.c).
#define Q4_BLOCK 32

// A weight matrix W[N, K] in one of the dtypes above. scale: the per-tensor f8 scale (W = f8 · scale), unused for
// f8 when qs is set: then W[n] = f8 · qs[n] (block scales of fused or per-expert tensors expanded to rows). nvfp4
// (gemm_nvfp4.c): w holds each row's codes and block scales, scale (or qs[n]) the global scale, a divisor.
typedef struct {
  const void *w;
  const float *qs;  // q8 block scales [N, ceil(K/32)]; q4 the same as f16 (read as uint16_t); f8: 0 or per-row
                    // scales [N]; nvfp4: 0 or per-row globals
  float scale;
  int dt;
} WDesc;

typedef v128_t f4;

INLINE f4 splat(float x) { return wasm_f32x4_splat(x); }
// Splats the compiler cannot fold into a v128.const: V8 rebuilds a v128 constant at every use inside a loop (a scalar
// move, a move into SIMD and a shuffle: 2–3 SIMD ops), while a splat of a loaded value is hoisted out of the loop and
// kept in a register. opaque_byte holds 0; hot loops take their masks and rebiases from here.
extern int32_t opaque_byte;
INLINE v128_t splat_u8(uint8_t b) { return wasm_i8x16_splat((int8_t)(b | opaque_byte)); }
INLINE v128_t splat_u16(uint16_t h) { return wasm_i16x8_splat((int16_t)(h | opaque_byte)); }
INLINE v128_t splat_u32(uint32_t w) { return wasm_i32x4_splat((int32_t)(w | (uint32_t)opaque_byte)); }
INLINE f4 ld(const void *p) { return wasm_v128_load(p); }
INLINE void st(void *p, f4 v) { wasm_v128_store(p, v); }
INLINE float hsum(f4 v) {
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}
INLINE float hmax(f4 v) {
  v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}
// a*b + c; fused where the host has FMA (relaxed SIMD), which is why kernel results may differ from the reference
// in the last bits, and why every test compares with a normalised tolerance.
INLINE f4 madd(f4 a, f4 b, f4 c) { return wasm_f32x4_relaxed_madd(a, b, c); }

INLINE float bits2f(uint32_t u) {
  union { uint32_t u; float f; } c = {u};
  return c.f;
}
INLINE uint32_t f2bits(float f) {
  union { float f; uint32_t u; } c = {f};
  return c.u;
}

// ---- bf16 ----
INLINE float bf16_to_f32(uint16_t h) { return bits2f((uint32_t)h << 16); }
// Round to nearest even; NaN stays NaN (quiet bit forced).
INLINE uint16_t f32_to_bf16(float f) {
  uint32_t u = f2bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
// 8 bf16 → two f32x4 in natural order.
INLINE void bf16x8_dec(v128_t v, f4 *lo, f4 *hi) {
  *lo = wasm_i32x4_shl(wasm_u32x4_extend_low_u16x8(v), 16);
  *hi = wasm_i32x4_shl(wasm_u32x4_extend_high_u16x8(v), 16);
}

// ---- f8 e4m3 (fn: no infinities; 0x7f/0xff are NaN, which weights never hold, so they decode as ±480) ----
// The obvious decode, byte → f32 bit pattern with exponent e, then ·2^120, is exact but slow on x86: e4m3
// subnormals become f32 denormals, and every multiply with a denormal input takes a ~100-cycle microcode assist.
// So the decoders below rebias with integer adds, and only chunks holding a zero or subnormal byte (rare in real
// checkpoints; tested with 3 byte ops per 16 bytes) take the exact path with its extra float ops.
// Exact for every code, no denormal anywhere: the magnitude gets exponent e + 120 by an integer add, which is right
// for e ≥ 1; for e = 0 (and only then) that value n lies below 2^-6 and the true value is 2n − 2^-6, hence
// n + min(n − 2^-6, 0). The sign is OR-ed back last.
INLINE f4 f8_top_exact(v128_t t) {
  v128_t mag = wasm_v128_and(wasm_u32x4_shr(t, 4), wasm_i32x4_splat(0x07f00000));
  f4 n = wasm_i32x4_add(mag, wasm_i32x4_splat(120 << 23));
  f4 r = wasm_f32x4_add(n, wasm_f32x4_min(wasm_f32x4_sub(n, splat(0x1p-6f)), splat(0.0f)));
  return wasm_v128_or(r, wasm_v128_and(t, wasm_i32x4_splat((int32_t)0x80000000)));
}
// True when any of the 16 bytes has exponent 0 (zero or subnormal): those chunks take the exact path.
INLINE int f8_any_e0(v128_t v) {
  return wasm_v128_any_true(wasm_i8x16_eq(wasm_v128_and(v, splat_u8(0x78)), splat_u8(0)));
}
INLINE float f8_to_f32(uint8_t b) {
  return wasm_f32x4_extract_lane(f8_top_exact(wasm_i32x4_splat((int32_t)((uint32_t)b << 24))), 0);
}
// The two paths of f8x16_dec_perm (below): the exact one for any code, and the fast one, right only when no byte
// has exponent 0 (kernels that test several chunks at once call them directly).
INLINE void f8x16_dec_perm_exact(v128_t v, f4 d[4]) {
  d[0] = f8_top_exact(wasm_i32x4_shl(v, 24));
  d[1] = f8_top_exact(wasm_i32x4_shl(v, 16));
  d[2] = f8_top_exact(wasm_i32x4_shl(v, 8));
  d[3] = f8_top_exact(v);
}
INLINE void f8x16_dec_perm_fast(v128_t v, f4 d[4]) {
  v128_t m = splat_u16(0x87f0), b = splat_u16(120 << 7), hi = splat_u32(0xffff0000u);
  v128_t ev = wasm_i16x8_add(wasm_v128_and(wasm_i16x8_shr(wasm_i16x8_shl(v, 8), 4), m), b);  // bytes 0,2,..
  v128_t od = wasm_i16x8_add(wasm_v128_and(wasm_i16x8_shr(v, 4), m), b);                     // bytes 1,3,..
  d[0] = wasm_i32x4_shl(ev, 16);  // bytes 0, 4, 8, 12
  d[2] = wasm_v128_and(ev, hi);   // bytes 2, 6, 10, 14
  d[1] = wasm_i32x4_shl(od, 16);  // bytes 1, 5, 9, 13
  d[3] = wasm_v128_and(od, hi);   // bytes 3, 7, 11, 15
}
// 16 f8 → four f32x4, lane-permuted: d[j] holds elements {j, 4+j, 8+j, 12+j}. Decode kernels pair it with an
// activation permuted the same way (perm_rows). Fast path (no exponent-0 byte in the chunk): in 16-bit lanes the
// byte moves to the top (even bytes by a shift, odd ones by a mask), an arithmetic shift and mask give the bf16 bit
// pattern with exponent e, and +120 on the exponent rebiases it (exact for e ≥ 1, no float op at all); two more
// ops widen bf16 to f32. Chunks with a zero or subnormal byte use f8_top_exact.
INLINE void f8x16_dec_perm(v128_t v, f4 d[4]) {
  if (__builtin_expect(f8_any_e0(v), 0)) f8x16_dec_perm_exact(v, d);
  else f8x16_dec_perm_fast(v, d);
}
// 4×4 transpose: turns the permuted f8 decode into natural order (and back).
INLINE void transpose4(f4 *a, f4 *b, f4 *c, f4 *d) {
  f4 t0 = wasm_i32x4_shuffle(*a, *b, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(*c, *d, 0, 4, 1, 5);
  f4 t2 = wasm_i32x4_shuffle(*a, *b, 2, 6, 3, 7), t3 = wasm_i32x4_shuffle(*c, *d, 2, 6, 3, 7);
  *a = wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5);
  *b = wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7);
  *c = wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5);
  *d = wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7);
}
INLINE void f8x16_dec(v128_t v, f4 d[4]) {
  f8x16_dec_perm(v, d);
  transpose4(&d[0], &d[1], &d[2], &d[3]);
}

// ---- math ----
// exp for f32x4 (Cephes polynomial, ~1 ulp). Inputs below -87.3 give exactly 0 (so exp(-inf) = 0), inputs above 88
// are clamped (exp(88) ≈ 1.65e38), NaN propagates to the polynomial and stays NaN-ish; callers never pass NaN.
// The exponent n is an integer in [-126, 127] after the clamp, where the relaxed truncation agrees with the
// saturating one (which costs ~8 instructions on x86 against 1).
INLINE f4 exp4(f4 x) {
  f4 zero_mask = wasm_f32x4_lt(x, splat(-87.33f));
  x = wasm_f32x4_max(wasm_f32x4_min(x, splat(88.0f)), splat(-87.33f));
  f4 n = wasm_f32x4_nearest(wasm_f32x4_mul(x, splat(1.44269504088896341f)));
  f4 r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, splat(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, splat(-2.12194440e-4f)));
  f4 p = splat(1.9875691500e-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(1.3981999507e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(8.3334519073e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(4.1665795894e-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(1.6666665459e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(5.0000001201e-1f));
  p = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(p, r), r), r), splat(1.0f));
  v128_t e = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_relaxed_trunc_f32x4(n), wasm_i32x4_splat(127)), 23);
  return wasm_v128_andnot(wasm_f32x4_mul(p, e), zero_mask);
}
INLINE float expf_(float x) { return wasm_f32x4_extract_lane(exp4(splat(x)), 0); }

// Double-precision scalar helpers (rope angles, llama-4 scale): accuracy first, they run once per token/pair.
double kd_exp(double x);
double kd_log(double x);
void kd_sincos(double x, double *s, double *c);
