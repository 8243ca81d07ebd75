// The cuda backend's weight generator (kernels/cuda/random.cuh) compiled for the host, so tests/cuda_random_test.ts
// can check it bit for bit against weights/random_source.ts. The FP8 path repeats the two device passes
// (kernels/cuda/random.cu: each block's amax as f32 bits, then codes and per-K-row scales).
#include "../kernels/cuda/random.cuh"

void rnd_fill(uint32_t state, double mean, double width, uint64_t first, uint32_t n, float *out) {
  for (uint32_t i = 0; i < n; i++) out[i] = rnd_value(state, first + i, mean, width);
}

// kind 0 bf16, 1 f16, 2 e4m3, of f32 bit patterns.
void rnd_encode(int kind, const uint32_t *bits, uint32_t n, uint16_t *out) {
  for (uint32_t i = 0; i < n; i++) {
    out[i] = (uint16_t)(kind == 0 ? rnd_bf16(bits[i]) : kind == 1 ? rnd_f16(bits[i]) : rnd_e4m3(bits[i]));
  }
}

void rnd_fp8(uint32_t state, double mean, double width, uint64_t n, uint64_t run, uint32_t k, uint32_t *amax,
             uint8_t *codes, float *scales) {
  for (uint64_t i = 0; i < n; i++) {
    uint32_t b = rnd_f32_bits(rnd_value(state, i, mean, width)) & 0x7fffffffu;
    if (b > amax[i / run]) amax[i / run] = b;
  }
  for (uint64_t i = 0; i < n; i++) {
    float s = rnd_fp8_scale(rnd_bits_f32(amax[i / run]));
    codes[i] = (uint8_t)rnd_fp8_code(rnd_value(state, i, mean, width), s);
    if (i % k == 0) scales[i / k] = s;
  }
}

void rnd_nvfp4(uint32_t state, double mean, double width, uint64_t n, uint64_t run, uint32_t *amax, uint8_t *packed,
               float *scales) {
  for (uint64_t i = 0; i < n; i++) {
    uint32_t b = rnd_f32_bits(rnd_value(state, i, mean, width)) & 0x7fffffffu;
    if (b > amax[i / run]) amax[i / run] = b;
  }
  for (uint64_t b = 0; b < n / 16; b++) {
    float v[16];
    for (int j = 0; j < 16; j++) v[j] = rnd_value(state, 16 * b + j, mean, width);
    scales[b] = rnd_nvfp4_block(v, rnd_nvfp4_global(rnd_bits_f32(amax[16 * b / run])), packed + 8 * b);
  }
}
