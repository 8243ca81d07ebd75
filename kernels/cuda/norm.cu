// rms_norm: one block of 256 per row; the weight f32, bf16 or f16 (ops/rms_norm.ts:
// out = x / sqrt(mean(x²) + eps) · w). p0 rows, p1 d, p2 eps (f32 bits); ptr0 x, ptr1 w, ptr2 out.
#include "common.cuh"

template <int D> __device__ void rmsNorm(const Args &a) {
  __shared__ float red[32];
  u32 r = blockIdx.x, d = a.p[1];
  if (r >= a.p[0]) return;
  const float *x = ptr<const float>(a, 0) + (u64)r * d;
  float s = 0.0f;
  for (u32 i = threadIdx.x; i < d; i += blockDim.x) s += x[i] * x[i];
  float inv = 1.0f / sqrtf(blockSum(s, red) / (float)d + pf(a, 2));
  W w{ptr<const unsigned char>(a, 1), nullptr, d};
  float *o = ptr<float>(a, 2) + (u64)r * d;
  for (u32 i = threadIdx.x; i < d; i += blockDim.x) o[i] = (x[i] * inv) * at<D>(w, i);
}
KERNEL(rms_norm_f32) { rmsNorm<F32>(a); }
KERNEL(rms_norm_bf16) { rmsNorm<BF16>(a); }
KERNEL(rms_norm_f16) { rmsNorm<F16>(a); }
