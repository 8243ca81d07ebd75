// sample (ops/sample.ts) with the constraint masks on the device, one block of 256 per row, so a step reads back
// token ids only. The same algorithm as kernels/wgsl/sample.ts: the reference sorts a row's allowed ids by logit
// (ties: lower id first), cuts to the top k, then to the shortest prefix reaching top p, and takes the first id
// whose cumulative probability passes `uniform · mass`; here each cut is found by bisection over a 32-bit key that
// orders f32 logits, then over ids: 32 + ⌈log2 V⌉ passes over the row, each a block reduction. Probabilities
// exp((l − max) / T) and their sums are f32 (the reference: f64), so a draw within ~1e-6 of a boundary may pick the
// neighbouring id.
//
// p0 rows, p1 V, p2 mask words per row (⌈V / 32⌉), p3 mask rows; ptr0 logits [R, V], ptr1 temperature [R],
// ptr2 top k [R], ptr3 top p [R], ptr4 uniform [R], ptr5 mask row per row [R] (−1: none), ptr6 masks, ptr7 ids [R].
#include "common.cuh"

#define SN 256

struct Cut {
  u32 k, i;
};

__device__ __forceinline__ u32 sortKey(float v) {
  u32 b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ bool allowed(const Args &a, u32 r, u32 j) {
  int m = ptr<const int>(a, 5)[r];
  if (m < 0) return true;
  if ((u32)m >= a.p[3]) return false;
  u32 w = (u32)ptr<const int>(a, 6)[(u64)m * a.p[2] + (j >> 5)];
  return ((w >> (j & 31)) & 1u) == 1u;
}

__device__ __forceinline__ bool within(u32 k, u32 j, Cut c) { return k > c.k || (k == c.k && j <= c.i); }

__device__ __forceinline__ u32 blockSumU(u32 v, u32 *red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  u32 r = 0;
  for (u32 i = 0; i < SN / 32; i++) r += red[i];
  return r;
}

// Σ p (what 0) or the count (what 1) of the allowed ids within both cuts.
__device__ float measure(const Args &a, u32 r, u32 what, Cut c, Cut l, float lmax, float t, float *redf, u32 *redu) {
  u32 v = a.p[1];
  const float *L = ptr<const float>(a, 0) + (u64)r * v;
  float s = 0.0f;
  u32 n = 0;
  for (u32 j = threadIdx.x; j < v; j += SN) {
    float x = L[j];
    u32 k = sortKey(x);
    if (allowed(a, r, j) && within(k, j, c) && within(k, j, l)) s += expf((x - lmax) / t), n++;
  }
  if (what == 1) return (float)blockSumU(n, redu);
  return blockSum(s, redf);
}

__device__ __forceinline__ bool passes(float m, float theta, u32 mode) { return mode == 0 ? m >= theta : m > theta; }

// The first id in rank order within the cut l whose prefix passes θ, as its (key, id): assumes one does.
__device__ Cut first(const Args &a, u32 r, u32 what, float theta, u32 mode, Cut l, float lmax, float t, float *redf,
                     u32 *redu) {
  u32 lo = 0, hi = 0xffffffffu;
  while (lo < hi) {
    u32 mid = lo + (hi - lo) / 2 + (hi - lo) % 2;
    if (passes(measure(a, r, what, Cut{mid, 0xffffffffu}, l, lmax, t, redf, redu), theta, mode)) lo = mid;
    else hi = mid - 1;
  }
  u32 ck = lo, x = 0, y = a.p[1] - 1;
  while (x < y) {
    u32 mid = x + (y - x) / 2;
    if (passes(measure(a, r, what, Cut{ck, mid}, l, lmax, t, redf, redu), theta, mode)) y = mid;
    else x = mid + 1;
  }
  return Cut{ck, x};
}

KERNEL(sample) {
  __shared__ float redf[32];
  __shared__ u32 redu[32];
  __shared__ u32 bk[SN], bi[SN];
  u32 r = blockIdx.x, l = threadIdx.x, v = a.p[1];
  if (r >= a.p[0]) return;
  const float *L = ptr<const float>(a, 0) + (u64)r * v;
  // The best allowed id (largest logit, lowest id), and how many ids are allowed.
  u32 k0 = 0, i0 = 0xffffffffu, n = 0;
  for (u32 j = l; j < v; j += SN) {
    if (allowed(a, r, j)) {
      u32 k = sortKey(L[j]);
      if (i0 == 0xffffffffu || k > k0) k0 = k, i0 = j;
      n++;
    }
  }
  bk[l] = k0, bi[l] = i0;
  __syncthreads();
  for (u32 s = SN / 2; s > 0; s >>= 1) {
    if (l < s) {
      bool ok = bi[l + s] != 0xffffffffu;
      if (ok && (bi[l] == 0xffffffffu || bk[l + s] > bk[l] || (bk[l + s] == bk[l] && bi[l + s] < bi[l]))) {
        bk[l] = bk[l + s], bi[l] = bi[l + s];
      }
    }
    __syncthreads();
  }
  u32 best = bi[0];
  u32 count = blockSumU(n, redu);
  float t = ptr<const float>(a, 1)[r];
  int *out = ptr<int>(a, 7);
  if (count == 0 || !(t > 0.0f)) {
    if (l == 0) out[r] = count == 0 ? -1 : (int)best;
    return;
  }
  float lmax = L[best];
  int tk = ptr<const int>(a, 2)[r];
  u32 topK = tk > 0 ? (u32)tk : 0;
  float topP = ptr<const float>(a, 3)[r], u = fminf(fmaxf(ptr<const float>(a, 4)[r], 0.0f), 1.0f);
  const Cut all{0, 0xffffffffu};
  Cut cut = all;
  if (topK > 0 && topK < count) cut = first(a, r, 1, (float)topK, 0, all, lmax, t, redf, redu);
  if (topP < 1.0f) {
    float total = measure(a, r, 0, cut, all, lmax, t, redf, redu);
    cut = first(a, r, 0, topP * total, 0, cut, lmax, t, redf, redu);
  }
  float mass = measure(a, r, 0, cut, all, lmax, t, redf, redu), goal = u * mass;
  Cut pick;
  if (mass > goal) {
    pick = first(a, r, 0, goal, 1, cut, lmax, t, redf, redu);
  } else {
    // No prefix passes (u = 1, or rounding): the last kept id, the one whose prefix holds them all.
    float kept = measure(a, r, 1, cut, all, lmax, t, redf, redu);
    pick = first(a, r, 1, kept, 0, cut, lmax, t, redf, redu);
  }
  if (l == 0) out[r] = (int)pick.i;
}
