/**
 * WGSL for `matmul` with f32, bf16, f16, FP8, q8, NVFP4 or q4 weights (decoded as they are read):
 * `y[m, col0 + j] = Σ_k x[m, k] · W[j, k]` for the `rows` output features of one weight part (a weight over the
 * device's binding limit is split into row ranges, one dispatch each). Two kernels, subgroup-free (lavapipe has
 * no subgroups), accumulating in f32:
 *
 * - {@link matvecKernel} for decode (M ≤ {@link MATVEC_MAX_M}): a workgroup of 64 threads owns a few output
 *   rows for every token (64 / t, t threads a row: {@link matvecThreads}, from K); a row's threads stride K
 *   (consecutive threads read consecutive weight words: coalesced), each weight value decoded once and used for all
 *   M tokens; the t partial sums of each output meet in workgroup memory.
 * - {@link gemmKernel} for prefill: a 64 × 64 output tile per workgroup of 256 threads (4 × 4 outputs each, 16
 *   apart so workgroup reads do not collide), K in steps of 16; each step loads 64 × 16 activations and 64 × 16
 *   weights (4 consecutive values a thread: with 8-bit codes and K a multiple of 4, one word under one scale),
 *   decoded once into workgroup memory, where every thread reads them 4 × 4 times.
 *
 * With `f16` (the device has `shader-f16`), f16 weights are declared `array<vec2<f16>>` and widened per value;
 * without it they are u32 words through `unpack2x16float` (core WGSL).
 *
 * Parameters: `P[0]` M, `P[1]` rows of the part, `P[2]` K, `P[3]` N (the row stride of y), `P[4]` col0 (the
 * part's first row), `P[5]` the part's first scale word (quantised weights).
 *
 * @module
 */

import { floats, PRELUDE, type Stored } from "./common.ts";

/** The most tokens the matvec kernel takes (its accumulators are registers: M × rows per thread). */
export const MATVEC_MAX_M = 8;
/** Output tile of the GEMM kernel (rows and columns). */
export const GEMM_TILE = 64;

/** Weights per thread step of the matvec: a word's values (a q4 thread takes a whole 32-value block). */
function perStep(w: Stored): number {
  return w === "q4" ? 32 : w === "nvfp4" ? 8 : 4;
}

/** The weight binding at 2 as `W_at(i)` (f16 as `vec2<f16>` when `f16`), preceded by `enable f16;` then. */
function weights(w: Stored, f16: boolean): { enable: string; decl: string } {
  if (w === "f16" && f16) {
    return {
      enable: "enable f16;\n",
      decl: `@group(0) @binding(2) var<storage, read_write> W: array<vec2<f16>>;
fn W_at(i: u32) -> f32 { return f32(W[i >> 1u][i & 1u]); }
`,
    };
  }
  return { enable: "", decl: floats("W", 2, w, "P[2]", "P[5]") };
}

const IO = /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
`;

/**
 * Threads per output row of the matvec for K-rows of `k` values stored as `w`: a power of two up to 64, so that
 * each thread takes 16 steps or more (a short K gives a workgroup more rows: fewer workgroups; one thread a row,
 * below K = 128 or so, needs no reduction and no barrier, which software Vulkan runs much faster).
 */
export function matvecThreads(w: Stored, k: number): number {
  let t = 1;
  while (t < 64 && 2 * t * perStep(w) * 16 <= k) t *= 2;
  return t;
}

/**
 * The decode matvec of the module docs for weights stored as `w`, `threads` per row ({@link matvecThreads}), for
 * steps of at most `tokens` rows. Its loops over tokens have that constant bound (guarded by M), so a compiler
 * unrolls them and keeps the accumulators in registers: a dynamically indexed array would live in memory (as on
 * lavapipe, where that made batch-1 decode 2× slower); batch 1, the common case, has a kernel of its own.
 */
export function matvecKernel(w: Stored, threads: number, f16 = false, tokens = MATVEC_MAX_M): string {
  const { enable, decl } = weights(w, f16);
  const V = perStep(w), TPR = threads, R = 64 / threads, MM = tokens;
  // One thread a row writes its sums; more meet in workgroup memory, each output summed by one thread.
  const direct = `  if (j < P[1]) {
    for (var m = 0u; m < ${MM}u; m++) {
      if (m < M) { Y[m * P[3] + P[4] + j] = acc[m]; }
    }
  }`;
  const shared = `  for (var m = 0u; m < ${MM}u; m++) { part[(r * ${MM}u + m) * ${TPR}u + lane] = acc[m]; }
  workgroupBarrier();
  // Output a (row a / M, token a % M) is summed by thread a mod 64.
  for (var a = l; a < ${R}u * M; a += 64u) {
    let rr = a / M;
    let m = a - rr * M;
    let jj = r0 + rr;
    if (jj < P[1]) {
      var s = 0.0;
      for (var i = 0u; i < ${TPR}u; i++) { s += part[(rr * ${MM}u + m) * ${TPR}u + i]; }
      Y[m * P[3] + P[4] + jj] = s;
    }
  }
`;
  return `${enable}// matmul matvec ${w}${f16 ? " shader-f16" : ""}${tokens === 1 ? " batch 1" : ""}\n` + PRELUDE +
    decl + IO + /* wgsl */ `
${TPR === 1 ? "" : `var<workgroup> part: array<f32, ${64 * MM}>;`}
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let l = lid3.x;
  let r = l / ${TPR}u;
  let lane = l % ${TPR}u;
  let r0 = (wid.y * nwg.x + wid.x) * ${R}u;
  let j = r0 + r;
  let M = P[0];
  let K = P[2];
  var acc: array<f32, ${MM}>;
  if (j < P[1]) {
    let wo = j * K;
    for (var k0 = lane * ${V}u; k0 < K; k0 += ${TPR * V}u) {
      let k1 = min(k0 + ${V}u, K);
      for (var k = k0; k < k1; k++) {
        let wv = W_at(wo + k);
        for (var m = 0u; m < ${MM}u; m++) {
          if (m < M) { acc[m] += X[m * K + k] * wv; }
        }
      }
    }
  }
${TPR === 1 ? direct : shared}
}`;
}

/** The prefill GEMM of the module docs for weights stored as `w`. */
export function gemmKernel(w: Stored, f16 = false): string {
  const { enable, decl } = weights(w, f16);
  const T = GEMM_TILE, TK = 16, S = T + 1; // a row of 65: the transposing stores do not collide either
  return `${enable}// matmul gemm ${w}${f16 ? " shader-f16" : ""}\n` + PRELUDE + decl + IO + /* wgsl */ `
var<workgroup> xs: array<f32, ${TK * S}>;
var<workgroup> ws: array<f32, ${TK * S}>;
var<workgroup> kw: u32;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let l = lid3.x;
  let M = P[0];
  let rows = P[1];
  let tilesN = (rows + ${T - 1}u) / ${T}u;
  let g = wid.y * nwg.x + wid.x;
  let m0 = (g / tilesN) * ${T}u;
  let n0 = (g % tilesN) * ${T}u;
  if (l == 0u) { kw = P[2]; }
  let K = workgroupUniformLoad(&kw);
  let tx = l % 16u;
  let ty = l / 16u;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < K; k0 += ${TK}u) {
    // 1,024 activations and 1,024 weights, stored [k][m] and [k][n]: thread l loads 4 consecutive values of row
    // l / 4 (for K a multiple of 4, a word of FP8 or q8 codes, half of NVFP4's, under one scale), 4 threads a
    // row's 16.
    let r = l / 4u;
    for (var i = 0u; i < 4u; i++) {
      let kk = (l % 4u) * 4u + i;
      let k = k0 + kk;
      var xv = 0.0;
      if (m0 + r < M && k < K) { xv = X[(m0 + r) * K + k]; }
      xs[kk * ${S}u + r] = xv;
      var wv = 0.0;
      if (n0 + r < rows && k < K) { wv = W_at((n0 + r) * K + k); }
      ws[kk * ${S}u + r] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TK}u; kk++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = xs[kk * ${S}u + ty + 16u * i];
        b[i] = ws[kk * ${S}u + tx + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i * 4u + j] += a[i] * b[j]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + ty + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + tx + 16u * j;
      if (m < M && n < rows) { Y[m * P[3] + P[4] + n] = acc[i * 4u + j]; }
    }
  }
}`;
}
