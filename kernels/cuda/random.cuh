// The preset weights' generator (weights/random_source.ts `fillUniformAt`, weights/codecs.ts encoders), written once
// for the device kernels (random.cu) and the host: tests/cuda_random_test.ts compiles this header with clang into a
// host library and checks it bit for bit against the TypeScript generator, so a device-made weight is the host's.
//
// Element i of a stream starting at `state`: a = state + (i + 1) · 0x6d2b79f5 (mod 2^32), mulberry32's output hash
// h of a, then f32(mean + (h − 2^31) · width) with width = std · √12 / 2^32 (computed by the host, passed as its f64
// bits): an f64 product and sum, each rounded to nearest even (no fused multiply-add: on the device the _rn
// intrinsics, on the host -ffp-contract=off), then one rounding to f32.
#pragma once
#include <stdint.h>

#ifdef __CUDACC__
#define RHD __host__ __device__ __forceinline__
#else
#define RHD static inline
#endif

RHD uint32_t rnd_hash(uint32_t state, uint64_t i) {
  uint32_t t = state + (uint32_t)(i + 1) * 0x6d2b79f5u;
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return t ^ (t >> 14);
}

RHD float rnd_value(uint32_t state, uint64_t i, double mean, double width) {
  double x = (double)rnd_hash(state, i) - 2147483648.0; // exact
#if defined(__CUDA_ARCH__)
  return __double2float_rn(__dadd_rn(mean, __dmul_rn(x, width)));
#else
  double p = x * width;
  return (float)(mean + p);
#endif
}

RHD uint32_t rnd_f32_bits(float f) {
  union {
    float f;
    uint32_t u;
  } v;
  v.f = f;
  return v.u;
}

RHD float rnd_bits_f32(uint32_t u) {
  union {
    float f;
    uint32_t u;
  } v;
  v.u = u;
  return v.f;
}

// bf16 of f32 bits, round to nearest even (codecs.ts `bf16FromF32Bits`).
RHD uint32_t rnd_bf16(uint32_t x) {
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    uint32_t h = x >> 16;
    return (h & 0x7fu) == 0 ? h | 0x40u : h;
  }
  return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}

// f16 of f32 bits, round to nearest even, overflow to ±inf (codecs.ts `f16FromF32Bits`).
RHD uint32_t rnd_f16(uint32_t x) {
  uint32_t s = (x >> 16) & 0x8000u, e = (x >> 23) & 0xffu, m = x & 0x7fffffu;
  if (e == 0xffu) return m == 0 ? s | 0x7c00u : s | 0x7c00u | ((m >> 13) ? (m >> 13) : 0x200u);
  int exp = (int)e - 112;
  if (exp >= 31) return s | 0x7c00u;
  if (exp <= 0) {
    if (exp < -10) return s;
    uint32_t sig = m | 0x800000u, shift = (uint32_t)(14 - exp), half = 1u << (shift - 1);
    uint32_t rem = sig & ((1u << shift) - 1), h = sig >> shift;
    if (rem > half || (rem == half && (h & 1u))) h++;
    return s | h;
  }
  uint32_t h = ((uint32_t)exp << 10) | (m >> 13), rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return s | h;
}

// OCP E4M3FN of f32 bits: RNE, saturating at ±448, NaN → 0x7f / 0xff (codecs.ts `f8FromF32Bits`).
RHD uint32_t rnd_e4m3(uint32_t x) {
  uint32_t s = (x >> 24) & 0x80u, a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return s | 0x7fu;
  if (a >= 0x43e00000u) return s | 0x7eu;
  uint32_t e = a >> 23;
  if (e < 117) return s;
  uint32_t m = a & 0x7fffffu;
  if (e <= 120) {
    uint32_t sig = m | 0x800000u, shift = 141 - e, half = 1u << (shift - 1);
    uint32_t rem = sig & ((1u << shift) - 1), h = sig >> shift;
    if (rem > half || (rem == half && (h & 1u))) h++;
    return s | h;
  }
  uint32_t h = ((e - 120) << 3) | (m >> 20), rem = m & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (h & 1u))) h++;
  return s | h;
}

// An FP8 block's scale from its absolute maximum: f32(amax / 448), 1 for an all-zero block (`fp8BlockScale`).
RHD float rnd_fp8_scale(float amax) {
#if defined(__CUDA_ARCH__)
  return amax > 0.0f ? __double2float_rn(__ddiv_rn((double)amax, 448.0)) : 1.0f;
#else
  return amax > 0.0f ? (float)((double)amax / 448.0) : 1.0f;
#endif
}

// The FP8 code of value v in a block of scale s: e4m3(f32(v / s)), the quotient in f64 (`encodeFp8Scaled`).
RHD uint32_t rnd_fp8_code(float v, float s) {
#if defined(__CUDA_ARCH__)
  float q = __double2float_rn(__ddiv_rn((double)v, (double)s));
#else
  float q = (float)((double)v / (double)s);
#endif
  return rnd_e4m3(rnd_f32_bits(q));
}

// The f32 value of an E4M3FN code (exact; NaN codes give NaN).
RHD float rnd_e4m3_value(uint32_t c) {
  uint32_t s = (c & 0x80u) << 24, e = (c >> 3) & 15u, m = c & 7u;
  if (e == 15u && m == 7u) return rnd_bits_f32(s | 0x7fc00000u);
  if (e != 0u) return rnd_bits_f32(s | ((e + 120u) << 23) | (m << 20));
  float v = (float)m * 0.001953125f;
  return s ? -v : v;
}

// NVFP4's global divisor of a run from its absolute maximum: f32(448 · 6 / amax), 1 for zeros (`nvfp4GlobalScale`).
RHD float rnd_nvfp4_global(float amax) {
#if defined(__CUDA_ARCH__)
  return amax > 0.0f ? __double2float_rn(__ddiv_rn(2688.0, (double)amax)) : 1.0f;
#else
  return amax > 0.0f ? (float)(2688.0 / (double)amax) : 1.0f;
#endif
}

// E2M1 code of an f64 quotient with compressed-tensors' boundaries (`encodeE2m1`); zero and NaN give 0.
RHD uint32_t rnd_e2m1(double x) {
  double a = x < 0 ? -x : x;
  uint32_t c;
  if (!(a > 0.25)) c = 0;
  else if (a < 0.75) c = 1;
  else if (a <= 1.25) c = 2;
  else if (a < 1.75) c = 3;
  else if (a <= 2.5) c = 4;
  else if (a < 3.5) c = 5;
  else if (a <= 5) c = 6;
  else c = 7;
  return c != 0 && x < 0 ? c | 8u : c;
}

// One NVFP4 block of 16 values under global divisor g (`quantizeNvfp4Blocks`): the f8e4m3 block scale code of
// f32(f32(bmax / 6) · g), the folded scale eff = f32(value(code) / g) (returned), and the packed E2M1 codes of
// v / eff (f64), element 2j in the low nibble of byte j.
RHD float rnd_nvfp4_block(const float *v, float g, uint8_t *packed) {
  float bmax = 0.0f;
  for (int j = 0; j < 16; j++) {
    float a = v[j] < 0 ? -v[j] : v[j];
    if (a > bmax) bmax = a;
  }
#if defined(__CUDA_ARCH__)
  float b6 = __double2float_rn(__ddiv_rn((double)bmax, 6.0));
  float code_in = __double2float_rn(__dmul_rn((double)b6, (double)g));
  float eff = __double2float_rn(__ddiv_rn((double)rnd_e4m3_value(rnd_e4m3(rnd_f32_bits(code_in))), (double)g));
#else
  float b6 = (float)((double)bmax / 6.0);
  float code_in = (float)((double)b6 * (double)g);
  float eff = (float)((double)rnd_e4m3_value(rnd_e4m3(rnd_f32_bits(code_in))) / (double)g);
#endif
  for (int j = 0; j < 16; j += 2) {
#if defined(__CUDA_ARCH__)
    uint32_t lo = eff > 0.0f ? rnd_e2m1(__ddiv_rn((double)v[j], (double)eff)) : 0;
    uint32_t hi = eff > 0.0f ? rnd_e2m1(__ddiv_rn((double)v[j + 1], (double)eff)) : 0;
#else
    uint32_t lo = eff > 0.0f ? rnd_e2m1((double)v[j] / (double)eff) : 0;
    uint32_t hi = eff > 0.0f ? rnd_e2m1((double)v[j + 1] / (double)eff) : 0;
#endif
    packed[j >> 1] = (uint8_t)(lo | (hi << 4));
  }
  return eff;
}
