// attention and attention_rows (ops/attention.ts, attention_rows.ts): the vision tower's block-diagonal attention
// (and any naive prefill attention), one block of 128 per (query, head). Each query's key range [start, end) (its
// segment's contiguous run of rows) comes from a table the host computes from the segment ids. Three passes over
// the range: the maximum score, the sum of exponentials, then the value sum, recomputing scores rather than storing
// them (one warp per key, lanes along d), so nothing grows with the image.
//
// p0 queries, p1 scale (f32 bits), p2 heads, p3 d, p4 dv; ptr0 q [Q, H, d], ptr1 k [N, H, d], ptr2 v [N, H, dv],
// ptr3 ranges [Q, 2], ptr4 out [Q, H, dv]. Dynamic shared memory: d + ATT_TILE floats. dv ≤ 128 · ATT_ACC.
#include "common.cuh"

#define ATT_TILE 128
#define ATT_ACC 8

__device__ __forceinline__ float attScore(const float *q, const float *k, u32 d, u32 lane) {
  float s = 0.0f;
  for (u32 c = lane; c < d; c += 32) s += q[c] * k[c];
  return warpSum(s);
}

KERNEL(attention) {
  float *sh = dynShared();
  __shared__ float red[32];
  u32 H = a.p[2], d = a.p[3], dv = a.p[4], g = blockIdx.x;
  if (g >= a.p[0] * H) return;
  u32 i = g / H, h = g % H, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float *q = sh, *p = sh + d;
  for (u32 c = threadIdx.x; c < d; c += blockDim.x) q[c] = ptr<const float>(a, 0)[(u64)g * d + c];
  const int *r = ptr<const int>(a, 3);
  u32 start = (u32)r[2 * i], end = (u32)r[2 * i + 1];
  __syncthreads();
  const float *K = ptr<const float>(a, 1), *V = ptr<const float>(a, 2);
  float scale = pf(a, 1);
  float m = -3.4e38f;
  for (u32 j = start + warp; j < end; j += warps) m = fmaxf(m, attScore(q, K + ((u64)j * H + h) * d, d, lane) * scale);
  m = blockMax(m, red);
  float s = 0.0f;
  for (u32 j = start + warp; j < end; j += warps) {
    float e = expf(attScore(q, K + ((u64)j * H + h) * d, d, lane) * scale - m);
    if (lane == 0) s += e;
  }
  float total = blockSum(s, red);
  float acc[ATT_ACC] = {};
  for (u32 t = start; t < end; t += ATT_TILE) {
    u32 n = min((u32)ATT_TILE, end - t);
    for (u32 jj = warp; jj < n; jj += warps) {
      float e = expf(attScore(q, K + ((u64)(t + jj) * H + h) * d, d, lane) * scale - m);
      if (lane == 0) p[jj] = e;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < ATT_ACC; kk++) {
      u32 c = threadIdx.x + blockDim.x * kk;
      if (c < dv) {
        float v = acc[kk];
        for (u32 jj = 0; jj < n; jj++) v += p[jj] * V[((u64)(t + jj) * H + h) * dv + c];
        acc[kk] = v;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int kk = 0; kk < ATT_ACC; kk++) {
    u32 c = threadIdx.x + blockDim.x * kk;
    if (c < dv) ptr<float>(a, 4)[(u64)g * dv + c] = acc[kk] / total;
  }
}
