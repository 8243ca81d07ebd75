// Runs the cuda backend's kernels (kernels/cuda/*.cu) on the CPU, for testing them without a GPU: the CUDA
// built-ins they use, mapped onto plain C++ and a cooperative scheduler (tests/cuda_host_shim.cpp) that runs a
// block's threads as fibers, one block at a time, with __syncthreads and warp shuffles as barriers. Included
// before the kernels with -include and -DTRAMONTANE_SHIM (see tests/cuda_helpers.ts); the kernels then compile as
// ordinary C++, into the fake driver, whose cuLaunchKernel runs them when FAKE_CUDA_RUN=1.
//
// What it does not model: memory ordering between threads other than at barriers, warp divergence inside a
// shuffle (every lane of a warp must reach it, as the kernels ensure), and the GPU's own math library (expf etc.
// are the host's, within their documented bounds either way).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
#define __shared__ static

struct shim_dim3 {
  unsigned x, y, z;
};
extern shim_dim3 threadIdx, blockIdx, blockDim, gridDim;

struct float4 {
  float x, y, z, w;
};
struct uint2 {
  unsigned x, y;
};
struct uint4 {
  unsigned x, y, z, w;
};
struct __half {
  uint16_t x;
};
struct __half2 {
  __half a, b;
};

void __syncthreads();
void shim_warp_barrier();
float *shim_dyn_shared();
unsigned shim_lane_exchange(unsigned v, int lane);
// kernels/cuda/common.cuh mma_bf16_16816 on the CPU (tests/cuda_host_shim.cpp).
void shim_mma_bf16_16816(float *d, const unsigned *a, const unsigned *b, const float *c);

inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline double __longlong_as_double(long long v) {
  double d;
  memcpy(&d, &v, 8);
  return d;
}
inline float __half2float(__half h) {
  unsigned s = (h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
  if (e == 0x1f) return __uint_as_float(s | 0x7f800000u | (m << 13));
  if (e != 0) return __uint_as_float(s | ((e + 112) << 23) | (m << 13));
  float v = ldexpf((float)m, -24);
  return s ? -v : v;
}
inline float __low2float(__half2 h) { return __half2float(h.a); }
inline float __high2float(__half2 h) { return __half2float(h.b); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline int atomicAdd(int *p, int v) {
  int old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicMax(unsigned *p, unsigned v) {
  unsigned old = *p;
  if (v > old) *p = v;
  return old;
}
inline unsigned __shfl_xor_sync(unsigned, unsigned v, int o) {
  return shim_lane_exchange(v, (int)(threadIdx.x & 31) ^ o);
}
inline float __shfl_xor_sync(unsigned, float v, int o) {
  return __uint_as_float(shim_lane_exchange(__float_as_uint(v), (int)(threadIdx.x & 31) ^ o));
}
