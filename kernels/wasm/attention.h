// Shared by the MLA attention kernels (attention.c, attention_prefill.c).
#pragma once
#include "common.h"

// One query row's online-softmax step over a tile of n scores Si, of which the first vis are visible (causal): Si
// becomes the weights exp(s − max) (0 past vis), the running max *mx and sum *den are updated, and the row's
// accumulated output O[0, width) is rescaled to the new max. A row that sees nothing in this tile keeps its state.
INLINE void softmax_tile(float *Si, int n, int vis, float *mx, float *den, float *O, int width) {
  vis = vis < n ? vis : n;
  if (vis <= 0) {
    for (int l = 0; l < n; l++) Si[l] = 0.0f;
    return;
  }
  for (int l = vis; l < n; l++) Si[l] = -__builtin_inff();
  float m = *mx;
  for (int l = 0; l < vis; l++) m = Si[l] > m ? Si[l] : m;
  float corr = expf_(*mx - m), sum = 0.0f;  // exp(−inf) = 0 on the first tile
  int l = 0;
  f4 mv = splat(m), acc = splat(0.0f);
  for (; l + 4 <= n; l += 4) {
    f4 e = exp4(wasm_f32x4_sub(ld(Si + l), mv));
    st(Si + l, e);
    acc = wasm_f32x4_add(acc, e);
  }
  for (; l < n; l++) {
    Si[l] = expf_(Si[l] - m);
    sum += Si[l];
  }
  *den = *den * corr + sum + hsum(acc);
  *mx = m;
  if (corr != 1.0f) {
    f4 cv = splat(corr);
    int c = 0;
    for (; c + 4 <= width; c += 4) st(O + c, wasm_f32x4_mul(ld(O + c), cv));
    for (; c < width; c++) O[c] *= corr;
  }
}
