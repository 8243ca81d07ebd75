/**
 * WGSL for `mla_attention` (absorbed) split over the context, as flash-decoding does: a decode step has too few
 * (token, head) pairs to fill a GPU, and the one-pass kernel (mla.ts) walks the whole context in one workgroup.
 * Three passes, one dispatch each:
 *
 * 1. `absorb`: per (token, head), the query folded into latent space, `qa = q_nope · W_UK` (kvr values), to scratch.
 * 2. `chunk`: per (token, head, chunk of `L` positions), the chunk's maximum score `m`, its sum of exponentials
 *    `s = Σ exp(score − m)` and its unnormalised latent sum `a = Σ exp(score − m) · c_kv`, computed tile by tile
 *    (64 positions, one score per thread, each score computed once) with the running maximum rescaled as it grows.
 * 3. `merge`: per (token, head), the chunks combined by log-sum-exp: `M = max m_c`,
 *    `lat = Σ a_c · e^(m_c − M) / Σ s_c · e^(m_c − M)`, then expanded through W_UV once.
 *
 * Scratch layout: `qa [T, H, kvr]`, then one record per (token, head, chunk) of `kvr + 2` floats (`a`, then `m`,
 * `s`), `maxChunks` records per (token, head). A chunk past a token's context writes `m = −3.4e38, s = 0`, which the
 * merge weighs by 0.
 *
 * Bindings: absorb `Q, W_kvb, S` (the scratch); chunk `Q, cache, seq, pos, blockTable, S`; merge `W_kvb, out, S`.
 * Parameters (every pass): `P[0]` T, `P[1]` sequences, `P[2]` blocks in the cache, `P[3]` scale (f32 bits), `P[4]`
 * W_kvb's first scale word, `P[5]` chunks of this step, `P[6]` L (positions per chunk), `P[7]` the partials' first
 * word in the scratch (after `qa`).
 *
 * @module
 */

import { floats, PRELUDE } from "./common.ts";
import type { MlaGeometry } from "./mla.ts";

/** The three kernels of one geometry (with `maxChunks` records per (token, head)). */
export type MlaSplitKernels = { absorb: string; chunk: string; merge: string };

const ARGS = `@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>`;

/** Sequence and context length of token `t` (0 positions for a token outside the table or the context). */
function contextFn(g: MlaGeometry): string {
  const CTX = g.maxBlocks * g.blockSize;
  return /* wgsl */ `
fn context(t: u32) -> vec2<u32> {
  let s = SEQ[t];
  let p = POS[t];
  if (s >= 0 && u32(s) < P[1] && p >= 0 && u32(p) < ${CTX}u) { return vec2<u32>(u32(s), u32(p) + 1u); }
  return vec2<u32>(0u, 0u);
}
`;
}

const REDUCE = /* wgsl */ `
var<workgroup> red: array<f32, 64>;
fn reduce(op: u32, l: u32, v: f32) -> f32 {
  red[l] = v;
  workgroupBarrier();
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
`;

/** The kernels of the module docs for geometry `g`, with room for `maxChunks` chunks per (token, head). */
export function mlaSplitKernels(g: MlaGeometry, maxChunks: number): MlaSplitKernels {
  const { heads: H, dn: DN, dr: DR, dv: DV, kvr: KVR, blockSize: BS, maxBlocks: MB } = g;
  const ROW = KVR + DR, QW = DN + DR, HW = DN + DV, NC = Math.ceil(KVR / 64), REC = KVR + 2;
  const S = (b: number) => `@group(0) @binding(${b}) var<storage, read_write> S: array<f32>;\n`;
  // Each pass declares only the bindings it reads ("auto" layouts hold no unused binding).
  const absorbIo = `@group(0) @binding(1) var<storage, read_write> Q: array<f32>;
${floats("W", 2, g.weight, `${KVR}u`, "P[4]")}${S(3)}`;
  const chunkIo = `@group(0) @binding(1) var<storage, read_write> Q: array<f32>;
${floats("C", 2, g.cache)}@group(0) @binding(3) var<storage, read_write> SEQ: array<i32>;
@group(0) @binding(4) var<storage, read_write> POS: array<i32>;
@group(0) @binding(5) var<storage, read_write> BT: array<i32>;
${S(6)}${contextFn(g)}`;
  const mergeIo = `${
    floats("W", 1, g.weight, `${KVR}u`, "P[4]")
  }@group(0) @binding(2) var<storage, read_write> O: array<f32>;
${S(3)}`;
  const absorb = `// mla_split absorb` + PRELUDE + absorbIo + /* wgsl */ `
@compute @workgroup_size(64) fn main(${ARGS}) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P[0] * ${H}u) { return; }
  let h = g % ${H}u;
  let qo = g * ${QW}u;
  let wk = h * ${HW}u * ${KVR}u;
  for (var k = lid3.x; k < ${KVR}u; k += 64u) {
    var a = 0.0;
    for (var d = 0u; d < ${DN}u; d++) { a += Q[qo + d] * W_at(wk + d * ${KVR}u + k); }
    S[g * ${KVR}u + k] = a;
  }
}`;
  const chunk = `// mla_split chunk` + PRELUDE + chunkIo + REDUCE + /* wgsl */ `
var<workgroup> qa: array<f32, ${KVR}>;
var<workgroup> qr: array<f32, ${DR}>;
var<workgroup> p: array<f32, 64>;
var<workgroup> at: array<u32, 64>;
var<workgroup> info: array<u32, 3>;

@compute @workgroup_size(64) fn main(${ARGS}) {
  // No early return before the barriers (a browser's uniformity analysis rejects one on a storage value): a
  // workgroup past the grid (the 2-D rounding) takes an empty range and writes nothing.
  let nc = P[5];
  let live = wid.y * nwg.x + wid.x < P[0] * ${H}u * nc;
  let wg = select(0u, wid.y * nwg.x + wid.x, live);
  let l = lid3.x;
  let g = wg / nc;
  let c = wg - g * nc;
  let t = g / ${H}u;
  // The chunk's range goes through workgroup memory: loop bounds around barriers must be uniform.
  if (l == 0u) {
    let sn = context(t);
    info[0] = sn.x;
    info[1] = c * P[6];
    info[2] = select(c * P[6], min(sn.y, (c + 1u) * P[6]), live);
  }
  for (var k = l; k < ${KVR}u; k += 64u) { qa[k] = S[g * ${KVR}u + k]; }
  for (var r = l; r < ${DR}u; r += 64u) { qr[r] = Q[g * ${QW}u + ${DN}u + r]; }
  let s = workgroupUniformLoad(&info[0]);
  let start = workgroupUniformLoad(&info[1]);
  let j1 = workgroupUniformLoad(&info[2]);
  var m = -3.4e38;
  var sum = 0.0;
  var acc: array<f32, ${NC}>;
  for (var j0 = start; j0 < j1; j0 += 64u) {
    // One score per thread; a position past the chunk or outside the cache weighs 0.
    let j = j0 + l;
    var o = 0xffffffffu;
    var sc = -3.4e38;
    if (j < j1) {
      let b = BT[s * ${MB}u + j / ${BS}u];
      if (b >= 0 && u32(b) < P[2]) {
        o = (u32(b) * ${BS}u + j % ${BS}u) * ${ROW}u;
        var a = 0.0;
        for (var k = 0u; k < ${KVR}u; k++) { a += qa[k] * C_at(o + k); }
        for (var r = 0u; r < ${DR}u; r++) { a += qr[r] * C_at(o + ${KVR}u + r); }
        sc = a * pf(3u);
      }
    }
    let mNew = max(m, reduce(0u, l, sc));
    let alpha = exp(m - mNew);
    var e = 0.0;
    if (o != 0xffffffffu) { e = exp(sc - mNew); }
    p[l] = e;
    at[l] = o;
    sum = sum * alpha + reduce(1u, l, e);
    m = mNew;
    let tile = min(64u, j1 - j0);
    for (var q = 0u; q < ${NC}u; q++) {
      let k = l + 64u * q;
      if (k < ${KVR}u) {
        var a = acc[q] * alpha;
        for (var jj = 0u; jj < tile; jj++) {
          if (at[jj] != 0xffffffffu) { a += p[jj] * C_at(at[jj] + k); }
        }
        acc[q] = a;
      }
    }
    workgroupBarrier();
  }
  if (!live) { return; }
  let rec = P[7] + (g * ${maxChunks}u + c) * ${REC}u;
  for (var q = 0u; q < ${NC}u; q++) {
    let k = l + 64u * q;
    if (k < ${KVR}u) { S[rec + k] = acc[q]; }
  }
  if (l == 0u) {
    S[rec + ${KVR}u] = m;
    S[rec + ${KVR + 1}u] = sum;
  }
}`;
  const merge = `// mla_split merge` + PRELUDE + mergeIo + /* wgsl */ `
var<workgroup> lat: array<f32, ${KVR}>;

@compute @workgroup_size(64) fn main(${ARGS}) {
  let live = wid.y * nwg.x + wid.x < P[0] * ${H}u;
  let g = select(0u, wid.y * nwg.x + wid.x, live);
  let l = lid3.x;
  let h = g % ${H}u;
  let nc = P[5];
  let base = P[7] + g * ${maxChunks}u * ${REC}u;
  // Every thread finds the same maximum and total (a few chunks: cheaper than a reduction's barriers).
  var mx = -3.4e38;
  for (var c = 0u; c < nc; c++) { mx = max(mx, S[base + c * ${REC}u + ${KVR}u]); }
  var total = 0.0;
  for (var c = 0u; c < nc; c++) {
    let r = base + c * ${REC}u;
    total += S[r + ${KVR + 1}u] * exp(S[r + ${KVR}u] - mx);
  }
  let inv = select(0.0, 1.0 / total, total > 0.0);
  for (var k = l; k < ${KVR}u; k += 64u) {
    var a = 0.0;
    for (var c = 0u; c < nc; c++) {
      let r = base + c * ${REC}u;
      a += S[r + k] * exp(S[r + ${KVR}u] - mx);
    }
    lat[k] = a * inv;
  }
  workgroupBarrier();
  if (!live) { return; }
  let wv = (h * ${HW}u + ${DN}u) * ${KVR}u;
  for (var i = l; i < ${DV}u; i += 64u) {
    var a = 0.0;
    for (var k = 0u; k < ${KVR}u; k++) { a += W_at(wv + i * ${KVR}u + k) * lat[k]; }
    O[g * ${DV}u + i] = a;
  }
}`;
  return { absorb, chunk, merge };
}
