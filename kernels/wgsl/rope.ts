/**
 * WGSL for `rope` (rotary embedding over interleaved pairs, YaRN and 2-D positions included). The cos/sin of each
 * (token, pair) come from a table the backend computes on the host from the run's positions exactly as the
 * reference does (f64 trig of the f32 angle, times the magnitude): GPU `sin`/`cos` lose accuracy far from zero,
 * and positions reach 10⁶. The kernel only rotates.
 *
 * Parameters: `P[0]` pairs (T · heads · half), `P[1]` heads, `P[2]` half (pairs per head), `P[3]` T (the sin
 * table follows the cos table, T · half entries later).
 *
 * @module
 */

import { ELEMENT_ARGS, PRELUDE } from "./common.ts";

/** The rotation described in the module docs. */
export const ROPE = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> CS: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let p = flatIndex(wid, lid, nwg);
  if (p >= P[0]) { return; }
  let half = P[2];
  let t = p / (P[1] * half);
  let i = p % half;
  let c = CS[t * half + i];
  let s = CS[P[3] * half + t * half + i];
  let a = X[2u * p];
  let b = X[2u * p + 1u];
  O[2u * p] = a * c - b * s;
  O[2u * p + 1u] = a * s + b * c;
}`;
