// Shared by every CUDA kernel of the `cuda` backend (runtime/backends/cuda): the one argument block every kernel
// takes, the weight dtypes decoded as they are read, and block reductions.
//
// Calling convention: each kernel is `extern "C"` and takes one `Args` by value: eight device pointers (tensors,
// scratch, a weight's codes then its scales) and sixteen 32-bit words (sizes; floats as their bits). One
// convention for every kernel keeps the host side one function (runtime/backends/cuda/ops.ts `launch`) and lets
// the fake driver of the tests decode every launch the same way.
//
// Weight layouts are the webgpu backend's (runtime/backends/webgpu/ops.ts `storedBytes`): codes first, then
// scales; the host passes the scales' address as the pointer after the codes. f32; bf16 and f16 as 16-bit
// halves; f8e4m3 (OCP E4M3FN) bytes with one f32 scale per K-row; q8 int8 with one f32 scale per 32 values;
// nvfp4 E2M1 two to a byte (even element in the low nibble) with one f32 scale per 16; q4 (Q4_0's numbers) as
// blocks of 16 bytes per 32 values of a K-row (element j of a block in byte j's low nibble, j + 16 in its high
// one), then f16 scales, each K-row's starting at a 32-bit word.
#pragma once
#ifndef TRAMONTANE_SHIM
#include <cuda_fp16.h> // (tests/cuda_host_shim.h stands in for CUDA when the kernels are built for the CPU)
#endif
#include <stdint.h>

typedef unsigned int u32;
typedef unsigned long long u64;

struct Args {
  u64 ptr[8];
  u32 p[16];
};

#define KERNEL(name) extern "C" __global__ void name(const __grid_constant__ Args a)

// The block's dynamic shared memory (16-byte aligned), sized by the host at launch.
__device__ __forceinline__ float *dynShared() {
#ifdef TRAMONTANE_SHIM
  return shim_dyn_shared();
#else
  extern __shared__ float4 dyn_shared_[];
  return reinterpret_cast<float *>(dyn_shared_);
#endif
}

__device__ __forceinline__ float pf(const Args &a, int i) { return __uint_as_float(a.p[i]); }
__device__ __forceinline__ u32 flat() { return blockIdx.x * blockDim.x + threadIdx.x; }
template <typename T> __device__ __forceinline__ T *ptr(const Args &a, int i) {
  return reinterpret_cast<T *>(static_cast<uintptr_t>(a.ptr[i]));
}

enum DT { F32 = 0, BF16 = 1, F16 = 2, F8 = 3, Q8 = 4, NVFP4 = 5, Q4 = 6 };

// A weight as a kernel reads it: codes, scales (quantised dtypes) and K, the length of a K-row.
struct W {
  const unsigned char *c;
  const void *s;
  u64 k;
};

__device__ __forceinline__ float bf16f(unsigned short h) { return __uint_as_float(((u32)h) << 16); }

// OCP E4M3FN: bias 7, subnormals m·2^-9, S.1111.111 is NaN (exact in f32).
__device__ __forceinline__ float e4m3f(u32 c) {
  u32 s = (c & 0x80u) << 24, e = (c >> 3) & 15u, m = c & 7u;
  if (e == 15u && m == 7u) return __uint_as_float(s | 0x7fc00000u);
  if (e != 0u) return __uint_as_float(s | ((e + 120u) << 23) | (m << 20));
  float v = (float)m * 0.001953125f;
  return s ? -v : v;
}

// E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign.
__device__ __forceinline__ float e2m1f(u32 c) {
  u32 e = (c >> 1) & 3u;
  float m = (float)(c & 1u);
  float v = e == 0u ? m * 0.5f : (2.0f + m) * (float)(1u << e) * 0.25f;
  return (c & 8u) ? -v : v;
}

// Element i (row-major) of a weight stored as D, as f32, exactly as the host codecs decode it.
template <int D> __device__ __forceinline__ float at(const W &w, u64 i);
template <> __device__ __forceinline__ float at<F32>(const W &w, u64 i) {
  return reinterpret_cast<const float *>(w.c)[i];
}
template <> __device__ __forceinline__ float at<BF16>(const W &w, u64 i) {
  return bf16f(reinterpret_cast<const unsigned short *>(w.c)[i]);
}
template <> __device__ __forceinline__ float at<F16>(const W &w, u64 i) {
  return __half2float(reinterpret_cast<const __half *>(w.c)[i]);
}
template <> __device__ __forceinline__ float at<F8>(const W &w, u64 i) {
  return e4m3f(w.c[i]) * reinterpret_cast<const float *>(w.s)[i / w.k];
}
template <> __device__ __forceinline__ float at<Q8>(const W &w, u64 i) {
  return (float)(signed char)w.c[i] * reinterpret_cast<const float *>(w.s)[i / 32];
}
template <> __device__ __forceinline__ float at<NVFP4>(const W &w, u64 i) {
  u32 b = w.c[i >> 1];
  return e2m1f((i & 1) ? b >> 4 : b & 15u) * reinterpret_cast<const float *>(w.s)[i / 16];
}
// q4: the code (0..15) of column c of K-row r, and the f16 scale of the row's block b of 32 values.
__device__ __forceinline__ u32 q4Code(const W &w, u64 r, u64 c) {
  u64 nb = (w.k + 31) / 32;
  u32 byte = w.c[(r * nb + (c >> 5)) * 16 + (c & 15)];
  return (c & 16) ? byte >> 4 : byte & 15u;
}
__device__ __forceinline__ float q4Scale(const W &w, u64 r, u64 b) {
  u64 nb = (w.k + 31) / 32;
  return __half2float(reinterpret_cast<const __half *>(w.s)[r * 2 * ((nb + 1) / 2) + b]);
}
template <> __device__ __forceinline__ float at<Q4>(const W &w, u64 i) {
  u64 r = i / w.k, c = i - r * w.k;
  u32 q = q4Code(w, r, c);
  float d = q4Scale(w, r, c >> 5);
  return ((float)q - 8.0f) * d;
}

// Four consecutive elements i..i+3 (i a multiple of 4, K-rows a multiple of 4 long): one load of the codes where
// the dtype packs them into one aligned word or vector.
template <int D> __device__ __forceinline__ void at4(const W &w, u64 i, float o[4]) {
#pragma unroll
  for (int j = 0; j < 4; j++) o[j] = at<D>(w, i + j);
}
template <> __device__ __forceinline__ void at4<F32>(const W &w, u64 i, float o[4]) {
  float4 v = reinterpret_cast<const float4 *>(w.c)[i / 4];
  o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
}
template <> __device__ __forceinline__ void at4<BF16>(const W &w, u64 i, float o[4]) {
  uint2 v = reinterpret_cast<const uint2 *>(w.c)[i / 4];
  o[0] = __uint_as_float(v.x << 16), o[1] = __uint_as_float(v.x & 0xffff0000u);
  o[2] = __uint_as_float(v.y << 16), o[3] = __uint_as_float(v.y & 0xffff0000u);
}
template <> __device__ __forceinline__ void at4<F8>(const W &w, u64 i, float o[4]) {
  u32 v = reinterpret_cast<const u32 *>(w.c)[i / 4];
  float s = reinterpret_cast<const float *>(w.s)[i / w.k];
#pragma unroll
  for (int j = 0; j < 4; j++) o[j] = e4m3f((v >> (8 * j)) & 0xffu) * s;
}
template <> __device__ __forceinline__ void at4<Q8>(const W &w, u64 i, float o[4]) {
  u32 v = reinterpret_cast<const u32 *>(w.c)[i / 4];
  float s = reinterpret_cast<const float *>(w.s)[i / 32];
#pragma unroll
  for (int j = 0; j < 4; j++) o[j] = (float)(signed char)((v >> (8 * j)) & 0xffu) * s;
}
template <> __device__ __forceinline__ void at4<NVFP4>(const W &w, u64 i, float o[4]) {
  u32 v = reinterpret_cast<const unsigned short *>(w.c)[i / 4];
  float s = reinterpret_cast<const float *>(w.s)[i / 16];
#pragma unroll
  for (int j = 0; j < 4; j++) o[j] = e2m1f((v >> (4 * j)) & 15u) * s;
}

// V<D>::N consecutive elements from one 16-byte load of the codes (a decode matvec lane's step): f32 4, bf16 / f16
// 8, FP8 / q8 16, NVFP4 32 (two scales); q4 falls back to 4 element reads. Needs i a multiple of N and K-rows a
// multiple of N long (so the codes are 16-byte aligned and one K-row, and a 16- or 32-block, holds them all).
template <int D> struct V {
  static constexpr int N = 4;
  static __device__ __forceinline__ void load(const W &w, u64 i, float *o) { at4<D>(w, i, o); }
};
__device__ __forceinline__ void halves(u32 v, float *o, bool bf) {
  if (bf) {
    o[0] = __uint_as_float(v << 16), o[1] = __uint_as_float(v & 0xffff0000u);
  } else {
    __half2 h = *reinterpret_cast<__half2 *>(&v);
    o[0] = __low2float(h), o[1] = __high2float(h);
  }
}
template <> struct V<BF16> {
  static constexpr int N = 8;
  static __device__ __forceinline__ void load(const W &w, u64 i, float *o) {
    uint4 v = reinterpret_cast<const uint4 *>(w.c)[i / 8];
    halves(v.x, o, true), halves(v.y, o + 2, true), halves(v.z, o + 4, true), halves(v.w, o + 6, true);
  }
};
template <> struct V<F16> {
  static constexpr int N = 8;
  static __device__ __forceinline__ void load(const W &w, u64 i, float *o) {
    uint4 v = reinterpret_cast<const uint4 *>(w.c)[i / 8];
    halves(v.x, o, false), halves(v.y, o + 2, false), halves(v.z, o + 4, false), halves(v.w, o + 6, false);
  }
};
template <> struct V<F8> {
  static constexpr int N = 16;
  static __device__ __forceinline__ void load(const W &w, u64 i, float *o) {
    uint4 v = reinterpret_cast<const uint4 *>(w.c)[i / 16];
    float s = reinterpret_cast<const float *>(w.s)[i / w.k];
    u32 q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 16; j++) o[j] = e4m3f((q[j / 4] >> (8 * (j % 4))) & 0xffu) * s;
  }
};
template <> struct V<Q8> {
  static constexpr int N = 16;
  static __device__ __forceinline__ void load(const W &w, u64 i, float *o) {
    uint4 v = reinterpret_cast<const uint4 *>(w.c)[i / 16];
    float s = reinterpret_cast<const float *>(w.s)[i / 32];
    u32 q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 16; j++) o[j] = (float)(signed char)((q[j / 4] >> (8 * (j % 4))) & 0xffu) * s;
  }
};
template <> struct V<NVFP4> {
  static constexpr int N = 32;
  static __device__ __forceinline__ void load(const W &w, u64 i, float *o) {
    uint4 v = reinterpret_cast<const uint4 *>(w.c)[i / 32];
    const float *sc = reinterpret_cast<const float *>(w.s) + i / 16;
    u32 q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = e2m1f((q[j / 8] >> (4 * (j % 8))) & 15u) * sc[j / 16];
  }
};

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum (or max) over a block of up to 1024 threads, the same value in every thread; `red` holds 32 floats.
__device__ __forceinline__ float blockSum(float v, float *red) {
  v = warpSum(v);
  u32 lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  float r = 0.0f;
  for (u32 i = 0; i < nw; i++) r += red[i];
  return r;
}
__device__ __forceinline__ float blockMax(float v, float *red) {
  v = warpMax(v);
  u32 lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  float r = -3.4e38f;
  for (u32 i = 0; i < nw; i++) r = fmaxf(r, red[i]);
  return r;
}

// Round f32 to the nearest bf16 (ties to even; NaN stays NaN), as mla_cache_write's reference does.
__device__ __forceinline__ u32 bf16Bits(float v) {
  u32 u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u | 0x400000u) >> 16) & 0xffffu;
  return ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) & 0xffffu;
}

// One warp-wide tensor-core product D = A·B + C of shape m16n8k16: A 16 × 16 bf16 (row-major), B 16 × 8 bf16
// (column-major), C and D 16 × 8 f32. Fragments as the PTX ISA gives them ("Matrix Fragments for mma.m16n8k16 with
// floating point type", section "Warp-level matrix multiply-accumulate instructions"), with groupID = lane >> 2 and
// tig (threadID_in_group) = lane % 4, two bf16 per 32-bit register, the lower-indexed element in the low half:
//   a[0] A[groupID][2·tig + {0,1}]   a[1] A[groupID + 8][2·tig + {0,1}]
//   a[2] A[groupID][2·tig + 8 + {0,1}]   a[3] A[groupID + 8][2·tig + 8 + {0,1}]
//   b[0] B[2·tig + {0,1}][groupID]   b[1] B[2·tig + 8 + {0,1}][groupID]
//   c/d[0,1] C[groupID][2·tig + {0,1}]   c/d[2,3] C[groupID + 8][2·tig + {0,1}]
// Every lane of the warp must call it together (it is .sync.aligned). On the CPU (tests/cuda_host_shim.cpp) the
// lanes swap fragments at a warp scheduling point and each computes its four outputs in f32.
__device__ __forceinline__ void mma_bf16_16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]) {
#ifdef TRAMONTANE_SHIM
  shim_mma_bf16_16816(d, a, b, c);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%10, %11, %12, %13};\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
                 "f"(c[3]));
#else
  __trap(); // the module is built for compute_80 and newer only (kernels/cuda/build.sh)
#endif
}

// Instantiates `name##_<dtype>` for every weight dtype from a template kernel body `name<D>(a)`.
#define FOR_WEIGHT_DTYPES(name)                                                                                \
  KERNEL(name##_f32) { name<F32>(a); }                                                                          \
  KERNEL(name##_bf16) { name<BF16>(a); }                                                                        \
  KERNEL(name##_f16) { name<F16>(a); }                                                                          \
  KERNEL(name##_f8e4m3) { name<F8>(a); }                                                                        \
  KERNEL(name##_q8) { name<Q8>(a); }                                                                            \
  KERNEL(name##_nvfp4) { name<NVFP4>(a); }                                                                      \
  KERNEL(name##_q4) { name<Q4>(a); }
