/**
 * WGSL for the MoE ops: routing (`moe_topk`, `moe_gate`: the router softmax per token, in f32 as the reference
 * rounds it) and the routed experts (`moe_experts`) in three passes over every (token, slot) pair at once — one
 * dispatch each, whatever the batch: the SwiGLU activations `act[t, j, :]`, the down projections `y[t, j, :]`, then
 * the gate-weighted sum over the slots. Expert weights are read where `ids` points, on the device.
 *
 * @module
 */

import { ELEMENT_ARGS, floats, PRELUDE, type Stored } from "./common.ts";

/** `p_e = exp(l_e − max) / Σ exp(l − max)` over row `r` of `L [T, E]` (E = `P[1]`). */
const SOFTMAX = /* wgsl */ `
fn rowMax(o: u32, e: u32) -> f32 {
  var m = L[o];
  for (var i = 1u; i < e; i++) { m = max(m, L[o + i]); }
  return m;
}
fn rowSum(o: u32, e: u32, m: f32) -> f32 {
  var s = 0.0;
  for (var i = 0u; i < e; i++) { s += exp(L[o + i] - m); }
  return s;
}`;

/**
 * `moe_topk`: the `K` most probable experts per token, most probable first, ties to the lower id. Parameters:
 * `P[0]` T, `P[1]` E, `P[2]` K. One thread per token; each pick is the best expert ranked after the previous one.
 */
export const MOE_TOPK = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<i32>;
${SOFTMAX}
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let t = flatIndex(wid, lid, nwg);
  if (t >= P[0]) { return; }
  let e = P[1];
  let k = P[2];
  let o = t * e;
  let m = rowMax(o, e);
  let s = rowSum(o, e, m);
  var lastP = 2.0;
  var lastI = -1;
  for (var j = 0u; j < k; j++) {
    var bestP = -1.0;
    var bestI = -1;
    for (var i = 0u; i < e; i++) {
      let p = exp(L[o + i] - m) / s;
      let after = p < lastP || (p == lastP && i32(i) > lastI);
      if (after && p > bestP) { bestP = p; bestI = i32(i); }
    }
    O[t * k + j] = bestI;
    lastP = bestP;
    lastI = bestI;
  }
}`;

/** `moe_gate`: the chosen experts' probabilities renormalised. Parameters: `P[0]` T, `P[1]` E, `P[2]` K. */
export const MOE_GATE = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDS: array<i32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
${SOFTMAX}
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let t = flatIndex(wid, lid, nwg);
  if (t >= P[0]) { return; }
  let e = P[1];
  let k = P[2];
  let o = t * e;
  let m = rowMax(o, e);
  let s = rowSum(o, e, m);
  var top = 0.0;
  for (var j = 0u; j < k; j++) { top += exp(L[o + u32(IDS[t * k + j])] - m) / s; }
  for (var j = 0u; j < k; j++) { O[t * k + j] = (exp(L[o + u32(IDS[t * k + j])] - m) / s) / (top + 1e-20); }
}`;

/**
 * Pass 1: `act[t, j, i] = silu(gate_e[i]·x[t]) · (up_e[i]·x[t])`, `e = ids[t, j]`. Parameters: `P[0]` T·K·F,
 * `P[1]` K, `P[2]` F, `P[3]` D, `P[4]` E (an id outside 0..E−1 gives 0), `P[5]` the first scale word (quantised).
 */
export function moeActKernel(w: Stored): string {
  return PRELUDE + floats("GU", 3, w, "P[3]", "P[5]") + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDS: array<i32>;
@group(0) @binding(4) var<storage, read_write> A: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let n = flatIndex(wid, lid, nwg);
  if (n >= P[0]) { return; }
  let f = P[2];
  let d = P[3];
  let tj = n / f;
  let i = n - tj * f;
  let t = tj / P[1];
  let e = IDS[tj];
  if (e < 0 || u32(e) >= P[4]) { A[n] = 0.0; return; }
  let go = (u32(e) * 2u * f + i) * d;
  let uo = go + f * d;
  var g = 0.0;
  var u = 0.0;
  for (var c = 0u; c < d; c++) {
    let xv = X[t * d + c];
    g += GU_at(go + c) * xv;
    u += GU_at(uo + c) * xv;
  }
  A[n] = g / (1.0 + exp(-g)) * u;
}`;
}

/**
 * Pass 2: `y[t, j, c] = down_e[c] · act[t, j]`. Parameters: `P[0]` T·K·D, `P[1]` K, `P[2]` F, `P[3]` D, `P[4]` E,
 * `P[5]` the first scale word (quantised).
 */
export function moeDownKernel(w: Stored): string {
  return PRELUDE + floats("DN", 3, w, "P[2]", "P[5]") + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDS: array<i32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let n = flatIndex(wid, lid, nwg);
  if (n >= P[0]) { return; }
  let f = P[2];
  let d = P[3];
  let tj = n / d;
  let c = n - tj * d;
  let e = IDS[tj];
  if (e < 0 || u32(e) >= P[4]) { Y[n] = 0.0; return; }
  let wo = (u32(e) * d + c) * f;
  var y = 0.0;
  for (var i = 0u; i < f; i++) { y += DN_at(wo + i) * A[tj * f + i]; }
  Y[n] = y;
}`;
}

/** Pass 3: `out[t, c] = Σ_j w[t, j] · y[t, j, c]`. Parameters: `P[0]` T·D, `P[1]` K, `P[3]` D. */
export const MOE_MIX = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read_write> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let n = flatIndex(wid, lid, nwg);
  if (n >= P[0]) { return; }
  let k = P[1];
  let d = P[3];
  let t = n / d;
  let c = n - t * d;
  var acc = 0.0;
  for (var j = 0u; j < k; j++) { acc += G[t * k + j] * Y[(t * k + j) * d + c]; }
  O[n] = acc;
}`;
