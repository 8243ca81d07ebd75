/**
 * WGSL for `rms_norm`: one workgroup per row, its 64 threads summing squares in a tree, then scaling. The inverse
 * square root is `1 / sqrt` in f32 (the reference rounds it to f32 too).
 *
 * Parameters: `P[0]` rows, `P[1]` row width D, `P[2]` eps (f32 bits). Dispatched as one group per row (2-D).
 *
 * @module
 */

import { floats, PRELUDE, type Stored } from "./common.ts";

/** `out[r] = x[r] · rsqrt(mean(x[r]²) + eps) · w`, for `w` stored as `w`. */
export function rmsNormKernel(w: Stored): string {
  return PRELUDE + floats("W", 2, w) + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
var<workgroup> part: array<f32, 64>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= P[0]) { return; }
  let d = P[1];
  let o = r * d;
  var s = 0.0;
  for (var i = lid.x; i < d; i += 64u) { let v = X[o + i]; s += v * v; }
  part[lid.x] = s;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (lid.x < k) { part[lid.x] += part[lid.x + k]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(part[0] / f32(d) + pf(2u));
  for (var i = lid.x; i < d; i += 64u) { O[o + i] = (X[o + i] * inv) * W_at(i); }
}`;
}
