/**
 * WGSL for `matmul` with f32, bf16, f16, FP8, q8, NVFP4 or q4 weights (decoded as they are read):
 * `y[m, col0 + j] = Σ_k x[m, k] · W[j, k]` for the `rows` output features of one weight part (a weight over the
 * device's binding limit is split into row ranges, one dispatch each). One thread per output, accumulating in f32.
 *
 * Parameters: `P[0]` outputs of this dispatch (M · rows), `P[1]` rows of the part, `P[2]` K, `P[3]` N (the row
 * stride of y), `P[4]` col0 (the part's first row), `P[5]` the part's first scale word (quantised weights).
 *
 * @module
 */

import { ELEMENT_ARGS, floats, PRELUDE, type Stored } from "./common.ts";

/** The matmul described in the module docs, for weights stored as `w`. */
export function matmulKernel(w: Stored): string {
  return PRELUDE + floats("W", 2, w, "P[2]", "P[5]") + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  let rows = P[1];
  let k = P[2];
  let m = i / rows;
  let j = i - m * rows;
  var acc = 0.0;
  let xo = m * k;
  let wo = j * k;
  for (var c = 0u; c < k; c++) { acc += X[xo + c] * W_at(wo + c); }
  Y[m * P[3] + P[4] + j] = acc;
}`;
}
