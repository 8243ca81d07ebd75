/**
 * WGSL for the elementwise ops: `add`, `mul`, `swiglu` and the per-token scale of `attn_temperature` (its scales
 * come computed on the host from the positions, in f64 as the reference does, so the kernel only multiplies).
 *
 * Parameters: `P[0]` the element count (for swiglu: rows · F, with `P[1]` = F).
 *
 * @module
 */

import { ELEMENT_ARGS, PRELUDE } from "./common.ts";

/** `out = a + b` (`op` "+") or `a * b` (`op` "*"), elementwise. */
export function binaryKernel(op: "+" | "*"): string {
  return PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  O[i] = A[i] ${op} B[i];
}`;
}

/** `swiglu`: `x [rows, 2F]` → `silu(x[:, :F]) · x[:, F:]`. */
export const SWIGLU = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  let f = P[1];
  let r = i / f;
  let c = i - r * f;
  let g = X[r * 2u * f + c];
  O[i] = g / (1.0 + exp(-g)) * X[r * 2u * f + f + c];
}`;

/** Rows scaled by one factor each: `out[r, :] = x[r, :] · S[r]` (`P[1]` = row width). */
export const ROW_SCALE = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  O[i] = X[i] * S[i / P[1]];
}`;
