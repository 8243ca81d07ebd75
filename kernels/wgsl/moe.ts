/**
 * WGSL for the MoE ops: routing (`moe_topk`, `moe_gate`: the router softmax per token, in f32 as the reference
 * rounds it) and the routed experts (`moe_experts`), grouped per expert on the device so a batch reads each expert's
 * weights once per chunk of its tokens rather than once per token: a routing pass groups the (token, slot) pairs per
 * expert from `ids` (count, prefix sum, scatter), then gate/up + SwiGLU and down kernels whose workgroups own (chunk
 * of one expert's pairs, tile of output features), then a combine pass adding each token's slots in slot order.
 * Nothing goes back to the host: the grids are sized for the most chunks a bucket can route (see
 * `moeMaxChunks`), and workgroups past the routed chunks return at once.
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
 * Pairs per chunk of an expert's list for a bucket of `pairs` (token, slot) pairs over `E` experts: a workgroup of the
 * expert kernels computes one chunk against one tile of output features, with one accumulator per pair of the chunk
 * in each thread, so each weight tile is read once per chunk. The average pairs per expert rounded up to a power of
 * two, at most 8 (registers): decode buckets, where an expert rarely gets two pairs, run chunks of one and compute
 * nothing for empty slots; prefill buckets run chunks of 8.
 */
export function moeChunk(pairs: number, E: number): number {
  const perExpert = Math.ceil(pairs / Math.max(1, E));
  return Math.min(8, 2 ** Math.ceil(Math.log2(Math.max(1, perExpert))));
}

/** Output features per workgroup of the expert kernels (one per thread). */
export const MOE_TILE = 64;

/**
 * The most chunks of `chunk` pairs that `pairs` (token, slot) pairs over `E` experts can make: a full chunk per
 * `chunk` pairs, plus one partial chunk per expert that has any.
 */
export function moeMaxChunks(pairs: number, E: number, chunk: number): number {
  return Math.ceil(pairs / chunk) + (chunk > 1 ? Math.min(E, pairs) : 0);
}

/**
 * Workgroup bytes the routing pass needs for `E` experts (four arrays of E words); the op is refused past the
 * device's limit.
 */
export function moeRouteBytes(E: number): number {
  return 16 * E;
}

/**
 * Routing pass (one workgroup of 256): the (token, slot) pairs grouped per expert, in three phases separated by
 * barriers. Count: an atomic per expert (workgroup memory). Prefix sum: each expert's offset in the list and its first
 * chunk (a chunk is up to `chunk` of its pairs, {@link moeChunk}). Scatter: each pair `p = t·K + j` written to its
 * expert's part of `LIST`; `CH` gets the chunk count, then per chunk (expert, first, end) list positions. The order of
 * pairs within an expert depends on the atomics, not the results: every pair's values are computed by one thread
 * in a fixed order whichever chunk holds it, and the combine pass reads them by pair. An id outside 0..E−1 joins no
 * list (the combine pass skips it). Parameters: `P[0]` T·K.
 */
export function moeRouteKernel(E: number, chunk: number): string {
  return PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> IDS: array<i32>;
@group(0) @binding(2) var<storage, read_write> CH: array<u32>;
@group(0) @binding(3) var<storage, read_write> LIST: array<u32>;
const E = ${E}u;
const CHUNK = ${chunk}u;
var<workgroup> count: array<atomic<u32>, ${E}>;
var<workgroup> cursor: array<atomic<u32>, ${E}>;
var<workgroup> offset: array<u32, ${E}>;
var<workgroup> chunk0: array<u32, ${E}>;
@compute @workgroup_size(256) fn main(@builtin(local_invocation_index) l: u32) {
  let n = P[0];
  for (var e = l; e < E; e += 256u) {
    atomicStore(&count[e], 0u);
    atomicStore(&cursor[e], 0u);
  }
  workgroupBarrier();
  for (var p = l; p < n; p += 256u) {
    let e = IDS[p];
    if (e >= 0 && u32(e) < E) { atomicAdd(&count[u32(e)], 1u); }
  }
  workgroupBarrier();
  if (l == 0u) {
    var o = 0u;
    var c = 0u;
    for (var e = 0u; e < E; e++) {
      let k = atomicLoad(&count[e]);
      offset[e] = o;
      chunk0[e] = c;
      o += k;
      c += (k + CHUNK - 1u) / CHUNK;
    }
    CH[0] = c;
  }
  workgroupBarrier();
  for (var e = l; e < E; e += 256u) {
    let k = atomicLoad(&count[e]);
    let o = offset[e];
    for (var i = 0u; i * CHUNK < k; i++) {
      let w = 1u + 3u * (chunk0[e] + i);
      CH[w] = e;
      CH[w + 1u] = o + i * CHUNK;
      CH[w + 2u] = o + min(k, (i + 1u) * CHUNK);
    }
  }
  for (var p = l; p < n; p += 256u) {
    let e = IDS[p];
    if (e >= 0 && u32(e) < E) { LIST[offset[u32(e)] + atomicAdd(&cursor[u32(e)], 1u)] = u32(p); }
  }
}`;
}

/**
 * The workgroup's chunk and tile from its flat index (`P[2]` tiles per chunk), and the chunk's expert `e`, first list
 * position `first` and pair count `n`; a workgroup past the routed chunks returns (the grid is sized for the most
 * chunks a bucket can have). The chunk table is bound read-only, as the parameters are (PRELUDE): WGSL's uniformity
 * analysis treats values read from a read-only binding as uniform. Only buffers of the step are bound read-only (a
 * read-only and a writable binding of one buffer in one dispatch are an error).
 */
const CHUNK_OF = /* wgsl */ `
  let flat = wid.y * nwg.x + wid.x;
  let tiles = P[2];
  let chunk = flat / tiles;
  if (chunk >= CH[0]) { return; }
  let tile = flat - chunk * tiles;
  let e = CH[1u + 3u * chunk];
  let first = CH[2u + 3u * chunk];
  let n = CH[3u + 3u * chunk] - first;`;

const GROUP_ARGS =
  `@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32, @builtin(num_workgroups) nwg: vec3<u32>`;

/**
 * Gate/up and SwiGLU over one chunk of an expert's pairs: `act[q, i] = silu(gate_e[i]·x[t]) · (up_e[i]·x[t])` for
 * list position `q` holding pair `t·K + j`. Thread `i` of the tile reads each value of its gate and up rows once for
 * the chunk's pairs (the rows of `x` every thread of the tile reads alike: cached). No workgroup memory, no barrier.
 * Parameters: `P[0]` K, `P[1]` F, `P[2]` tiles of F, `P[3]` D, `P[4]` the first scale word (quantised).
 */
export function moeGroupActKernel(w: Stored, chunk: number): string {
  return PRELUDE + floats("GU", 2, w, "P[3]", "P[4]") + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read> CH: array<u32>;
@group(0) @binding(4) var<storage, read> LIST: array<u32>;
@group(0) @binding(5) var<storage, read_write> A: array<f32>;
const CHUNK = ${chunk}u;
@compute @workgroup_size(${MOE_TILE}) fn main(${GROUP_ARGS}) {
${CHUNK_OF}
  let k = P[0];
  let f = P[1];
  let d = P[3];
  let i = tile * ${MOE_TILE}u + l;
  if (i >= f) { return; }
  let go = (e * 2u * f + i) * d;
  let uo = go + f * d;
  var xo: array<u32, CHUNK>;
  for (var r = 0u; r < CHUNK; r++) { xo[r] = (LIST[first + min(r, n - 1u)] / k) * d; }
  var g: array<f32, CHUNK>;
  var u: array<f32, CHUNK>;
  for (var c = 0u; c < d; c++) {
    let wg = GU_at(go + c);
    let wu = GU_at(uo + c);
    for (var r = 0u; r < CHUNK; r++) {
      if (r < n) {
        let xv = X[xo[r] + c];
        g[r] += wg * xv;
        u[r] += wu * xv;
      }
    }
  }
  for (var r = 0u; r < n; r++) { A[(first + r) * f + i] = g[r] / (1.0 + exp(-g[r])) * u[r]; }
}`;
}

/**
 * Down projection over one chunk: `y[t·K + j, c] = down_e[c] · act[q]` for list position `q` holding pair `t·K + j`
 * (stored by pair, so the combine pass sums a token's slots in slot order). Thread `c` of the tile reads each value
 * of its row once for the chunk's pairs. Parameters: `P[0]` D, `P[1]` F, `P[2]` tiles of D, `P[4]` the first scale
 * word (quantised).
 */
export function moeGroupDownKernel(w: Stored, chunk: number): string {
  return PRELUDE + floats("DN", 2, w, "P[1]", "P[4]") + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(3) var<storage, read> CH: array<u32>;
@group(0) @binding(4) var<storage, read> LIST: array<u32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;
const CHUNK = ${chunk}u;
@compute @workgroup_size(${MOE_TILE}) fn main(${GROUP_ARGS}) {
${CHUNK_OF}
  let d = P[0];
  let f = P[1];
  let c = tile * ${MOE_TILE}u + l;
  if (c >= d) { return; }
  let wo = (e * d + c) * f;
  var y: array<f32, CHUNK>;
  for (var i = 0u; i < f; i++) {
    let wv = DN_at(wo + i);
    for (var r = 0u; r < CHUNK; r++) {
      if (r < n) { y[r] += wv * A[(first + r) * f + i]; }
    }
  }
  for (var r = 0u; r < n; r++) { Y[LIST[first + r] * d + c] = y[r]; }
}`;
}

/**
 * Combine: `out[t, c] = Σ_j w[t, j] · y[t·K + j, c]`, the slots of a token summed in slot order by one thread (no
 * float atomics: the result does not depend on scheduling); a slot whose id is outside 0..E−1 adds nothing.
 * Parameters: `P[0]` T·D, `P[1]` K, `P[2]` D, `P[3]` E.
 */
export const MOE_COMBINE = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDS: array<i32>;
@group(0) @binding(3) var<storage, read_write> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let n = flatIndex(wid, lid, nwg);
  if (n >= P[0]) { return; }
  let k = P[1];
  let d = P[2];
  let t = n / d;
  let c = n - t * d;
  var acc = 0.0;
  for (var j = 0u; j < k; j++) {
    let e = IDS[t * k + j];
    if (e >= 0 && u32(e) < P[3]) { acc += G[t * k + j] * Y[(t * k + j) * d + c]; }
  }
  O[n] = acc;
}`;
