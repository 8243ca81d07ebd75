/**
 * WGSL for `sample`: one workgroup of 256 per row, so a step reads back token ids only.
 *
 * The reference sorts a row's allowed ids by logit (ties: lower id first), cuts to the top k, then to the shortest
 * prefix reaching top p, and takes the first id whose cumulative probability passes `uniform · mass`. Sorting 131k
 * logits per row does not fit a workgroup, so each cut is found by bisection instead: ids are ranked by a 32-bit
 * key that orders f32 logits, then by id, and "the first id in that order whose prefix passes θ" is the largest key
 * whose prefix (every id with that key or a larger one) passes θ, then the smallest id among the ids of that key whose
 * prefix passes θ: 32 + ⌈log2 V⌉ passes over the row, each a sum (or count) reduced across the workgroup. The
 * probabilities `exp((l − max) / T)` and their sums are f32 (the reference: f64), so a draw within ~1e-6 of a
 * boundary may pick the neighbouring id.
 *
 * Parameters: `P[0]` rows, `P[1]` V, `P[2]` mask words per row (⌈V / 32⌉), `P[3]` mask rows.
 *
 * @module
 */

import { PRELUDE } from "./common.ts";

const N = 256;

/** The sampler described in the module docs. */
export const SAMPLE = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> TEMP: array<f32>;
@group(0) @binding(3) var<storage, read_write> TOPK: array<i32>;
@group(0) @binding(4) var<storage, read_write> TOPP: array<f32>;
@group(0) @binding(5) var<storage, read_write> U: array<f32>;
@group(0) @binding(6) var<storage, read_write> MROW: array<i32>;
@group(0) @binding(7) var<storage, read_write> MASK: array<i32>;
@group(0) @binding(8) var<storage, read_write> O: array<i32>;
var<workgroup> rf: array<f32, ${N}>;
var<workgroup> ru: array<u32, ${N}>;
var<workgroup> ri: array<u32, ${N}>;
var<workgroup> bf: f32;
var<workgroup> bu: u32;

// A key that orders f32 values as unsigned integers.
fn key(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn allowed(r: u32, j: u32) -> bool {
  let m = MROW[r];
  if (m < 0) { return true; }
  if (u32(m) >= P[3]) { return false; }
  let w = u32(MASK[u32(m) * P[2] + (j >> 5u)]);
  return ((w >> (j & 31u)) & 1u) == 1u;
}

// Whether id j (key k) ranks at or before the cut (ck, ci): a larger key, or the same key and an id ≤ ci.
fn within(k: u32, j: u32, ck: u32, ci: u32) -> bool {
  return k > ck || (k == ck && j <= ci);
}

// The same value for every thread (uniform), then a barrier so the slot may be reused.
fn shareF(v: f32) -> f32 {
  bf = v;
  let r = workgroupUniformLoad(&bf);
  workgroupBarrier();
  return r;
}
fn shareU(v: u32) -> u32 {
  bu = v;
  let r = workgroupUniformLoad(&bu);
  workgroupBarrier();
  return r;
}

fn sumF(l: u32, v: f32) -> f32 {
  rf[l] = v;
  workgroupBarrier();
  for (var k = ${N / 2}u; k > 0u; k >>= 1u) {
    if (l < k) { rf[l] += rf[l + k]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&rf[0]);
  workgroupBarrier();
  return r;
}
fn sumU(l: u32, v: u32) -> u32 {
  ru[l] = v;
  workgroupBarrier();
  for (var k = ${N / 2}u; k > 0u; k >>= 1u) {
    if (l < k) { ru[l] += ru[l + k]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&ru[0]);
  workgroupBarrier();
  return r;
}

// Σ p (what = 0) or the count (what = 1) of the allowed ids within both cuts.
fn measure(r: u32, l: u32, what: u32, ck: u32, ci: u32, lk: u32, li: u32, lmax: f32, t: f32) -> f32 {
  let v = P[1];
  var s = 0.0;
  var n = 0u;
  for (var j = l; j < v; j += ${N}u) {
    let x = L[r * v + j];
    let k = key(x);
    if (allowed(r, j) && within(k, j, ck, ci) && within(k, j, lk, li)) {
      s += exp((x - lmax) / t);
      n += 1u;
    }
  }
  if (what == 1u) { return f32(sumU(l, n)); }
  return sumF(l, s);
}

// Whether a measure passes θ: ≥ (mode 0) or > (mode 1).
fn passes(m: f32, theta: f32, mode: u32) -> bool {
  if (mode == 0u) { return m >= theta; }
  return m > theta;
}

// The first id in rank order within the cut (lk, li) whose prefix passes θ, as its (key, id): assumes one does.
fn first(r: u32, l: u32, what: u32, theta: f32, mode: u32, lk: u32, li: u32, lmax: f32, t: f32) -> vec2<u32> {
  var lo = 0u;
  var hi = 0xffffffffu;
  while (lo < hi) {
    let mid = lo + (hi - lo) / 2u + (hi - lo) % 2u;
    if (passes(measure(r, l, what, mid, 0xffffffffu, lk, li, lmax, t), theta, mode)) { lo = mid; } else { hi = mid - 1u; }
  }
  let ck = lo;
  var a = 0u;
  var b = P[1] - 1u;
  while (a < b) {
    let mid = a + (b - a) / 2u;
    if (passes(measure(r, l, what, ck, mid, lk, li, lmax, t), theta, mode)) { b = mid; } else { a = mid + 1u; }
  }
  return vec2<u32>(ck, a);
}

@compute @workgroup_size(${N}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= P[0]) { return; }
  let l = lid3.x;
  let v = P[1];
  // The best allowed id (largest logit, lowest id), and how many ids are allowed.
  var bk = 0u;
  var bi = 0xffffffffu;
  var n = 0u;
  for (var j = l; j < v; j += ${N}u) {
    if (allowed(r, j)) {
      let k = key(L[r * v + j]);
      if (bi == 0xffffffffu || k > bk) { bk = k; bi = j; }
      n += 1u;
    }
  }
  ru[l] = bk;
  ri[l] = bi;
  workgroupBarrier();
  for (var s = ${N / 2}u; s > 0u; s >>= 1u) {
    if (l < s) {
      let ok = ri[l + s] != 0xffffffffu;
      if (ok && (ri[l] == 0xffffffffu || ru[l + s] > ru[l] || (ru[l + s] == ru[l] && ri[l + s] < ri[l]))) {
        ru[l] = ru[l + s];
        ri[l] = ri[l + s];
      }
    }
    workgroupBarrier();
  }
  let best = workgroupUniformLoad(&ri[0]);
  workgroupBarrier();
  let count = sumU(l, n);
  let t = shareF(TEMP[r]);
  if (count == 0u || !(t > 0.0)) {
    if (l == 0u) { O[r] = select(i32(best), -1, count == 0u); }
    return;
  }
  let lmax = shareF(L[r * v + best]);
  let topK = shareU(u32(max(TOPK[r], 0)));
  let topP = shareF(TOPP[r]);
  let u = shareF(clamp(U[r], 0.0, 1.0));
  // Top k: the k-th id in rank order ends the kept prefix.
  var cut = vec2<u32>(0u, 0xffffffffu);
  if (topK > 0u && topK < count) { cut = first(r, l, 1u, f32(topK), 0u, 0u, 0xffffffffu, lmax, t); }
  // Top p: the first id whose prefix mass reaches topP · total.
  if (topP < 1.0) {
    let total = measure(r, l, 0u, cut.x, cut.y, 0u, 0xffffffffu, lmax, t);
    cut = first(r, l, 0u, topP * total, 0u, cut.x, cut.y, lmax, t);
  }
  let mass = measure(r, l, 0u, cut.x, cut.y, 0u, 0xffffffffu, lmax, t);
  let goal = u * mass;
  var pick: vec2<u32>;
  if (mass > goal) {
    pick = first(r, l, 0u, goal, 1u, cut.x, cut.y, lmax, t);
  } else {
    // No prefix passes (u = 1, or rounding): the last kept id, the one whose prefix holds them all.
    let kept = measure(r, l, 1u, cut.x, cut.y, 0u, 0xffffffffu, lmax, t);
    pick = first(r, l, 1u, kept, 0u, cut.x, cut.y, lmax, t);
  }
  if (l == 0u) { O[r] = i32(pick.y); }
}`;
