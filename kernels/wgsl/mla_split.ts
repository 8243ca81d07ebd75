/**
 * WGSL for `mla_attention` (absorbed) split over the context, as flash-decoding does: a decode step has too few
 * (token, head) pairs to fill a GPU, and the one-pass kernel (mla.ts) walks the whole context in one workgroup.
 * Three passes, one dispatch each:
 *
 * 1. `absorb`: per (token, head), the query folded into latent space, `qa = q_nope · W_UK` (kvr values), to scratch.
 * 2. `chunk`: per (token, group of heads, chunk of `L` positions), for each head the chunk's maximum score `m`,
 *    its sum of exponentials `s = Σ exp(score − m)` and its unnormalised latent sum `a = Σ exp(score − m) · c_kv`,
 *    computed tile by tile (64 positions, one position per thread, each cached row read once for the group's
 *    heads, each score computed once) with the running maximum rescaled as it grows.
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

/** Bytes of workgroup memory of the chunk pass with `heads` heads a workgroup. */
function chunkBytes(g: MlaGeometry, heads: number): number {
  return 4 * (heads * (g.kvr + g.dr + 128) + 64 + 3);
}

/**
 * Heads a chunk workgroup takes: the heads share the latent cache, so a group reads each cached row once for all
 * of them (as FlashMLA does) instead of once per head; at most 8 (their accumulators are registers) and what
 * `workgroupBytes` holds. 1 when not even one head fits (`supportsNode` refuses such geometries).
 */
export function mlaHeadsPerGroup(g: MlaGeometry, workgroupBytes: number): number {
  let heads = Math.min(g.heads, 8);
  while (heads > 1 && chunkBytes(g, heads) > workgroupBytes) heads--;
  return heads;
}

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

/**
 * The kernels of the module docs for geometry `g`, with room for `maxChunks` chunks per (token, head), the chunk
 * pass taking `headsPerGroup` heads a workgroup ({@link mlaHeadsPerGroup}).
 */
export function mlaSplitKernels(g: MlaGeometry, maxChunks: number, headsPerGroup: number): MlaSplitKernels {
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
  const G = headsPerGroup, HG = Math.ceil(H / G);
  const chunk = `// mla_split chunk` + PRELUDE + chunkIo + /* wgsl */ `
var<workgroup> qa: array<f32, ${G * KVR}>;
var<workgroup> qr: array<f32, ${G * DR}>;
var<workgroup> p: array<f32, ${G * 64}>;
var<workgroup> red: array<f32, ${G * 64}>;
var<workgroup> at: array<u32, 64>;
var<workgroup> info: array<u32, 3>;

// red[g · 64 + l] holds thread l's value for head g: leaves each head's maximum (op 0) or sum in red[g · 64].
fn reduceHeads(op: u32, l: u32) {
  workgroupBarrier();
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (l < k) {
      for (var g = 0u; g < ${G}u; g++) {
        let a = red[g * 64u + l];
        let b = red[g * 64u + l + k];
        red[g * 64u + l] = select(a + b, max(a, b), op == 0u);
      }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(64) fn main(${ARGS}) {
  // No early return before the barriers (a browser's uniformity analysis rejects one on a storage value): a
  // workgroup past the grid (the 2-D rounding) takes an empty range and writes nothing.
  let nc = P[5];
  let live = wid.y * nwg.x + wid.x < P[0] * ${HG}u * nc;
  let wg = select(0u, wid.y * nwg.x + wid.x, live);
  let l = lid3.x;
  let tg = wg / nc;
  let c = wg - tg * nc;
  let t = tg / ${HG}u;
  let h0 = (tg % ${HG}u) * ${G}u;
  // The chunk's range goes through workgroup memory: loop bounds around barriers must be uniform.
  if (l == 0u) {
    let sn = context(t);
    info[0] = sn.x;
    info[1] = c * P[6];
    info[2] = select(c * P[6], min(sn.y, (c + 1u) * P[6]), live);
  }
  // The group's queries (a head past H reads head 0's and is never written).
  for (var g = 0u; g < ${G}u; g++) {
    let th = t * ${H}u + select(0u, h0 + g, h0 + g < ${H}u);
    for (var k = l; k < ${KVR}u; k += 64u) { qa[g * ${KVR}u + k] = S[th * ${KVR}u + k]; }
    for (var r = l; r < ${DR}u; r += 64u) { qr[g * ${DR}u + r] = Q[th * ${QW}u + ${DN}u + r]; }
  }
  let s = workgroupUniformLoad(&info[0]);
  let start = workgroupUniformLoad(&info[1]);
  let j1 = workgroupUniformLoad(&info[2]);
  var m: array<f32, ${G}>;
  var sum: array<f32, ${G}>;
  var alpha: array<f32, ${G}>;
  var acc: array<f32, ${G * NC}>;
  for (var g = 0u; g < ${G}u; g++) { m[g] = -3.4e38; }
  for (var j0 = start; j0 < j1; j0 += 64u) {
    // Thread l scores position j0 + l for every head of the group, reading its cached row once; a position past
    // the chunk or outside the cache weighs 0.
    let j = j0 + l;
    var o = 0xffffffffu;
    var sc: array<f32, ${G}>;
    for (var g = 0u; g < ${G}u; g++) { sc[g] = -3.4e38; }
    if (j < j1) {
      let b = BT[s * ${MB}u + j / ${BS}u];
      if (b >= 0 && u32(b) < P[2]) {
        o = (u32(b) * ${BS}u + j % ${BS}u) * ${ROW}u;
        // Zeroed explicitly: naga hoists a loop's uninitialised var to the function and would not zero it again.
        var a = array<f32, ${G}>();
        for (var k = 0u; k < ${KVR}u; k++) {
          let v = C_at(o + k);
          for (var g = 0u; g < ${G}u; g++) { a[g] += qa[g * ${KVR}u + k] * v; }
        }
        for (var r = 0u; r < ${DR}u; r++) {
          let v = C_at(o + ${KVR}u + r);
          for (var g = 0u; g < ${G}u; g++) { a[g] += qr[g * ${DR}u + r] * v; }
        }
        for (var g = 0u; g < ${G}u; g++) { sc[g] = a[g] * pf(3u); }
      }
    }
    for (var g = 0u; g < ${G}u; g++) { red[g * 64u + l] = sc[g]; }
    reduceHeads(0u, l);
    for (var g = 0u; g < ${G}u; g++) {
      let mNew = max(m[g], red[g * 64u]);
      alpha[g] = exp(m[g] - mNew);
      m[g] = mNew;
    }
    workgroupBarrier();
    for (var g = 0u; g < ${G}u; g++) {
      var e = 0.0;
      if (o != 0xffffffffu) { e = exp(sc[g] - m[g]); }
      p[g * 64u + l] = e;
      red[g * 64u + l] = e;
    }
    at[l] = o;
    reduceHeads(1u, l);
    for (var g = 0u; g < ${G}u; g++) { sum[g] = sum[g] * alpha[g] + red[g * 64u]; }
    let tile = min(64u, j1 - j0);
    for (var q = 0u; q < ${NC}u; q++) {
      let k = l + 64u * q;
      if (k < ${KVR}u) {
        for (var g = 0u; g < ${G}u; g++) { acc[g * ${NC}u + q] *= alpha[g]; }
        for (var jj = 0u; jj < tile; jj++) {
          if (at[jj] != 0xffffffffu) {
            let v = C_at(at[jj] + k);
            for (var g = 0u; g < ${G}u; g++) { acc[g * ${NC}u + q] += p[g * 64u + jj] * v; }
          }
        }
      }
    }
    workgroupBarrier();
  }
  if (!live) { return; }
  for (var g = 0u; g < ${G}u; g++) {
    if (h0 + g < ${H}u) {
      let rec = P[7] + ((t * ${H}u + h0 + g) * ${maxChunks}u + c) * ${REC}u;
      for (var q = 0u; q < ${NC}u; q++) {
        let k = l + 64u * q;
        if (k < ${KVR}u) { S[rec + k] = acc[g * ${NC}u + q]; }
      }
      if (l == 0u) {
        S[rec + ${KVR}u] = m[g];
        S[rec + ${KVR + 1}u] = sum[g];
      }
    }
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
