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
