// MoE (ops/moe_topk.ts, moe_gate.ts, moe_experts.ts): routing one thread per token (the router softmax rounded as
// the reference rounds it), then the routed experts in three passes over every (token, slot) pair, expert weights
// read where `ids` points on the device (no read-back):
// 1. moe_act_<dtype>: act[t, j, i] = silu(gate_e[i] · x[t]) · (up_e[i] · x[t]), e = ids[t, j]: one warp per
//    (t, j, i), lanes along D (coalesced rows of the expert);
// 2. moe_down_<dtype>: y[t, j, c] = down_e[c] · act[t, j]: one warp per (t, j, c);
// 3. moe_mix: out[t, c] = Σ_j w[t, j] · y[t, j, c].
// An id outside 0..E − 1 contributes 0. Grouping tokens per expert (one weight read serving every token routed to
// it, a grouped GEMM for prefill) is the next step once a device verifies these.
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

// p0 T · D, p1 K, p3 D; ptr0 y [T, K, D], ptr1 gates [T, K], ptr2 out [T, D].
KERNEL(moe_mix) {
  u32 n = flat();
  if (n >= a.p[0]) return;
  u32 k = a.p[1], d = a.p[3], t = n / d, c = n - t * d;
  const float *g = ptr<const float>(a, 1), *y = ptr<const float>(a, 0);
  float acc = 0.0f;
  for (u32 j = 0; j < k; j++) acc += g[t * k + j] * y[((u64)t * k + j) * d + c];
  ptr<float>(a, 2)[n] = acc;
}
