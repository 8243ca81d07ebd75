/**
 * WGSL for the vision tower's ops: block-diagonal `attention` and its `attention_rows` form (queries of some rows
 * against keys of a longer state), `gelu`, and `patch_merge`.
 *
 * Attention runs one workgroup of 64 per (query, head). Each query's key range (its segment, one contiguous run of
 * rows) comes from a table the backend computes on the host from the segment ids. Three passes over the range: the
 * maximum score, the sum of exponentials, then the value sum tile by tile (probabilities of 256 keys in workgroup
 * memory), recomputing scores rather than storing them, so no scratch grows with the image.
 *
 * @module
 */

import { ELEMENT_ARGS, PRELUDE } from "./common.ts";

/** The geometry an attention kernel is generated for (head count and widths). */
export type AttentionGeometry = { heads: number; d: number; dv: number };

const TILE = 256;

/**
 * Attention for one (query, head) per workgroup. Parameters: `P[0]` queries, `P[1]` scale (f32 bits). `R [Q, 2]`
 * gives each query's key range `[start, end)`.
 */
export function attentionKernel(g: AttentionGeometry): string {
  const { heads: H, d: D, dv: DV } = g, NC = Math.ceil(DV / 64);
  return PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> Q: array<f32>;
@group(0) @binding(2) var<storage, read_write> K: array<f32>;
@group(0) @binding(3) var<storage, read_write> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> R: array<i32>;
@group(0) @binding(5) var<storage, read_write> O: array<f32>;
var<workgroup> q: array<f32, ${D}>;
var<workgroup> p: array<f32, ${TILE}>;
var<workgroup> red: array<f32, 64>;
var<workgroup> range: array<u32, 2>;

fn score(j: u32, h: u32) -> f32 {
  var s = 0.0;
  let ko = (j * ${H}u + h) * ${D}u;
  for (var c = 0u; c < ${D}u; c++) { s += q[c] * K[ko + c]; }
  return s * pf(1u);
}

fn reduce(op: u32, l: u32) -> f32 {
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (l < k) {
      if (op == 0u) { red[l] = max(red[l], red[l + k]); } else { red[l] = red[l] + red[l + k]; }
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P[0] * ${H}u) { return; }
  let l = lid3.x;
  let i = g / ${H}u;
  let h = g % ${H}u;
  if (l == 0u) {
    range[0] = u32(R[2u * i]);
    range[1] = u32(R[2u * i + 1u]);
  }
  for (var c = l; c < ${D}u; c += 64u) { q[c] = Q[(i * ${H}u + h) * ${D}u + c]; }
  workgroupBarrier();
  let start = workgroupUniformLoad(&range[0]);
  let end = workgroupUniformLoad(&range[1]);
  var m = -3.4e38;
  for (var j = start + l; j < end; j += 64u) { m = max(m, score(j, h)); }
  red[l] = m;
  workgroupBarrier();
  let mx = reduce(0u, l);
  var s = 0.0;
  for (var j = start + l; j < end; j += 64u) { s += exp(score(j, h) - mx); }
  red[l] = s;
  workgroupBarrier();
  let total = reduce(1u, l);
  var acc: array<f32, ${NC}>;
  for (var t = start; t < end; t += ${TILE}u) {
    let n = min(${TILE}u, end - t);
    for (var jj = l; jj < n; jj += 64u) { p[jj] = exp(score(t + jj, h) - mx); }
    workgroupBarrier();
    for (var k = 0u; k < ${NC}u; k++) {
      let c = l + 64u * k;
      if (c < ${DV}u) {
        var a = acc[k];
        for (var jj = 0u; jj < n; jj++) { a += p[jj] * V[((t + jj) * ${H}u + h) * ${DV}u + c]; }
        acc[k] = a;
      }
    }
    workgroupBarrier();
  }
  for (var k = 0u; k < ${NC}u; k++) {
    let c = l + 64u * k;
    if (c < ${DV}u) { O[(i * ${H}u + h) * ${DV}u + c] = acc[k] / total; }
  }
}`;
}

/**
 * `gelu` with erf from Abramowitz & Stegun 7.1.26 (|Δerf| ≤ 1.5e-7, so |Δ| ≤ 1e-7·|x|). Parameters: `P[0]` count.
 */
export const GELU = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
fn erf(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t *
    exp(-a * a);
  return select(-y, y, x >= 0.0);
}
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  let v = X[i];
  O[i] = 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}`;

/**
 * `patch_merge`: `out[t, ch·K + j] = x[index[t, j], ch]`. Parameters: `P[0]` outputs (M · C · K), `P[1]` C, `P[2]` K,
 * `P[3]` rows of x (an index outside them writes 0).
 */
export const PATCH_MERGE = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> I: array<i32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let n = flatIndex(wid, lid, nwg);
  if (n >= P[0]) { return; }
  let c = P[1];
  let k = P[2];
  let t = n / (c * k);
  let r = n - t * c * k;
  let ch = r / k;
  let j = r - ch * k;
  let row = I[t * k + j];
  if (row < 0 || u32(row) >= P[3]) { O[n] = 0.0; return; }
  O[n] = X[u32(row) * c + ch];
}`;
