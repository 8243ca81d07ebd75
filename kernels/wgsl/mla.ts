/**
 * WGSL for multi-head latent attention over the paged latent cache: `mla_cache_write` (each token's `[ckv | kpe]`
 * row stored where its block table points, rounded to bf16 for a bf16 cache as the reference rounds it) and
 * `mla_attention` in the absorbed form (the query folded into latent space through W_UK, scores against the cached
 * latents, the weighted latent sum expanded through W_UV once), one workgroup per (token, head).
 *
 * A decode step over a long context takes the split-context passes of mla_split.ts instead (runtime/backends/webgpu/
 * ops_mla.ts chooses). The attention kernel is generated per geometry (head count and widths, block size, blocks per sequence) so
 * its workgroup arrays have constant sizes; the backend compiles it once per node at prepare.
 *
 * @module
 */

import { ELEMENT_ARGS, floats, PRELUDE, type Stored } from "./common.ts";

/** Rounds f32 bits to the nearest bf16 (ties to even; NaN stays NaN), as `mla_cache_write`'s reference does. */
const BF16_ROUND = /* wgsl */ `
fn bf16Round(v: f32) -> f32 {
  let u = bitcast<u32>(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) { return bitcast<f32>((u | 0x400000u) & 0xffff0000u); }
  return bitcast<f32>((u + 0x7fffu + ((u >> 16u) & 1u)) & 0xffff0000u);
}`;

/**
 * `mla_cache_write` for a cache stored as `cache`, one thread per element of the step's rows. Parameters: `P[0]`
 * T · row, `P[1]` kvr, `P[2]` dr, `P[3]` blocks in the cache, `P[4]` block size, `P[5]` sequences (block table
 * rows), `P[6]` blocks per sequence. A bf16 cache is written a 32-bit word (two elements, each rounded to bf16) at
 * a time by the even threads, so the row width must be even. A token whose sequence, position or block falls
 * outside the cache writes nothing there.
 */
export function mlaCacheWriteKernel(cache: Stored): string {
  const store = cache === "f32" ? `C[o + c] = v;` : `if ((c & 1u) == 1u) { return; }
  let lo = bitcast<u32>(bf16Round(v)) >> 16u;
  let hi = bitcast<u32>(bf16Round(value(t, c + 1u))) & 0xffff0000u;
  C[(o + c) >> 1u] = lo | hi;`;
  return PRELUDE + (cache === "f32" ? "" : BF16_ROUND) + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> CKV: array<f32>;
@group(0) @binding(2) var<storage, read_write> KPE: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<${cache === "f32" ? "f32" : "u32"}>;
@group(0) @binding(4) var<storage, read_write> SEQ: array<i32>;
@group(0) @binding(5) var<storage, read_write> POS: array<i32>;
@group(0) @binding(6) var<storage, read_write> BT: array<i32>;
@group(0) @binding(7) var<storage, read_write> O: array<f32>;
fn value(t: u32, c: u32) -> f32 {
  if (c < P[1]) { return CKV[t * P[1] + c]; }
  return KPE[t * P[2] + c - P[1]];
}
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let n = flatIndex(wid, lid, nwg);
  if (n >= P[0]) { return; }
  let row = P[1] + P[2];
  let t = n / row;
  let c = n - t * row;
  let v = value(t, c);
  O[n] = v;
  let s = SEQ[t];
  let p = POS[t];
  let bs = P[4];
  if (s < 0 || u32(s) >= P[5] || p < 0 || u32(p) / bs >= P[6]) { return; }
  let b = BT[u32(s) * P[6] + u32(p) / bs];
  if (b < 0 || u32(b) >= P[3]) { return; }
  let o = (u32(b) * bs + u32(p) % bs) * row;
  ${store}
}`;
}

/** The geometry an attention kernel is generated for. */
export type MlaGeometry = {
  /** How W_kvb and the cache are stored (a cache is f32 or bf16). */
  weight: Stored;
  cache: Stored;
  heads: number;
  dn: number;
  dr: number;
  dv: number;
  kvr: number;
  blockSize: number;
  /** Blocks per sequence (block table width). */
  maxBlocks: number;
};

/** Positions whose probabilities a workgroup holds at once in the value pass. */
const TILE = 256;

/**
 * `mla_attention` (absorbed), one workgroup of 64 per (token, head): the maximum score, the sum of exponentials, then
 * the weighted latent sum tile by tile (probabilities of 256 positions in workgroup memory), recomputing scores
 * rather than storing them, so nothing grows with the context. Parameters: `P[0]` T, `P[1]` sequences, `P[2]`
 * blocks in the cache, `P[3]` scale (f32 bits), `P[4]` W_kvb's first scale word (quantised).
 */
export function mlaAttentionKernel(g: MlaGeometry): string {
  const { heads: H, dn: DN, dr: DR, dv: DV, kvr: KVR, blockSize: BS, maxBlocks: MB } = g;
  const ROW = KVR + DR, QW = DN + DR, HW = DN + DV, CTX = MB * BS, NC = Math.ceil(KVR / 64);
  return PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> Q: array<f32>;
${floats("W", 2, g.weight, `${KVR}u`, "P[4]")}${
    floats("C", 3, g.cache)
  }@group(0) @binding(4) var<storage, read_write> SEQ: array<i32>;
@group(0) @binding(5) var<storage, read_write> POS: array<i32>;
@group(0) @binding(6) var<storage, read_write> BT: array<i32>;
@group(0) @binding(7) var<storage, read_write> O: array<f32>;
var<workgroup> qa: array<f32, ${KVR}>;
var<workgroup> lat: array<f32, ${KVR}>;
var<workgroup> p: array<f32, ${TILE}>;
var<workgroup> at: array<u32, ${TILE}>;
var<workgroup> red: array<f32, 64>;
var<workgroup> info: array<u32, 2>;

// The cache offset of position j's row, or 0xffffffff when its block is outside the cache.
fn slot(s: u32, j: u32) -> u32 {
  let b = BT[s * ${MB}u + j / ${BS}u];
  if (b < 0 || u32(b) >= P[2]) { return 0xffffffffu; }
  return (u32(b) * ${BS}u + j % ${BS}u) * ${ROW}u;
}

// The scaled score of the cached row at offset o (−3.4e38 for a row outside the cache).
fn score(o: u32, qo: u32) -> f32 {
  if (o == 0xffffffffu) { return -3.4e38; }
  var a = 0.0;
  for (var k = 0u; k < ${KVR}u; k++) { a += qa[k] * C_at(o + k); }
  for (var r = 0u; r < ${DR}u; r++) { a += Q[qo + ${DN}u + r] * C_at(o + ${KVR}u + r); }
  return a * pf(3u);
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
  // No early return before the barriers (a browser's uniformity analysis rejects one on a storage value): a
  // workgroup past the grid (the 2-D rounding) walks no context and writes nothing.
  let live = wid.y * nwg.x + wid.x < P[0] * ${H}u;
  let g = select(0u, wid.y * nwg.x + wid.x, live);
  let l = lid3.x;
  let t = g / ${H}u;
  let h = g % ${H}u;
  if (l == 0u) {
    let s = SEQ[t];
    let p = POS[t];
    var n = 0u;
    if (live && s >= 0 && u32(s) < P[1] && p >= 0 && u32(p) < ${CTX}u) { n = u32(p) + 1u; }
    info[0] = u32(max(s, 0));
    info[1] = n;
  }
  workgroupBarrier();
  let s = workgroupUniformLoad(&info[0]);
  let n = workgroupUniformLoad(&info[1]);
  let qo = g * ${QW}u;
  let wk = h * ${HW}u * ${KVR}u;
  let wv = (h * ${HW}u + ${DN}u) * ${KVR}u;
  for (var k = l; k < ${KVR}u; k += 64u) {
    var a = 0.0;
    for (var d = 0u; d < ${DN}u; d++) { a += Q[qo + d] * W_at(wk + d * ${KVR}u + k); }
    qa[k] = a;
  }
  workgroupBarrier();
  var m = -3.4e38;
  for (var j = l; j < n; j += 64u) { m = max(m, score(slot(s, j), qo)); }
  red[l] = m;
  workgroupBarrier();
  let mx = reduce(0u, l);
  var sum = 0.0;
  for (var j = l; j < n; j += 64u) { sum += exp(score(slot(s, j), qo) - mx); }
  red[l] = sum;
  workgroupBarrier();
  let total = reduce(1u, l);
  var acc: array<f32, ${NC}>;
  for (var j0 = 0u; j0 < n; j0 += ${TILE}u) {
    let m0 = min(${TILE}u, n - j0);
    for (var jj = l; jj < m0; jj += 64u) {
      let o = slot(s, j0 + jj);
      at[jj] = o;
      p[jj] = exp(score(o, qo) - mx);
    }
    workgroupBarrier();
    for (var c = 0u; c < ${NC}u; c++) {
      let k = l + 64u * c;
      if (k < ${KVR}u) {
        var a = acc[c];
        for (var jj = 0u; jj < m0; jj++) {
          if (at[jj] != 0xffffffffu) { a += p[jj] * C_at(at[jj] + k); }
        }
        acc[c] = a;
      }
    }
    workgroupBarrier();
  }
  for (var c = 0u; c < ${NC}u; c++) {
    let k = l + 64u * c;
    if (k < ${KVR}u) { lat[k] = acc[c] / total; }
  }
  workgroupBarrier();
  if (!live) { return; }
  for (var i = l; i < ${DV}u; i += 64u) {
    var a = 0.0;
    for (var k = 0u; k < ${KVR}u; k++) { a += W_at(wv + i * ${KVR}u + k) * lat[k]; }
    O[(t * ${H}u + h) * ${DV}u + i] = a;
  }
}`;
}
