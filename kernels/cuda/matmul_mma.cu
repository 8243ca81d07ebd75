// matmul (ops/matmul.ts) for prefill on tensor cores: gemm_mma_<dtype>, y[m, col0 + j] = Σ_k x[m, k] · W[j, k], for
// the weight dtypes whose codes are exact in bf16 (bf16 itself; FP8 E4M3 ⊂ bf16; q8 int8; NVFP4's E2M1 values;
// q4's −8..7). The weight's codes go into the mma as bf16 and its scales are applied outside it: FP8's one scale per
// K-row once at the end; q8 and q4 per block of 32 (two k-steps of 16), NVFP4 per block of 16 (one k-step): a block's
// products sum in a temporary fragment, added to the accumulator times its column's scale when the block ends.
// Activations are f32: each is split into three bf16 terms, hi = bf16(x), mid = bf16(x − hi), lo = bf16(x − hi −
// mid) (x − hi − mid − lo is below f32's own rounding of x's 24 bits), and a k-step issues three mma (lo, mid, then
// hi, smallest first), so the sum keeps f32 accuracy: products of bf16 are exact in f32 and sum in f32.
//
// Tiles: 64 tokens × 64 output features per block of 4 warps (128 threads); warp w owns tokens 16w..16w+15 and all
// 64 features as 8 m16n8 fragments (32 f32 accumulators a lane). K in steps of 16 through shared memory: the x
// tile as its three bf16 terms, the W tile as bf16 codes, [row][k] with rows padded to 24 halves so a fragment's
// 32-bit reads hit distinct banks. K off a multiple of 16 is zero-padded; M and N edges read zeros and are not
// stored. q8 needs K a multiple of 32 and NVFP4 of 16 (their scale blocks run over the flattened weight, so a
// k-step must not straddle two K-rows); the host sends other K to the SIMT gemm_* (runtime/backends/cuda/ops.ts).
//
// Parameters: as gemm_* (matmul.cu): p0 M, p1 rows, p2 K, p3 N, p4 col0; ptr0 x, ptr1 W codes, ptr2 W scales, ptr3 y.
// mma_probe (one warp): D = A·B + C for one m16n8k16 through mma_bf16_16816, A [16 × 16], B [16 × 8] (k-major) and
// C [16 × 8] f32 holding bf16-exact values at ptr0..ptr2, D to ptr3: the helper's check, on the CPU and on a GPU.
#include "common.cuh"

#define MT 64
#define MN 64
#define MK 16
#define MPAD 24

// A weight element's code as bf16 bits (unscaled: exact for these dtypes) and a k-step's scale for one K-row.
template <int D> __device__ __forceinline__ u32 mmaCode(const W &w, u64 n, u64 k);
template <> __device__ __forceinline__ u32 mmaCode<BF16>(const W &w, u64 n, u64 k) {
  return reinterpret_cast<const unsigned short *>(w.c)[n * w.k + k];
}
template <> __device__ __forceinline__ u32 mmaCode<F8>(const W &w, u64 n, u64 k) {
  return bf16Bits(e4m3f(w.c[n * w.k + k]));
}
template <> __device__ __forceinline__ u32 mmaCode<Q8>(const W &w, u64 n, u64 k) {
  return bf16Bits((float)(signed char)w.c[n * w.k + k]);
}
template <> __device__ __forceinline__ u32 mmaCode<NVFP4>(const W &w, u64 n, u64 k) {
  u64 i = n * w.k + k;
  u32 b = w.c[i >> 1];
  return bf16Bits(e2m1f((i & 1) ? b >> 4 : b & 15u));
}
template <> __device__ __forceinline__ u32 mmaCode<Q4>(const W &w, u64 n, u64 k) {
  return bf16Bits((float)q4Code(w, n, k) - 8.0f);
}
// 1 where the scale is not per k-step (bf16: none; FP8: per K-row, applied at the end).
template <int D> __device__ __forceinline__ float mmaStepScale(const W &, u64, u64) { return 1.0f; }
template <> __device__ __forceinline__ float mmaStepScale<Q8>(const W &w, u64 n, u64 k0) {
  return reinterpret_cast<const float *>(w.s)[(n * w.k + k0) / 32];
}
template <> __device__ __forceinline__ float mmaStepScale<NVFP4>(const W &w, u64 n, u64 k0) {
  return reinterpret_cast<const float *>(w.s)[(n * w.k + k0) / 16];
}
template <> __device__ __forceinline__ float mmaStepScale<Q4>(const W &w, u64 n, u64 k0) {
  return q4Scale(w, n, k0 >> 5);
}

__device__ __forceinline__ u32 pack2(const unsigned short *p) { return (u32)p[0] | ((u32)p[1] << 16); }

template <int D> __device__ void gemmMma(const Args &a) {
  constexpr bool stepScaled = D == Q8 || D == NVFP4 || D == Q4;
  __shared__ unsigned short xs[3][MT][MPAD];
  __shared__ unsigned short ws[MN][MPAD];
  __shared__ float wsc[MN];
  u32 M = a.p[0], rows = a.p[1], K = a.p[2];
  u32 m0 = blockIdx.y * MT, n0 = blockIdx.x * MN, tid = threadIdx.x;
  u32 warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  W w{ptr<const unsigned char>(a, 1), ptr<const void>(a, 2), K};
  const float *x = ptr<const float>(a, 0);
  float acc[8][4] = {}, tmp[8][4] = {};
  for (u32 k0 = 0; k0 < K; k0 += MK) {
    // 64 × 16 values of x and of W: 8 each per thread, k fastest (coalesced along K-rows).
#pragma unroll
    for (int l = 0; l < 8; l++) {
      u32 e = tid + 128 * l, r = e / MK, k = e % MK;
      u32 gm = m0 + r, gn = n0 + r, gk = k0 + k;
      float v = gm < M && gk < K ? x[(u64)gm * K + gk] : 0.0f;
      u32 hi = bf16Bits(v);
      float rest = v - __uint_as_float(hi << 16);
      u32 mid = bf16Bits(rest);
      u32 lo = bf16Bits(rest - __uint_as_float(mid << 16));
      xs[0][r][k] = (unsigned short)hi, xs[1][r][k] = (unsigned short)mid, xs[2][r][k] = (unsigned short)lo;
      ws[r][k] = (unsigned short)(gn < rows && gk < K ? mmaCode<D>(w, gn, gk) : 0u);
    }
    if (stepScaled && tid < MN) wsc[tid] = n0 + tid < rows ? mmaStepScale<D>(w, n0 + tid, k0) : 0.0f;
    __syncthreads();
    // A q8 / q4 block of 32 is two k-steps under one scale: the pair's products sum unscaled, then scale once.
    bool blockEnds = D == NVFP4 || ((k0 >> 4) & 1u) || k0 + MK >= K;
    u32 af[3][4];
    u32 r = 16 * warp + g;
#pragma unroll
    for (int s = 0; s < 3; s++) {
      af[s][0] = pack2(&xs[s][r][2 * t]), af[s][1] = pack2(&xs[s][r + 8][2 * t]);
      af[s][2] = pack2(&xs[s][r][2 * t + 8]), af[s][3] = pack2(&xs[s][r + 8][2 * t + 8]);
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
      u32 n = 8 * j + g, bf[2] = {pack2(&ws[n][2 * t]), pack2(&ws[n][2 * t + 8])};
      if (stepScaled) {
        mma_bf16_16816(tmp[j], af[2], bf, tmp[j]);
        mma_bf16_16816(tmp[j], af[1], bf, tmp[j]);
        mma_bf16_16816(tmp[j], af[0], bf, tmp[j]);
        if (blockEnds) {
          float s0 = wsc[8 * j + 2 * t], s1 = wsc[8 * j + 2 * t + 1];
          acc[j][0] += s0 * tmp[j][0], acc[j][1] += s1 * tmp[j][1];
          acc[j][2] += s0 * tmp[j][2], acc[j][3] += s1 * tmp[j][3];
          tmp[j][0] = tmp[j][1] = tmp[j][2] = tmp[j][3] = 0.0f;
        }
      } else {
        mma_bf16_16816(acc[j], af[2], bf, acc[j]);
        mma_bf16_16816(acc[j], af[1], bf, acc[j]);
        mma_bf16_16816(acc[j], af[0], bf, acc[j]);
      }
    }
    __syncthreads();
  }
  float *y = ptr<float>(a, 3);
#pragma unroll
  for (int j = 0; j < 8; j++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      u32 gm = m0 + 16 * warp + g + (i >= 2 ? 8 : 0), gn = n0 + 8 * j + 2 * t + (i & 1);
      if (gm >= M || gn >= rows) continue;
      float v = acc[j][i];
      if (D == F8) v *= reinterpret_cast<const float *>(w.s)[gn];
      y[(u64)gm * a.p[3] + a.p[4] + gn] = v;
    }
  }
}

KERNEL(gemm_mma_bf16) { gemmMma<BF16>(a); }
KERNEL(gemm_mma_f8e4m3) { gemmMma<F8>(a); }
KERNEL(gemm_mma_q8) { gemmMma<Q8>(a); }
KERNEL(gemm_mma_nvfp4) { gemmMma<NVFP4>(a); }
KERNEL(gemm_mma_q4) { gemmMma<Q4>(a); }

KERNEL(mma_probe) {
  const float *A = ptr<const float>(a, 0), *B = ptr<const float>(a, 1), *C = ptr<const float>(a, 2);
  u32 lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  auto hA = [&](u32 r, u32 k) { return __float_as_uint(A[r * 16 + k]) >> 16; };
  auto hB = [&](u32 k, u32 n) { return __float_as_uint(B[k * 8 + n]) >> 16; };
  u32 af[4], bf[2];
#pragma unroll
  for (int q = 0; q < 4; q++) {
    u32 r = g + (q & 1) * 8, k = 2 * t + (q >> 1) * 8;
    af[q] = hA(r, k) | (hA(r, k + 1) << 16);
  }
#pragma unroll
  for (int q = 0; q < 2; q++) bf[q] = hB(2 * t + 8 * q, g) | (hB(2 * t + 8 * q + 1, g) << 16);
  float c[4], d[4];
#pragma unroll
  for (int i = 0; i < 4; i++) c[i] = C[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)];
  mma_bf16_16816(d, af, bf, c);
  float *Dp = ptr<float>(a, 3);
#pragma unroll
  for (int i = 0; i < 4; i++) Dp[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)] = d[i];
}
