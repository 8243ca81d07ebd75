// Preset weights made on the device (runtime/backends/cuda/device_weights.ts): the generator of random.cuh over a
// range of a tensor's elements, grid-stride loops of 256-thread blocks.
//
// Shared words: p0 count (elements of this launch), p1/p2 the first element's index in the whole tensor (low, high
// 32 bits), p3 the stream state, p4/p5 mean and p6/p7 width (f64 bits, low word first).
#include "common.cuh"
#include "random.cuh"

__device__ __forceinline__ double dbits(u32 lo, u32 hi) { return __longlong_as_double((long long)(((u64)hi << 32) | lo)); }
__device__ __forceinline__ u64 first(const Args &a) { return ((u64)a.p[2] << 32) | a.p[1]; }
__device__ __forceinline__ float value(const Args &a, u64 i) {
  return rnd_value(a.p[3], first(a) + i, dbits(a.p[4], a.p[5]), dbits(a.p[6], a.p[7]));
}

// p8 dtype: 0 f32, 1 bf16, 2 f16. ptr0 out (this range's first element).
KERNEL(random_fill) {
  for (u64 i = flat(); i < a.p[0]; i += (u64)gridDim.x * blockDim.x) {
    u32 b = rnd_f32_bits(value(a, i));
    if (a.p[8] == 0) ptr<u32>(a, 0)[i] = b;
    else ptr<unsigned short>(a, 0)[i] = (unsigned short)(a.p[8] == 1 ? rnd_bf16(b) : rnd_f16(b));
  }
}

// Each FP8 block's absolute maximum (as f32 bits: non-negative floats order as unsigned integers). p8/p9 elements
// per block (low, high). ptr0 amax bits [blocks] (zeroed first).
KERNEL(random_amax) {
  u64 run = ((u64)a.p[9] << 32) | a.p[8];
  u32 *amax = ptr<u32>(a, 0);
  u64 block = ~0ull;
  u32 m = 0;
  for (u64 i = flat(); i < a.p[0]; i += (u64)gridDim.x * blockDim.x) {
    u64 r = (first(a) + i) / run;
    if (r != block) {
      if (block != ~0ull) atomicMax(amax + block, m);
      block = r, m = 0;
    }
    m = max(m, rnd_f32_bits(value(a, i)) & 0x7fffffffu);
  }
  if (block != ~0ull) atomicMax(amax + block, m);
}

// FP8 codes and each K-row's scale. p8/p9 elements per block, p10 K. ptr0 codes (this range), ptr1 amax bits,
// ptr2 scales per K-row (this range's first K-row; the range starts on a K-row).
KERNEL(random_fp8) {
  u64 run = ((u64)a.p[9] << 32) | a.p[8];
  u32 k = a.p[10];
  const u32 *amax = ptr<const u32>(a, 1);
  for (u64 i = flat(); i < a.p[0]; i += (u64)gridDim.x * blockDim.x) {
    float s = rnd_fp8_scale(rnd_bits_f32(amax[(first(a) + i) / run]));
    ptr<unsigned char>(a, 0)[i] = (unsigned char)rnd_fp8_code(value(a, i), s);
    if (i % k == 0) ptr<float>(a, 2)[i / k] = s;
  }
}

// NVFP4 codes and folded block scales, one thread per block of 16 (the range starts on a K-row, K a multiple of
// 16). p8/p9 elements per global-scale run. ptr0 packed codes (this range), ptr1 amax bits per run, ptr2 f32 scales
// per 16 values (this range's first block).
KERNEL(random_nvfp4) {
  u64 run = ((u64)a.p[9] << 32) | a.p[8];
  const u32 *amax = ptr<const u32>(a, 1);
  for (u64 b = flat(); b < a.p[0] / 16; b += (u64)gridDim.x * blockDim.x) {
    float v[16];
    for (int j = 0; j < 16; j++) v[j] = value(a, 16 * b + j);
    float g = rnd_nvfp4_global(rnd_bits_f32(amax[(first(a) + 16 * b) / run]));
    ptr<float>(a, 2)[b] = rnd_nvfp4_block(v, g, ptr<unsigned char>(a, 0) + 8 * b);
  }
}
