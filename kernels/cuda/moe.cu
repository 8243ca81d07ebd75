// MoE (ops/moe_topk.ts, moe_gate.ts, moe_experts.ts): routing one thread per token (the router softmax rounded as
// the reference rounds it), then the routed experts in three passes over every (token, slot) pair, expert weights
// read where `ids` points on the device (no read-back):
// 1. moe_act_<dtype>: act[t, j, i] = silu(gate_e[i] · x[t]) · (up_e[i] · x[t]), e = ids[t, j]: one warp per
//    (t, j, i), lanes along D (coalesced rows of the expert);
// 2. moe_down_<dtype>: y[t, j, c] = down_e[c] · act[t, j]: one warp per (t, j, c);
// 3. moe_mix: out[t, c] = Σ_j w[t, j] · y[t, j, c].
// An id outside 0..E − 1 contributes 0. These serve steps of few tokens (decode at batch 1: each expert row read once
// anyway); steps of more tokens group them per expert first (below).
#include "common.cuh"

// Router probability of expert i, as ops/moe_topk.ts `routerProbabilities` rounds it: exp and sum in f64 of the
// f32 logits' differences, one division, then f32.
__device__ __forceinline__ double routerSum(const float *l, u32 e, float &m) {
  m = l[0];
  for (u32 i = 1; i < e; i++) m = fmaxf(m, l[i]);
  double s = 0.0;
  for (u32 i = 0; i < e; i++) s += exp((double)l[i] - (double)m);
  return s;
}
__device__ __forceinline__ float routerP(const float *l, u32 i, float m, double s) {
  return (float)(exp((double)l[i] - (double)m) / s);
}

// The K most probable experts per token, most probable first, ties to the lower id. p0 T, p1 E, p2 K;
// ptr0 logits [T, E], ptr1 ids [T, K].
KERNEL(moe_topk) {
  u32 t = flat();
  if (t >= a.p[0]) return;
  u32 e = a.p[1], k = a.p[2];
  const float *l = ptr<const float>(a, 0) + (u64)t * e;
  float m;
  double s = routerSum(l, e, m);
  float lastP = 2.0f;
  int lastI = -1;
  for (u32 j = 0; j < k; j++) {
    float bestP = -1.0f;
    int bestI = -1;
    for (u32 i = 0; i < e; i++) {
      float p = routerP(l, i, m, s);
      bool after = p < lastP || (p == lastP && (int)i > lastI);
      if (after && p > bestP) bestP = p, bestI = (int)i;
    }
    ptr<int>(a, 1)[t * k + j] = bestI;
    lastP = bestP;
    lastI = bestI;
  }
}

// The chosen experts' probabilities renormalised (ops/moe_gate.ts: the sum of the chosen in f32, each divided by it
// in f64, then f32). p0 T, p1 E, p2 K; ptr0 logits, ptr1 ids, ptr2 gates [T, K].
KERNEL(moe_gate) {
  u32 t = flat();
  if (t >= a.p[0]) return;
  u32 e = a.p[1], k = a.p[2];
  const float *l = ptr<const float>(a, 0) + (u64)t * e;
  const int *ids = ptr<const int>(a, 1) + (u64)t * k;
  float m;
  double s = routerSum(l, e, m);
  float top = 0.0f;
  for (u32 j = 0; j < k; j++) top = __fadd_rn(top, routerP(l, (u32)ids[j], m, s));
  double denom = (double)(float)((double)top + 1e-20);
  for (u32 j = 0; j < k; j++) ptr<float>(a, 2)[t * k + j] = (float)((double)routerP(l, (u32)ids[j], m, s) / denom);
}

#define MOE_WARPS 4

// p0 T · K · F, p1 K, p2 F, p3 D, p4 E; ptr0 x [T, D], ptr1 ids [T, K], ptr2 gate_up codes [E, 2F, D],
// ptr3 its scales, ptr4 act [T, K, F].
template <int Dt> __device__ void moe_act(const Args &a) {
  u32 n = blockIdx.x * MOE_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (n >= a.p[0]) return;
  u32 f = a.p[2], d = a.p[3], tj = n / f, i = n - tj * f, t = tj / a.p[1];
  int e = ptr<const int>(a, 1)[tj];
  float *out = ptr<float>(a, 4);
  if (e < 0 || (u32)e >= a.p[4]) {
    if (lane == 0) out[n] = 0.0f;
    return;
  }
  W w{ptr<const unsigned char>(a, 2), ptr<const void>(a, 3), d};
  u64 go = ((u64)e * 2 * f + i) * d, uo = go + (u64)f * d;
  const float *x = ptr<const float>(a, 0) + (u64)t * d;
  float g = 0.0f, u = 0.0f;
  for (u32 c = lane; c < d; c += 32) {
    float xv = x[c];
    g += at<Dt>(w, go + c) * xv;
    u += at<Dt>(w, uo + c) * xv;
  }
  g = warpSum(g);
  u = warpSum(u);
  if (lane == 0) out[n] = g / (1.0f + expf(-g)) * u;
}
FOR_WEIGHT_DTYPES(moe_act)

// p0 T · K · D, p1 K, p2 F, p3 D, p4 E; ptr0 act, ptr1 ids, ptr2 down codes [E, D, F], ptr3 scales, ptr4 y [T, K, D].
template <int Dt> __device__ void moe_down(const Args &a) {
  u32 n = blockIdx.x * MOE_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (n >= a.p[0]) return;
  u32 f = a.p[2], d = a.p[3], tj = n / d, c = n - tj * d;
  int e = ptr<const int>(a, 1)[tj];
  float *y = ptr<float>(a, 4);
  if (e < 0 || (u32)e >= a.p[4]) {
    if (lane == 0) y[n] = 0.0f;
    return;
  }
  W w{ptr<const unsigned char>(a, 2), ptr<const void>(a, 3), f};
  u64 wo = ((u64)e * d + c) * f;
  const float *act = ptr<const float>(a, 0) + (u64)tj * f;
  float s = 0.0f;
  for (u32 i = lane; i < f; i += 32) s += at<Dt>(w, wo + i) * act[i];
  s = warpSum(s);
  if (lane == 0) y[n] = s;
}
FOR_WEIGHT_DTYPES(moe_down)

// p0 T · D, p1 K, p3 D, p4 E; ptr0 y [T, K, D], ptr1 gates [T, K], ptr2 out [T, D], ptr3 ids [T, K] (a slot with an
// id outside 0..E − 1 contributes 0).
KERNEL(moe_mix) {
  u32 n = flat();
  if (n >= a.p[0]) return;
  u32 k = a.p[1], d = a.p[3], t = n / d, c = n - t * d;
  const float *g = ptr<const float>(a, 1), *y = ptr<const float>(a, 0);
  const int *ids = ptr<const int>(a, 3);
  float acc = 0.0f;
  for (u32 j = 0; j < k; j++) {
    int e = ids[t * k + j];
    if (e >= 0 && (u32)e < a.p[4]) acc += g[t * k + j] * y[((u64)t * k + j) * d + c];
  }
  ptr<float>(a, 2)[n] = acc;
}

// Tokens grouped per expert on the device (steps of several tokens: prefill, batched decode), so each expert's
// weights are read once per step in tiles shared by every token routed to it:
// 1. moe_group: one block counts the (token, slot) pairs per expert, scans the counts into offsets [E + 2] (bucket E
//    holds pairs with an id outside 0..E − 1, which no expert processes) and writes the pairs in expert order.
//    The order inside an expert varies between runs; no result depends on it (each output is one dot product).
// 2. moe_act_grouped_<dtype>: grid (⌈F / 64⌉, E), per block 64 of the expert's F rows × its tokens in tiles of 64,
//    D in steps of 16 through shared memory (gate and up rows both), act = silu(g) · u.
// 3. moe_down_grouped_<dtype>: grid (⌈D / 64⌉, E), y[pair, c] = down_e[c] · act[pair].
// moe_mix then sums the slots (pairs with a bad id contribute 0 there).

// p0 pairs (T · K), p1 E; ptr0 ids [T · K], ptr1 offsets [E + 2], ptr2 order [T · K]. One block of 1024;
// dynamic shared memory: 2 (E + 2) ints.
KERNEL(moe_group) {
  int *cnt = reinterpret_cast<int *>(dynShared());
  u32 pairs = a.p[0], E = a.p[1];
  int *off = cnt + E + 2;
  const int *ids = ptr<const int>(a, 0);
  for (u32 e = threadIdx.x; e < E + 2; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (u32 p = threadIdx.x; p < pairs; p += blockDim.x) {
    int e = ids[p];
    atomicAdd(cnt + (e < 0 || (u32)e >= E ? E : (u32)e), 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    off[0] = 0;
    for (u32 e = 0; e <= E; e++) off[e + 1] = off[e] + cnt[e];
  }
  __syncthreads();
  for (u32 e = threadIdx.x; e < E + 2; e += blockDim.x) ptr<int>(a, 1)[e] = off[e], cnt[e] = 0;
  __syncthreads();
  for (u32 p = threadIdx.x; p < pairs; p += blockDim.x) {
    int e = ids[p];
    u32 b = e < 0 || (u32)e >= E ? E : (u32)e;
    ptr<int>(a, 2)[off[b] + atomicAdd(cnt + b, 1)] = (int)p;
  }
}

#define GT 64
#define GK 16

// p0 pairs, p1 K, p2 F, p3 D, p4 E; ptr0 x [T, D], ptr1 offsets, ptr2 order, ptr3 gate_up codes [E, 2F, D],
// ptr4 scales, ptr5 act [pairs, F]. 256 threads.
template <int Dt> __device__ void moe_act_grouped(const Args &a) {
  __shared__ float xs[GK][GT + 4], wg[GK][GT + 4], wu[GK][GT + 4];
  __shared__ int tok[GT];
  u32 e = blockIdx.y, f0 = blockIdx.x * GT, K = a.p[1], F = a.p[2], D = a.p[3], tid = threadIdx.x;
  const int *off = ptr<const int>(a, 1), *order = ptr<const int>(a, 2);
  int start = off[e], end = off[e + 1];
  u32 tr = tid / 16, tc = tid % 16;
  W w{ptr<const unsigned char>(a, 3), ptr<const void>(a, 4), D};
  const float *x = ptr<const float>(a, 0);
  for (int t0 = start; t0 < end; t0 += GT) {
    __syncthreads();
    if (tid < GT) tok[tid] = t0 + (int)tid < end ? order[t0 + tid] : -1;
    __syncthreads();
    float ag[4][4] = {}, au[4][4] = {};
    for (u32 k0 = 0; k0 < D; k0 += GK) {
#pragma unroll
      for (int l = 0; l < 4; l++) {
        u32 q = tid + 256 * l, r = q / GK, k = q % GK, gk = k0 + k, f = f0 + r;
        int pr = tok[r];
        xs[k][r] = pr >= 0 && gk < D ? x[(u64)((u32)pr / K) * D + gk] : 0.0f;
        bool ok = f < F && gk < D;
        wg[k][r] = ok ? at<Dt>(w, ((u64)e * 2 * F + f) * D + gk) : 0.0f;
        wu[k][r] = ok ? at<Dt>(w, ((u64)e * 2 * F + F + f) * D + gk) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < GK; k++) {
        float xv[4], gv[4], uv[4];
#pragma unroll
        for (int i = 0; i < 4; i++) xv[i] = xs[k][tr + 16 * i], gv[i] = wg[k][tc + 16 * i], uv[i] = wu[k][tc + 16 * i];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) ag[i][j] += xv[i] * gv[j], au[i][j] += xv[i] * uv[j];
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int pr = tok[tr + 16 * i];
      if (pr < 0) continue;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        u32 f = f0 + tc + 16 * j;
        float g = ag[i][j];
        if (f < F) ptr<float>(a, 5)[(u64)pr * F + f] = g / (1.0f + expf(-g)) * au[i][j];
      }
    }
  }
}
FOR_WEIGHT_DTYPES(moe_act_grouped)

// p0 pairs, p1 K, p2 F, p3 D, p4 E; ptr0 act [pairs, F], ptr1 offsets, ptr2 order, ptr3 down codes [E, D, F],
// ptr4 scales, ptr5 y [pairs, D]. 256 threads.
template <int Dt> __device__ void moe_down_grouped(const Args &a) {
  __shared__ float xs[GK][GT + 4], ws[GK][GT + 4];
  __shared__ int tok[GT];
  u32 e = blockIdx.y, c0 = blockIdx.x * GT, F = a.p[2], D = a.p[3], tid = threadIdx.x;
  const int *off = ptr<const int>(a, 1), *order = ptr<const int>(a, 2);
  int start = off[e], end = off[e + 1];
  u32 tr = tid / 16, tc = tid % 16;
  W w{ptr<const unsigned char>(a, 3), ptr<const void>(a, 4), F};
  const float *act = ptr<const float>(a, 0);
  for (int t0 = start; t0 < end; t0 += GT) {
    __syncthreads();
    if (tid < GT) tok[tid] = t0 + (int)tid < end ? order[t0 + tid] : -1;
    __syncthreads();
    float acc[4][4] = {};
    for (u32 k0 = 0; k0 < F; k0 += GK) {
#pragma unroll
      for (int l = 0; l < 4; l++) {
        u32 q = tid + 256 * l, r = q / GK, k = q % GK, gk = k0 + k, c = c0 + r;
        int pr = tok[r];
        xs[k][r] = pr >= 0 && gk < F ? act[(u64)pr * F + gk] : 0.0f;
        ws[k][r] = c < D && gk < F ? at<Dt>(w, ((u64)e * D + c) * F + gk) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < GK; k++) {
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
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int pr = tok[tr + 16 * i];
      if (pr < 0) continue;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        u32 c = c0 + tc + 16 * j;
        if (c < D) ptr<float>(a, 5)[(u64)pr * D + c] = acc[i][j];
      }
    }
  }
}
FOR_WEIGHT_DTYPES(moe_down_grouped)
