// matmul (ops/matmul.ts): y[m, col0 + j] = Σ_k x[m, k] · W[j, k] for the `rows` output features of one weight
// part, W stored as any weight dtype and decoded as it is read, accumulating in f32.
//
// Two kernels per dtype, chosen by the host from the shape (runtime/backends/cuda/ops.ts):
// - matvec_<dtype> (decode, M ≤ 8): memory-bound, one warp per output feature, each lane reading 16 bytes of codes
//   per step (16 FP8 / q8 codes, 8 bf16 / f16, 4 f32, 32 NVFP4; q4 4 codes by element), the warp 512 contiguous
//   bytes of the K-row, and up to 8 tokens' dot products per pass, so the weight is read once per step; a shuffle
//   reduction ends the row. Needs K a multiple of that group (matvecGroup in ops.ts: every model dimension is);
//   other K go to the GEMM.
// - gemm_<dtype> (prefill): 64 × 64 output tiles, 256 threads of 4 × 4 outputs each, K in steps of 16 through
//   shared memory (the weight tile decoded to f32 once per block). A plain tiled kernel: tensor cores
//   (mma.sync bf16 / FP8) are the next step once a device verifies this one.
//
// Parameters (both): p0 M, p1 rows (of the part), p2 K, p3 N (y's row stride), p4 col0;
// ptr0 x [M, K], ptr1 W codes, ptr2 W scales, ptr3 y [M, N].
#include "common.cuh"

#define MV_TOKENS 8
#define MV_WARPS 4

template <int D> __device__ void matvec(const Args &a) {
  constexpr int N = V<D>::N;
  u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  u32 j = blockIdx.x * MV_WARPS + warp, rows = a.p[1], K = a.p[2], M = a.p[0];
  if (j >= rows) return;
  W w{ptr<const unsigned char>(a, 1), ptr<const void>(a, 2), K};
  const float *x = ptr<const float>(a, 0);
  float *y = ptr<float>(a, 3);
  for (u32 m0 = 0; m0 < M; m0 += MV_TOKENS) {
    u32 mt = min(MV_TOKENS, M - m0);
    float acc[MV_TOKENS];
#pragma unroll
    for (int t = 0; t < MV_TOKENS; t++) acc[t] = 0.0f;
    for (u32 c = N * lane; c < K; c += 32 * N) {
      float v[N];
      V<D>::load(w, (u64)j * K + c, v);
#pragma unroll
      for (int t = 0; t < MV_TOKENS; t++) {
        if ((u32)t < mt) {
          const float4 *xv = reinterpret_cast<const float4 *>(x + (u64)(m0 + t) * K + c);
          float s = 0.0f;
#pragma unroll
          for (int q = 0; q < N / 4; q++) {
            float4 xq = xv[q];
            s += xq.x * v[4 * q] + xq.y * v[4 * q + 1] + xq.z * v[4 * q + 2] + xq.w * v[4 * q + 3];
          }
          acc[t] += s;
        }
      }
    }
#pragma unroll
    for (int t = 0; t < MV_TOKENS; t++) {
      float s = warpSum(acc[t]);
      if (lane == 0 && (u32)t < mt) y[(u64)(m0 + t) * a.p[3] + a.p[4] + j] = s;
    }
  }
}
FOR_WEIGHT_DTYPES(matvec)

#define TM 64
#define TN 64
#define TK 16

template <int D> __device__ void gemm(const Args &a) {
  __shared__ float xs[TK][TM + 4];
  __shared__ float ws[TK][TN + 4];
  u32 M = a.p[0], rows = a.p[1], K = a.p[2];
  u32 m0 = blockIdx.y * TM, n0 = blockIdx.x * TN, tid = threadIdx.x;
  u32 tr = tid / 16, tc = tid % 16; // this thread's 4 × 4 outputs: rows m0 + tr + 16i, cols n0 + tc + 16j
  W w{ptr<const unsigned char>(a, 1), ptr<const void>(a, 2), K};
  const float *x = ptr<const float>(a, 0);
  float acc[4][4] = {};
  for (u32 k0 = 0; k0 < K; k0 += TK) {
    // 64 × 16 values of x and of W per tile: 4 each per thread, k fastest (coalesced along K-rows).
#pragma unroll
    for (int l = 0; l < 4; l++) {
      u32 e = tid + 256 * l, r = e / TK, k = e % TK;
      u32 gm = m0 + r, gn = n0 + r, gk = k0 + k;
      xs[k][r] = gm < M && gk < K ? x[(u64)gm * K + gk] : 0.0f;
      ws[k][r] = gn < rows && gk < K ? at<D>(w, (u64)gn * K + gk) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TK; k++) {
      float xv[4], wv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) xv[i] = xs[k][tr + 16 * i], wv[i] = ws[k][tc + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += xv[i] * wv[j];
    }
    __syncthreads();
  }
  float *y = ptr<float>(a, 3);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    u32 gm = m0 + tr + 16 * i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      u32 gn = n0 + tc + 16 * j;
      if (gn < rows) y[(u64)gm * a.p[3] + a.p[4] + gn] = acc[i][j];
    }
  }
}
FOR_WEIGHT_DTYPES(gemm)
