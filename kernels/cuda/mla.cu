// Multi-head latent attention over the paged latent cache (ops/mla_cache_write.ts, ops/mla_attention.ts), in the
// absorbed form, split over the context FlashMLA-style; every dimension comes from the node's attributes (this
// model: 256-wide latents + 64 rope = 320-wide cache rows, 256-wide values).
//
// - mla_cache_write_<f32|bf16>: each token's [ckv | kpe] row stored where its block table points (rounded to bf16
//   for a bf16 cache, or when p7 asks for a bf16 cache held as f32), and passed through to the output.
// - mla_absorb_<dtype>: qa[t, h, :] = q_nope[t, h] · W_UK[h] (kvr wide), one block per (token, head).
// - mla_split_<f32|bf16>: one block per (token, head, context chunk): the chunk's scores MLA_CHUNK positions at a
//   time (one warp per position, lanes along the 320-wide row), its max m, Σ exp(s − m) = l and the unnormalised
//   latent sum Σ exp(s − m) · c_kv, written to scratch. The host picks the chunk count (many for decode, one for a
//   long prefill, whose tokens and heads are parallel enough), so the scratch stays small.
// - mla_merge_<dtype>: one block per (token, head): rescales the chunks to their common max, divides by the total,
//   and expands the latent through W_UV (one warp per output value, lanes along kvr).
#include "common.cuh"

#define MLA_CHUNK 256

// p0 T · row, p1 kvr, p2 dr, p3 blocks in the cache, p4 block size, p5 sequences, p6 blocks per sequence, p7 round
// to bf16 (an f32 cache); ptr0 ckv [T, kvr], ptr1 kpe [T, dr], ptr2 cache, ptr3 seq, ptr4 pos, ptr5 block table,
// ptr6 out [T, row].
template <bool BF16CACHE> __device__ void mlaCacheWrite(const Args &a) {
  u32 n = flat();
  if (n >= a.p[0]) return;
  u32 kvr = a.p[1], dr = a.p[2], row = kvr + dr, t = n / row, c = n - t * row;
  float v = c < kvr ? ptr<const float>(a, 0)[t * kvr + c] : ptr<const float>(a, 1)[t * dr + c - kvr];
  ptr<float>(a, 6)[n] = v;
  int s = ptr<const int>(a, 3)[t], p = ptr<const int>(a, 4)[t];
  u32 bs = a.p[4];
  if (s < 0 || (u32)s >= a.p[5] || p < 0 || (u32)p / bs >= a.p[6]) return;
  int b = ptr<const int>(a, 5)[(u64)s * a.p[6] + (u32)p / bs];
  if (b < 0 || (u32)b >= a.p[3]) return;
  u64 o = ((u64)b * bs + (u32)p % bs) * row + c;
  if (BF16CACHE) {
    ptr<unsigned short>(a, 2)[o] = (unsigned short)bf16Bits(v);
  } else {
    ptr<float>(a, 2)[o] = a.p[7] ? __uint_as_float(bf16Bits(v) << 16) : v;
  }
}
KERNEL(mla_cache_write_f32) { mlaCacheWrite<false>(a); }
KERNEL(mla_cache_write_bf16) { mlaCacheWrite<true>(a); }

// p0 T, p1 H, p2 dn, p3 dr, p4 dv, p5 kvr; ptr0 q [T, H, dn + dr], ptr1 W_kvb codes [H · (dn + dv), kvr],
// ptr2 scales, ptr3 qa [T, H, kvr]. Dynamic shared memory: dn floats.
template <int D> __device__ void mla_absorb(const Args &a) {
  float *qn = dynShared();
  u32 g = blockIdx.x, H = a.p[1], dn = a.p[2], dr = a.p[3], dv = a.p[4], kvr = a.p[5];
  if (g >= a.p[0] * H) return;
  u32 h = g % H;
  const float *q = ptr<const float>(a, 0) + (u64)g * (dn + dr);
  for (u32 d = threadIdx.x; d < dn; d += blockDim.x) qn[d] = q[d];
  __syncthreads();
  W w{ptr<const unsigned char>(a, 1), ptr<const void>(a, 2), kvr};
  u64 wk = (u64)h * (dn + dv) * kvr;
  for (u32 k = threadIdx.x; k < kvr; k += blockDim.x) {
    float s = 0.0f;
    for (u32 d = 0; d < dn; d++) s += qn[d] * at<D>(w, wk + (u64)d * kvr + k);
    ptr<float>(a, 3)[(u64)g * kvr + k] = s;
  }
}
FOR_WEIGHT_DTYPES(mla_absorb)

// p0 T, p1 sequences, p2 blocks in the cache, p3 scale (f32 bits), p4 H, p5 dn, p6 dr, p7 kvr, p8 block size,
// p9 blocks per sequence, p10 chunks, p11 span (positions per chunk, a multiple of MLA_CHUNK); ptr0 qa, ptr1 q,
// ptr2 cache, ptr3 seq, ptr4 pos, ptr5 block table, ptr6 (m, l) per (token, head, chunk), ptr7 latent sums
// [T, H, chunks, kvr]. Grid (T · H, chunks), 128 threads (kvr ≤ 128 · MLA_ACC). A block walks its span
// MLA_CHUNK positions at a time with an online softmax (running max, sum and latent sum rescaled as the max
// grows). Dynamic shared memory: (kvr + dr) floats of query and MLA_CHUNK scores (rounded up to an even count of
// floats), then MLA_CHUNK 8-byte row offsets.
#define MLA_ACC 8
template <int C> __device__ void mlaSplit(const Args &a) {
  float *sh = dynShared();
  __shared__ float red[32];
  __shared__ int info[2];
  u32 g = blockIdx.x, chunk = blockIdx.y, H = a.p[4], dn = a.p[5], dr = a.p[6], kvr = a.p[7], row = kvr + dr;
  u32 bs = a.p[8], mb = a.p[9], chunks = a.p[10], span = a.p[11];
  if (g >= a.p[0] * H) return;
  u32 t = g / H;
  float *qv = sh, *p = sh + row;
  u64 *slot = reinterpret_cast<u64 *>(sh + ((row + MLA_CHUNK + 1) & ~1u)); // 8-byte aligned
  if (threadIdx.x == 0) {
    int s = ptr<const int>(a, 3)[t], pos = ptr<const int>(a, 4)[t];
    bool ok = s >= 0 && (u32)s < a.p[1] && pos >= 0 && (u32)pos < mb * bs;
    info[0] = ok ? s : 0;
    info[1] = ok ? pos + 1 : 0;
  }
  for (u32 k = threadIdx.x; k < row; k += blockDim.x) {
    qv[k] = k < kvr ? ptr<const float>(a, 0)[(u64)g * kvr + k] : ptr<const float>(a, 1)[(u64)g * (dn + dr) + dn + k - kvr];
  }
  __syncthreads();
  u32 s = (u32)info[0], n = (u32)info[1], begin = chunk * span, end = min(n, begin + span);
  u64 part = (u64)g * chunks + chunk;
  float *ml = ptr<float>(a, 6), *acc = ptr<float>(a, 7) + part * kvr;
  W c{ptr<const unsigned char>(a, 2), nullptr, row};
  const int *bt = ptr<const int>(a, 5);
  u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  float scale = pf(a, 3), mRun = -3.4e38f, lRun = 0.0f, accR[MLA_ACC];
#pragma unroll
  for (int i = 0; i < MLA_ACC; i++) accR[i] = 0.0f;
  for (u32 j0 = begin; j0 < end; j0 += MLA_CHUNK) {
    u32 len = min((u32)MLA_CHUNK, end - j0);
    for (u32 jj = warp; jj < len; jj += warps) {
      u32 j = j0 + jj;
      int b = bt[(u64)s * mb + j / bs];
      bool ok = b >= 0 && (u32)b < a.p[2];
      u64 o = ok ? ((u64)b * bs + j % bs) * row : 0;
      float d = 0.0f;
      if (ok) {
        for (u32 k = lane; k < row; k += 32) d += qv[k] * at<C>(c, o + k);
      }
      d = warpSum(d);
      if (lane == 0) p[jj] = ok ? d * scale : -3.4e38f, slot[jj] = ok ? o : ~0ull;
    }
    __syncthreads();
    float m = -3.4e38f;
    for (u32 jj = threadIdx.x; jj < len; jj += blockDim.x) m = fmaxf(m, p[jj]);
    m = fmaxf(blockMax(m, red), mRun);
    float l = 0.0f;
    for (u32 jj = threadIdx.x; jj < len; jj += blockDim.x) {
      float e = expf(p[jj] - m);
      p[jj] = e;
      l += e;
    }
    l = blockSum(l, red); // its barriers also order the writes to p before the reads below
    float old = expf(mRun - m);
    lRun = lRun * old + l;
    mRun = m;
#pragma unroll
    for (int i = 0; i < MLA_ACC; i++) {
      u32 k = threadIdx.x + blockDim.x * i;
      if (k >= kvr) break;
      float v = accR[i] * old;
      for (u32 jj = 0; jj < len; jj++) {
        if (slot[jj] != ~0ull) v += p[jj] * at<C>(c, slot[jj] + k);
      }
      accR[i] = v;
    }
    __syncthreads(); // p and slot are rewritten by the next positions
  }
#pragma unroll
  for (int i = 0; i < MLA_ACC; i++) {
    u32 k = threadIdx.x + blockDim.x * i;
    if (k < kvr) acc[k] = accR[i];
  }
  if (threadIdx.x == 0) ml[2 * part] = mRun, ml[2 * part + 1] = lRun;
}
KERNEL(mla_split_f32) { mlaSplit<F32>(a); }
KERNEL(mla_split_bf16) { mlaSplit<BF16>(a); }

// p0 T, p1 H, p2 dn, p3 dv, p4 kvr, p5 chunks; ptr0 (m, l) per chunk, ptr1 latent sums, ptr2 W_kvb codes,
// ptr3 scales, ptr4 out [T, H · dv]. 256 threads; dynamic shared memory: kvr floats.
template <int D> __device__ void mla_merge(const Args &a) {
  float *lat = dynShared();
  u32 g = blockIdx.x, H = a.p[1], dn = a.p[2], dv = a.p[3], kvr = a.p[4], chunks = a.p[5];
  if (g >= a.p[0] * H) return;
  u32 h = g % H;
  const float *ml = ptr<const float>(a, 0) + (u64)g * chunks * 2, *acc = ptr<const float>(a, 1) + (u64)g * chunks * kvr;
  float m = -3.4e38f;
  for (u32 c = 0; c < chunks; c++) m = fmaxf(m, ml[2 * c]);
  float total = 0.0f;
  for (u32 c = 0; c < chunks; c++) total += ml[2 * c + 1] * expf(ml[2 * c] - m);
  for (u32 k = threadIdx.x; k < kvr; k += blockDim.x) {
    float v = 0.0f;
    for (u32 c = 0; c < chunks; c++) v += acc[(u64)c * kvr + k] * expf(ml[2 * c] - m);
    lat[k] = total > 0.0f ? v / total : 0.0f;
  }
  __syncthreads();
  W w{ptr<const unsigned char>(a, 2), ptr<const void>(a, 3), kvr};
  u64 wv = ((u64)h * (dn + dv) + dn) * kvr;
  u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  float *o = ptr<float>(a, 4) + (u64)g * dv;
  for (u32 i = warp; i < dv; i += warps) {
    float s = 0.0f;
    for (u32 k = lane; k < kvr; k += 32) s += at<D>(w, wv + (u64)i * kvr + k) * lat[k];
    s = warpSum(s);
    if (lane == 0) o[i] = s;
  }
}
FOR_WEIGHT_DTYPES(mla_merge)
