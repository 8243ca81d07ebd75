/**
 * The `wasm` backend's op compilers: `supportsNode` says which nodes the kernels run (by op and stored dtypes), and
 * `compileNode` turns one node into a {@link Step}: a closure with everything shape-independent resolved at
 * prepare time (kernel, dtype codes, attribute tables, scratch sizes) that reads pointers and symbol values from
 * the {@link RunState} of each run and splits rows across the thread pool.
 *
 * Weights use the layout of {@link wasmWeightLayout}: f8e4m3 and q8 values are followed by their f32 scales, which
 * is how a graph that declares only the weight still carries FP8 block scales to the kernels.
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { maxShape, type Node, numel, resolveShape, type TensorInfo, type Vars } from "../../../graph/ir.ts";
import { attnTemperatureScale } from "../../../ops/attn_temperature.ts";
import type { MlaAttentionAttrs } from "../../../ops/mla_attention.ts";
import type { RopeAttrs } from "../../../ops/rope.ts";
import type { WeightData, WeightLayout } from "../../backend.ts";
import { DT, MLA_PARAMS, MLA_PREFILL_PARAMS, MOE_PARAMS, Q8_BLOCK, type WasmKernels, writeParams } from "./module.ts";
import type { ThreadPool } from "./threads.ts";

/** What a step reads at run time: the byte address of every tensor by id, the symbols, the shared temp block. */
export type RunState = { ptr: Float64Array; vars: Vars; temp: number };

/** One compiled node. */
export type Step = (s: RunState) => void;

/** What compiling a node needs from the backend. */
export interface CompileContext {
  k: WasmKernels;
  pool: ThreadPool;
  /** Tensor table of the segment's graph. */
  table: TensorInfo[];
  /** The dtype tensor `id` is stored as on this backend. */
  stored(id: number): DType;
  /** Memory kept as long as the backend (attribute tables). */
  persist(bytes: number): number;
  /** Declares that the step needs `bytes` of temporary memory at `RunState.temp` while it runs. */
  temp(bytes: number): void;
}

// ---------------------------------------------------------------------------------------------- weight layout

/** Byte offset of the scales after `n` one-byte values: 4-aligned so the kernels read them as f32. */
function scalesOffset(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/**
 * The wasm weight layout (`caps.weightLayout`), for a weight of shape `[..., K]` with `rows = numel / K`:
 * - f32, bf16, i32: the elements, little-endian, as is.
 * - q8: int8 values `[rows, K]`, zero bytes up to a multiple of 4, then f32 scales `[rows, ceil(K/32)]`.
 * - f8e4m3: E4M3 codes `[rows, K]`, zero bytes up to a multiple of 4, then one f32 scale per row `[rows]`: the
 *   canonical block scales expanded (B scales split the rows into B equal runs: 1 per 2-D tensor, 2 for a fused
 *   gate ‖ up, E or 2E for experts), so `W[r, :] = f8 · scale[r]`.
 */
export const wasmWeightLayout: WeightLayout = {
  bytes(shape: readonly number[], dtype: DType): number {
    const n = numel(shape), K = shape[shape.length - 1] ?? 1, rows = K === 0 ? 0 : n / K;
    if (dtype === "q8") return scalesOffset(n) + rows * Math.ceil(K / Q8_BLOCK) * 4;
    if (dtype === "f8e4m3") return scalesOffset(n) + rows * 4;
    if (dtype === "bf16") return 2 * n;
    if (dtype === "f32" || dtype === "i32") return 4 * n;
    throw new RangeError(`wasm: weights cannot be stored as ${dtype}`);
  },
  encode(w: WeightData): Uint8Array {
    const out = new Uint8Array(wasmWeightLayout.bytes(w.shape, w.dtype));
    const n = numel(w.shape), K = w.shape[w.shape.length - 1] ?? 1, rows = K === 0 ? 0 : n / K;
    const elem = w.dtype === "bf16" ? 2 : w.dtype === "f32" || w.dtype === "i32" ? 4 : 1;
    if (w.data.byteLength !== n * elem) {
      throw new RangeError(
        `wasm: weight of shape [${w.shape}] as ${w.dtype} has ${w.data.byteLength} B, not ${n * elem}`,
      );
    }
    out.set(w.data);
    if (w.dtype !== "q8" && w.dtype !== "f8e4m3") return out;
    const scales = new Float32Array(out.buffer, scalesOffset(n), (out.byteLength - scalesOffset(n)) / 4);
    if (w.dtype === "q8") {
      if (w.scales?.length !== scales.length) {
        throw new RangeError(`wasm: q8 weight [${w.shape}] needs ${scales.length} scales, has ${w.scales?.length}`);
      }
      scales.set(w.scales);
      return out;
    }
    const blocks = w.scales ?? new Float32Array([1]);
    if (blocks.length === 0 || rows % blocks.length !== 0) {
      throw new RangeError(
        `wasm: f8 weight [${w.shape}]: ${rows} rows do not split into ${blocks.length} scale blocks`,
      );
    }
    const run = rows / blocks.length;
    for (let r = 0; r < rows; r++) scales[r] = blocks[Math.floor(r / run)];
    return out;
  },
};

// ---------------------------------------------------------------------------------------------- support

const MATRIX = new Set<DType>(["f32", "bf16", "f8e4m3", "q8"]);
const PLAIN = new Set<DType>(["f32", "bf16", "i32"]);
const ELEM_BYTES: Partial<Record<DType, number>> = { f32: 4, i32: 4, bf16: 2 };
const WDT: Partial<Record<DType, number>> = DT;

/**
 * True when the kernels run `node` with these stored input dtypes: activations f32, ids i32, matrices (matmul,
 * embedding, W_kvb, experts) in f32/bf16/f8e4m3/q8 when they are weights (else f32/bf16), caches f32/bf16.
 */
export function supportsNode(node: Node, stored: readonly DType[], kinds: readonly TensorInfo["kind"][]): boolean {
  const is = (i: number, ...dts: DType[]) => dts.includes(stored[i]);
  const matrix = (i: number) => kinds[i] === "weight" ? MATRIX.has(stored[i]) : is(i, "f32", "bf16");
  const out = node.dtype;
  const allF32 = stored.every((d) => d === "f32") && out === "f32";
  switch (node.op) {
    case "embedding":
      return is(0, "i32") && matrix(1) && out === "f32";
    case "rms_norm":
      return is(0, "f32") && is(1, "f32", "bf16") && out === "f32";
    case "matmul":
      return is(0, "f32") && matrix(1) && out === "f32";
    case "add":
    case "mul":
    case "swiglu":
    case "gelu":
    case "moe_route":
      return allF32;
    case "slice":
    case "reshape":
    case "concat":
      return stored.every((d) => d === stored[0] && PLAIN.has(d));
    case "gather_rows":
      return PLAIN.has(stored[0]) && is(1, "i32");
    case "scatter_rows":
      return PLAIN.has(stored[0]) && is(1, "i32") && stored[2] === stored[0];
    case "rope": {
      const pairAxis = (node.attrs as RopeAttrs).pairAxis;
      // The kernel takes one position column, or two split at one pair index (2-D vision rope).
      const split = pairAxis.findIndex((a) => a !== 0);
      const twoColumns = split < 0 || pairAxis.slice(split).every((a) => a === 1);
      return is(0, "f32") && is(1, "i32") && out === "f32" && twoColumns;
    }
    case "attn_temperature":
      return is(0, "f32") && is(1, "i32") && out === "f32";
    case "mla_attention":
      return is(0, "f32") && is(1, "f32") && is(2, "f32") && matrix(3) && is(4, "f32", "bf16") &&
        is(5, "i32") && is(6, "i32") && is(7, "i32") && out === "f32";
    case "moe_experts":
      // One dtype code serves gate, up and down.
      return is(0, "f32") && is(1, "f32") && matrix(2) && stored[3] === stored[2] && out === "f32";
    case "sample":
      return is(0, "f32") && is(1, "f32") && is(2, "i32") && is(3, "f32") && is(4, "f32") && is(5, "i32") &&
        is(6, "i32") && out === "i32";
    case "attention":
      return is(0, "f32") && is(1, "f32") && is(2, "f32") && is(3, "i32") && out === "f32";
    case "patch_merge":
      return is(0, "f32") && is(1, "i32") && out === "f32";
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------- compile

// Fewest elements (or rows × width) worth a thread of their own: below this, waking workers costs more.
const MIN_ELEMS = 1 << 14;

/**
 * Tuning of the compiled steps, read at every run (benchmarks and tests change it):
 * - `pieces`: pieces per thread of the large jobs (matmul, attention, MoE) that the threads take as they finish
 *   (`ParallelOptions.chunks`); 0 or 1: one contiguous range per thread.
 * - `splitContext`: from this many positions on, decode attention items take every head over a part of the
 *   context (split decode) rather than a group of heads over all of it; tests set 0 or Infinity to force a path.
 * - `naivePrefill`: runs of at least this many consecutive tokens of one sequence take MLA's naive (expanded) form
 *   (kernels/wasm/attention_prefill.c), the rest the absorbed kernel; 1 or Infinity forces a path.
 */
export const wasmTuning = { pieces: 4, splitContext: 256, naivePrefill: 64 };

/** `ParallelOptions.chunks` of a large job under the current tuning. */
const pieces = (c: CompileContext) => wasmTuning.pieces * c.pool.threads;

/** Compiles one node (already checked by `supportsNode`). */
export function compileNode(c: CompileContext, node: Node): Step {
  const compile = COMPILERS[node.op];
  if (!compile) throw new Error(`wasm: no kernel for ${node.op}`);
  return compile(c, node);
}

type Compiler = (c: CompileContext, node: Node) => Step;

const shapeOf = (c: CompileContext, id: number, vars: Vars) => resolveShape(c.table[id].shape, vars);
const lastOf = (s: readonly number[]) => s[s.length - 1];
const minRows = (width: number) => Math.max(1, Math.ceil(MIN_ELEMS / Math.max(1, width)));

/** Kernel arguments of a matrix input: dtype code, and where its scales start relative to its address (0: none). */
function matrixArgs(c: CompileContext, id: number): { wdt: number; scales: number } {
  const dt = c.stored(id), t = c.table[id];
  const n = numel(maxShape(t.shape));
  const scales = t.kind === "weight" && (dt === "q8" || dt === "f8e4m3") ? scalesOffset(n) : 0;
  return { wdt: WDT[dt]!, scales };
}

/** f32 copy of a small f32 or bf16 vector (norm weights): bf16 is widened into temp memory each run. */
function f32Vector(c: CompileContext, id: number, n: number, at: number): (s: RunState) => number {
  if (c.stored(id) === "f32") return (s) => s.ptr[id];
  c.temp(at + 4 * n);
  return (s) => {
    c.k.exports.bf16_to_f32_n(s.ptr[id], s.temp + at, 0, n);
    return s.temp + at;
  };
}

function checkIndices(c: CompileContext, ptr: number, n: number, bound: number, what: string): void {
  const v = c.k.i32(ptr, n);
  for (let i = 0; i < n; i++) {
    if (!(v[i] >= 0 && v[i] < bound)) throw new RangeError(`${what} ${v[i]} at row ${i} outside 0..${bound - 1}`);
  }
}

const COMPILERS: Record<string, Compiler> = {
  embedding(c, node) {
    const [ids, table] = node.inputs, { wdt, scales } = matrixArgs(c, table);
    const [V, D] = maxShape(c.table[table].shape);
    return (s) => {
      const T = shapeOf(c, ids, s.vars)[0], w = s.ptr[table];
      checkIndices(c, s.ptr[ids], T, V, "embedding: id");
      const args = [w, wdt, 1, scales ? w + scales : 0, s.ptr[ids], s.ptr[node.id], D];
      c.pool.parallelFor("dequant_rows", args, T, { minRows: minRows(D) });
    };
  },

  rms_norm(c, node) {
    const [x, wid] = node.inputs, D = lastOf(maxShape(c.table[wid].shape)), eps = node.attrs.eps as number;
    const weight = f32Vector(c, wid, D, 0);
    return (s) => {
      const rows = numel(shapeOf(c, x, s.vars)) / D;
      const args = [s.ptr[x], D, weight(s), s.ptr[node.id], D, D, eps];
      c.pool.parallelFor("rms_norm", args, rows, { minRows: minRows(D) });
    };
  },

  matmul(c, node) {
    const [x, wid] = node.inputs, { wdt, scales } = matrixArgs(c, wid);
    const [N, K] = maxShape(c.table[wid].shape);
    return (s) => {
      const M = numel(shapeOf(c, x, s.vars)) / K, w = s.ptr[wid];
      const args = [s.ptr[x], w, wdt, 1, scales ? w + scales : 0, s.ptr[node.id], M, N, K];
      // Split over output features in 8-row panels; enough of them per thread to pay for the wake-up, in pieces
      // the threads take as they finish (a thread descheduled on a busy machine would otherwise hold up the step).
      c.pool.parallelFor("matmul", args, N, {
        align: 8,
        minRows: minRows(M * K),
        chunks: pieces(c),
      });
    };
  },

  add: elementwise2("add"),
  mul: elementwise2("mul"),

  gelu(c, node) {
    const [x] = node.inputs;
    return (s) => {
      const n = numel(shapeOf(c, x, s.vars));
      c.pool.parallelFor("gelu", [s.ptr[x], s.ptr[node.id]], n, { align: 4, minRows: MIN_ELEMS });
    };
  },

  swiglu(c, node) {
    const [x] = node.inputs, F = lastOf(maxShape(node.shape));
    return (s) => {
      const rows = numel(shapeOf(c, node.id, s.vars)) / F, xp = s.ptr[x];
      const args = [xp, 2 * F, xp + 4 * F, 2 * F, s.ptr[node.id], F, F];
      c.pool.parallelFor("swiglu", args, rows, { minRows: minRows(F) });
    };
  },

  slice(c, node) {
    const [x] = node.inputs, es = ELEM_BYTES[c.stored(x)]!;
    const d = lastOf(maxShape(c.table[x].shape)), start = node.attrs.start as number, w = lastOf(maxShape(node.shape));
    return (s) => {
      const rows = numel(shapeOf(c, x, s.vars)) / d;
      copyRows(c, s.ptr[x] + start * es, d * es, 0, s.ptr[node.id], w * es, w * es, rows);
    };
  },

  concat(c, node) {
    const es = ELEM_BYTES[c.stored(node.id)]!, dOut = lastOf(maxShape(node.shape));
    const parts = node.inputs.map((id) => ({ id, d: lastOf(maxShape(c.table[id].shape)) }));
    return (s) => {
      const rows = numel(shapeOf(c, node.id, s.vars)) / dOut;
      let col = 0;
      for (const { id, d } of parts) {
        copyRows(c, s.ptr[id], d * es, 0, s.ptr[node.id] + col * es, dOut * es, d * es, rows);
        col += d;
      }
    };
  },

  reshape(c, node) {
    const [x] = node.inputs, es = ELEM_BYTES[c.stored(x)]!;
    return (s) => {
      if (s.ptr[x] === s.ptr[node.id]) return;
      c.k.exports.copy_rows(s.ptr[x], 0, 0, s.ptr[node.id], 0, numel(shapeOf(c, x, s.vars)) * es, 0, 1);
    };
  },

  gather_rows(c, node) {
    const [x, rows] = node.inputs, es = ELEM_BYTES[c.stored(x)]!;
    return (s) => {
      const xs = shapeOf(c, x, s.vars), R = shapeOf(c, rows, s.vars)[0], w = (numel(xs) / (xs[0] || 1)) * es;
      checkIndices(c, s.ptr[rows], R, xs[0], "gather_rows: row");
      copyRows(c, s.ptr[x], w, s.ptr[rows], s.ptr[node.id], w, w, R);
    };
  },

  scatter_rows(c, node) {
    const [x, rows, src] = node.inputs, w = lastOf(maxShape(node.shape)) * ELEM_BYTES[c.stored(x)]!;
    return (s) => {
      const T = shapeOf(c, x, s.vars)[0], R = shapeOf(c, rows, s.vars)[0], out = s.ptr[node.id];
      checkIndices(c, s.ptr[rows], R, T, "scatter_rows: row");
      c.k.exports.copy_rows(s.ptr[x], 0, 0, out, 0, T * w, 0, 1);
      // In order, one row at a time: a row given twice ends with its last source, as in the reference.
      const idx = c.k.i32(s.ptr[rows], R);
      for (let r = 0; r < R; r++) c.k.exports.copy_rows(s.ptr[src] + r * w, 0, 0, out + idx[r] * w, 0, w, 0, 1);
    };
  },

  rope(c, node) {
    const [x, pos] = node.inputs, a = node.attrs as RopeAttrs;
    const xs = maxShape(c.table[x].shape), dr = lastOf(xs), heads = numel(xs.slice(1)) / dr, np = dr / 2;
    const posStride = c.table[pos].shape.length === 2 ? maxShape(c.table[pos].shape)[1] : 1;
    const firstOne = a.pairAxis.findIndex((v) => v !== 0);
    const split = a.pairAxis.length === 0 || firstOne < 0 ? np : firstOne;
    const theta = c.persist(4 * np);
    c.k.f32(theta, np).set(a.invFreq);
    return (s) => {
      const T = shapeOf(c, x, s.vars)[0], out = s.ptr[node.id];
      c.k.exports.copy_rows(s.ptr[x], 0, 0, out, 0, T * heads * dr * 4, 0, 1);
      const args = [out, heads * dr, heads, dr, 0, dr, theta, s.ptr[pos], posStride, split, a.magnitude, 0, 0];
      c.pool.parallelFor("rope", args, T, { minRows: minRows(heads * dr * 8) });
    };
  },

  attn_temperature(c, node) {
    const [x, pos] = node.inputs, beta = node.attrs.beta as number, original = node.attrs.original as number;
    return (s) => {
      const xs = shapeOf(c, x, s.vars), T = xs[0], w = T === 0 ? 0 : numel(xs) / T;
      const p = c.k.i32(s.ptr[pos], T);
      // Runs of tokens sharing a scale (all of them below the original length) go in one call.
      for (let t0 = 0; t0 < T;) {
        const sc = Math.fround(attnTemperatureScale(p[t0], beta, original));
        let t1 = t0 + 1;
        while (t1 < T && Math.fround(attnTemperatureScale(p[t1], beta, original)) === sc) t1++;
        const args = [s.ptr[x] + 4 * t0 * w, sc, 0, s.ptr[node.id] + 4 * t0 * w];
        c.pool.parallelFor("scale_add", args, (t1 - t0) * w, { align: 4, minRows: MIN_ELEMS });
        t0 = t1;
      }
    };
  },

  mla_attention: compileMla,
  moe_route: compileMoeRoute,
  moe_experts: compileMoeExperts,
  sample: compileSample,
  attention: compileSegAttention,
  patch_merge: compilePatchMerge,
};

function elementwise2(kernel: "add" | "mul"): Compiler {
  return (c, node) => {
    const [a, b] = node.inputs;
    return (s) => {
      const n = numel(shapeOf(c, node.id, s.vars));
      c.pool.parallelFor(kernel, [s.ptr[a], s.ptr[b], s.ptr[node.id]], n, { align: 4, minRows: MIN_ELEMS });
    };
  };
}

function copyRows(
  c: CompileContext,
  src: number,
  lds: number,
  idx: number,
  dst: number,
  ldd: number,
  bytes: number,
  rows: number,
): void {
  c.pool.parallelFor("copy_rows", [src, lds, idx, dst, ldd, bytes], rows, { minRows: minRows(bytes) });
}

// ---------------------------------------------------------------------------------------------- attention

function compileMla(c: CompileContext, node: Node): Step {
  const [q, ckv, kpe, wkvb, cache, seq, pos, bt] = node.inputs;
  const a = node.attrs as MlaAttentionAttrs;
  const { heads: H, dn, dr, dv, kvr, blockSize: bs } = a, QW = kvr + dr, N = H * (dn + dv);
  const { wdt, scales } = matrixArgs(c, wkvb);
  const cdt = c.stored(cache) === "bf16" ? DT.bf16 : DT.f32;
  const nb = maxShape(c.table[cache].shape)[0], mb = maxShape(c.table[bt].shape)[1];
  const Tmax = maxShape(c.table[q].shape)[0];
  // Temp: [c_kv | k_rope] rows for the cache write, the kernels' params structs, split-decode partial states
  // (T · splits < 8 · threads items of [H, kvr + 2]), then the naive prefill's tiles (c_kv, k_rope, expanded kv
  // padded by 8 floats, see attention_prefill.c) and per-(token, head) running max and sum.
  const at64 = (n: number) => Math.ceil(n / 64) * 64;
  const kvBytes = at64(Tmax * QW * 4), paramBytes = 64 * Math.ceil(MLA_PARAMS.length / 16);
  const prefillParamBytes = 64 * Math.ceil(MLA_PREFILL_PARAMS.length / 16);
  const partItems = 8 * c.pool.threads, partBytes = at64(partItems * H * (kvr + 2) * 4);
  const tiles = [CT * kvr * 4, CT * dr * 4, (CT * N + 8) * 4, Tmax * H * 2 * 4].map(at64);
  c.temp(kvBytes + paramBytes + prefillParamBytes + partBytes + tiles.reduce((x, y) => x + y, 0));
  return (s) => {
    const T = shapeOf(c, q, s.vars)[0], S = shapeOf(c, bt, s.vars)[0];
    if (T === 0) return;
    checkMla(c, s, node, T, S, mb, nb);
    const kv = s.temp, params = s.temp + kvBytes, prefillParams = params + paramBytes;
    const part = prefillParams + prefillParamBytes;
    copyRows(c, s.ptr[ckv], kvr * 4, 0, kv, QW * 4, kvr * 4, T);
    copyRows(c, s.ptr[kpe], dr * 4, 0, kv + kvr * 4, QW * 4, dr * 4, T);
    const common = [s.ptr[cache], cdt, s.ptr[bt], mb, bs, s.ptr[seq], s.ptr[pos]];
    c.pool.parallelFor("mla_cache_write", [kv, QW, ...common, QW], T, { minRows: minRows(QW) });
    const w = s.ptr[wkvb], wqs = scales ? w + scales : 0;
    // Runs of consecutive positions of one sequence long enough for the naive form; the absorbed kernel takes the
    // tokens between them.
    const seqs = c.k.i32(s.ptr[seq], T), poss = c.k.i32(s.ptr[pos], T);
    const [ckvTile, krTile, kvTile, state] = offsets(part + partBytes, tiles);
    let done = 0;
    for (const r of naiveRuns(seqs, poss, wasmTuning.naivePrefill)) {
      if (r.start > done) absorbed(done, r.start);
      const p0 = poss[r.start], ctx = p0 + r.n;
      for (let c0 = 0; c0 < ctx; c0 += CT) {
        const cl = Math.min(CT, ctx - c0);
        writeParams(c.k, prefillParams, MLA_PREFILL_PARAMS, {
          q: s.ptr[q] + r.start * H * (dn + dr) * 4,
          cache: s.ptr[cache],
          cdt,
          table: s.ptr[bt] + seqs[r.start] * mb * 4,
          bs,
          ckv: ckvTile,
          kr: krTile,
          kv: kvTile,
          state,
          out: s.ptr[node.id] + r.start * H * dv * 4,
          n: r.n,
          p0,
          c0,
          cl,
          last: c0 + cl >= ctx ? 1 : 0,
          H,
          dn,
          dr,
          dv,
          kvr,
          scale: a.scale,
          tb: PREFILL_TB,
        });
        c.pool.parallelFor("mla_gather", [prefillParams], cl, { minRows: minRows(QW) });
        c.pool.parallelFor("matmul", [ckvTile, w, wdt, 1, wqs, kvTile, cl, N, kvr], N, {
          align: 8,
          minRows: minRows(cl * kvr),
          chunks: pieces(c),
        });
        c.pool.parallelFor("mla_prefill", [prefillParams], Math.ceil(r.n / PREFILL_TB) * H, { chunks: pieces(c) });
      }
      done = r.start + r.n;
    }
    if (done < T) absorbed(done, T);

    /** The absorbed kernel over tokens [t0, t1). */
    function absorbed(t0: number, t1: number): void {
      const n = t1 - t0, threads = c.pool.threads;
      // Prefill: token blocks share W_kvb decoding and cache tiles, all heads at once. Decode: one token's heads
      // spread over the threads.
      let tb = 1, hg = H, splits = 0;
      if (n >= 4 * threads) tb = Math.max(1, Math.min(8, Math.floor(n / (4 * threads))));
      else {
        // Decode. Head groups read the whole latent cache once per group: fine while it is short. Past
        // wasmTuning.splitContext, every item takes all heads over a part of the context instead (the cache is
        // read once, the parts spread over the threads), and mla_merge combines the parts.
        let ctx = 0;
        for (let t = t0; t < t1; t++) ctx = Math.max(ctx, poss[t] + 1);
        const parts = Math.min(Math.ceil((4 * threads) / n), Math.ceil(ctx / 64), Math.floor(partItems / n));
        if (ctx >= wasmTuning.splitContext && parts > 1) splits = parts;
        else hg = Math.ceil(H / Math.min(H, Math.ceil((4 * threads) / n)));
      }
      writeParams(c.k, params, MLA_PARAMS, {
        q: s.ptr[q] + t0 * H * (dn + dr) * 4,
        wkvb: w,
        wdt,
        wscale: 1,
        wqs,
        cache: s.ptr[cache],
        cdt,
        blockTables: s.ptr[bt],
        maxBlocks: mb,
        bs,
        tokSeq: s.ptr[seq] + t0 * 4,
        tokPos: s.ptr[pos] + t0 * 4,
        out: s.ptr[node.id] + t0 * H * dv * 4,
        T: n,
        H,
        dn,
        dr,
        dv,
        kvr,
        scale: a.scale,
        hg,
        tb,
        splits,
        part,
      });
      if (splits > 1) {
        c.pool.parallelFor("mla_attention", [params], n * splits, { chunks: pieces(c) });
        c.pool.parallelFor("mla_merge", [params], n * H, { chunks: pieces(c) });
        return;
      }
      c.pool.parallelFor("mla_attention", [params], Math.ceil(n / tb) * Math.ceil(H / hg), { chunks: pieces(c) });
    }
  };
}

/** Context rows per tile of the naive MLA prefill (expanded k_nope and v of every head: CT · H · (dn + dv)). */
const CT = 256;
/** Tokens per naive-prefill work item: at most TB in kernels/wasm/attention_prefill.c (one 8-column Q panel). */
const PREFILL_TB = 8;

/** Start addresses of consecutive blocks of the given sizes from `base`. */
function offsets(base: number, sizes: number[]): number[] {
  const out: number[] = [];
  for (const size of sizes) out.push(base), base += size;
  return out;
}

/**
 * Maximal runs of at least `min` tokens of one sequence at consecutive positions: the naive MLA prefill needs its
 * tokens at p0, p0 + 1, … (every earlier position of the sequence already in the cache).
 */
export function naiveRuns(seq: Int32Array, pos: Int32Array, min: number): { start: number; n: number }[] {
  const runs: { start: number; n: number }[] = [];
  for (let t = 0; t < seq.length;) {
    let e = t + 1;
    while (e < seq.length && seq[e] === seq[t] && pos[e] === pos[e - 1] + 1) e++;
    if (e - t >= min) runs.push({ start: t, n: e - t });
    t = e;
  }
  return runs;
}

/** Sequence, position and block ids must address the cache: a bad one would write outside it. */
function checkMla(c: CompileContext, s: RunState, node: Node, T: number, S: number, mb: number, nb: number): void {
  const [, , , , , seqId, posId, btId] = node.inputs, bs = (node.attrs as MlaAttentionAttrs).blockSize;
  const seq = c.k.i32(s.ptr[seqId], T), pos = c.k.i32(s.ptr[posId], T), bt = c.k.i32(s.ptr[btId], S * mb);
  const last = new Int32Array(S).fill(-1);
  for (let t = 0; t < T; t++) {
    const q = seq[t], p = pos[t];
    if (!(q >= 0 && q < S)) throw new RangeError(`mla_attention: seq ${q} outside 0..${S - 1}`);
    if (!(p >= 0 && Math.floor(p / bs) < mb)) throw new RangeError(`mla_attention: pos ${p} beyond ${mb} blocks`);
    if (p > last[q]) last[q] = p;
  }
  for (let q = 0; q < S; q++) {
    for (let b = 0; b <= Math.floor(last[q] / bs) && last[q] >= 0; b++) {
      const id = bt[q * mb + b];
      if (!(id >= 0 && id < nb)) throw new RangeError(`mla_attention: block ${id} (seq ${q}) outside 0..${nb - 1}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------- MoE

function compileMoeRoute(c: CompileContext, node: Node): Step {
  const [logits] = node.inputs, K = node.attrs.topK as number;
  const [Tmax, E] = maxShape(node.shape);
  c.temp(8 * Tmax * K);
  return (s) => {
    const T = shapeOf(c, logits, s.vars)[0], idx = s.temp, w = s.temp + 4 * Tmax * K;
    c.pool.parallelFor("moe_route", [s.ptr[logits], E, K, 1, 1, idx, w], T, { minRows: minRows(E * K * 4) });
    // The op's result is dense [T, E]: zeros but for each token's top-k weights.
    const out = c.k.f32(s.ptr[node.id], T * E), ids = c.k.i32(idx, T * K), ws = c.k.f32(w, T * K);
    out.fill(0);
    for (let i = 0; i < T * K; i++) out[Math.floor(i / K) * E + ids[i]] = ws[i];
  };
}

function compileMoeExperts(c: CompileContext, node: Node): Step {
  const [x, route, gateUp, down] = node.inputs, K = node.attrs.topK as number;
  const [E, , D] = maxShape(c.table[gateUp].shape), F = maxShape(c.table[down].shape)[2];
  const Tmax = maxShape(c.table[x].shape)[0], A = Tmax * K;
  const dt = c.stored(gateUp), { wdt, scales: guScales } = matrixArgs(c, gateUp), dnScales = matrixArgs(c, down).scales;
  const es = dt === "f32" ? 4 : dt === "bf16" ? 2 : 1;
  // Scale strides per expert in floats: q8 blocks along the input dim, f8 one per row.
  const rowScales = (width: number) => dt === "q8" ? Math.ceil(width / Q8_BLOCK) : dt === "f8e4m3" ? 1 : 0;
  const guRow = rowScales(D), dnRow = rowScales(F);
  // Temp layout (bytes): idx, w, order, inv [A] · offsets [E+1] · active [E] · act, up [A, F] · ys [A, D] · params.
  const sizes = [
    4 * A,
    4 * A,
    4 * A,
    4 * A,
    4 * (E + 1),
    4 * E,
    4 * A * F,
    4 * A * F,
    4 * A * D,
    4 * MOE_PARAMS.length,
  ];
  const offsets: number[] = [];
  let total = 0;
  for (const b of sizes) offsets.push(total), total += Math.ceil(b / 64) * 64;
  c.temp(total);
  const chunkField = MOE_PARAMS.indexOf("chunk");
  return (s) => {
    const T = shapeOf(c, x, s.vars)[0];
    if (T === 0) return;
    const [idx, w, order, inv, offs, active, act, up, ys, params] = offsets.map((o) => s.temp + o);
    denseToTopK(c, s.ptr[route], T, E, K, idx, w);
    const nActive = c.k.exports.moe_plan(idx, T, K, E, offs, order, inv, active);
    const gu = s.ptr[gateUp], dw = s.ptr[down];
    const guQs = guScales ? gu + guScales : 0, dnQs = dnScales ? dw + dnScales : 0;
    writeParams(c.k, params, MOE_PARAMS, {
      x: s.ptr[x],
      offsets: offs,
      order,
      inv,
      active,
      nActive,
      wg: gu,
      wu: gu + F * D * es,
      wd: dw,
      wdt,
      sg: 2 * F * D * es,
      su: 2 * F * D * es,
      sd: D * F * es,
      qg: guQs,
      qu: guQs ? guQs + 4 * F * guRow : 0,
      qd: dnQs,
      qsg: 2 * F * guRow,
      qsu: 2 * F * guRow,
      qsd: D * dnRow,
      act,
      up,
      ys,
      w,
      out: s.ptr[node.id],
      T,
      D,
      F,
      k: K,
      chunk: 8,
    });
    // Work items are (expert, chunk of output columns): about 4 per thread, in multiples of 8 columns.
    const perExpert = Math.max(1, Math.ceil((4 * c.pool.threads) / nActive));
    const chunk = (width: number) => Math.max(8, Math.ceil(width / perExpert / 8) * 8);
    const field = c.k.i32(params, MOE_PARAMS.length);
    field[chunkField] = chunk(F);
    c.pool.parallelFor("moe_gate_up", [params], nActive * Math.ceil(F / chunk(F)), { chunks: pieces(c) });
    field[chunkField] = chunk(D);
    c.pool.parallelFor("moe_down", [params], nActive * Math.ceil(D / chunk(D)), { chunks: pieces(c) });
    c.pool.parallelFor("moe_combine", [params], T, { minRows: minRows(D * K) });
  };
}

/**
 * The non-zeros of each route row as k (expert, weight) pairs in expert order. Rows with fewer (a weight that
 * underflowed) are padded with weight 0 on an expert already chosen, which adds exactly nothing.
 */
function denseToTopK(c: CompileContext, route: number, T: number, E: number, K: number, idx: number, w: number) {
  const r = c.k.f32(route, T * E), ids = c.k.i32(idx, T * K), ws = c.k.f32(w, T * K);
  for (let t = 0; t < T; t++) {
    let j = 0;
    for (let e = 0; e < E; e++) {
      const v = r[t * E + e];
      if (v === 0) continue;
      if (j === K) throw new RangeError(`moe_experts: route row ${t} has more than topK = ${K} non-zeros`);
      ids[t * K + j] = e;
      ws[t * K + j++] = v;
    }
    const pad = j > 0 ? ids[t * K] : 0;
    for (; j < K; j++) ids[t * K + j] = pad, ws[t * K + j] = 0;
  }
}

// ---------------------------------------------------------------------------------------------- sampling

function compileSample(c: CompileContext, node: Node): Step {
  const [logits, temps, topK, topP, uniform, maskRow, mask] = node.inputs;
  const V = maxShape(c.table[logits].shape)[1], threads = c.pool.threads;
  // The kernel wants 8·V bytes per row it samples; rows go in batches of one per thread.
  c.temp(8 * V * threads);
  return (s) => {
    const R = shapeOf(c, logits, s.vars)[0];
    for (let b = 0; b < R; b += threads) {
      const n = Math.min(threads, R - b), o = 4 * b;
      const args = [s.ptr[logits] + o * V, V, s.ptr[temps] + o, s.ptr[topK] + o, s.ptr[topP] + o, s.ptr[uniform] + o];
      // Mask rows index the whole mask tensor, so its pointer is not offset.
      const masks = [s.ptr[maskRow] + o, s.ptr[mask]];
      c.pool.parallelFor("sample", [...args, ...masks, s.ptr[node.id] + o, s.temp], n);
    }
  };
}

// ---------------------------------------------------------------------------------------------- vision

// Query rows per `seg_attention` work item: QB in kernels/wasm/vision.c.
const SEG_QB = 16;

/**
 * Block-diagonal attention (`attention`): work items are (≤ SEG_QB query rows of one segment, head), weighted by
 * their key count so the threads' shares of the cost-unit range carry equal work (see vision.c).
 */
function compileSegAttention(c: CompileContext, node: Node): Step {
  const [q, k, v, seg] = node.inputs, scale = node.attrs.scale as number;
  const [Nmax, H, d] = maxShape(c.table[q].shape), dv = lastOf(maxShape(c.table[v].shape));
  // Every item holds at least one row: at most N·H items of 6 i32.
  c.temp(24 * Nmax * H);
  return (s) => {
    const N = shapeOf(c, q, s.vars)[0];
    if (N === 0) return;
    const items = c.k.i32(s.temp, 6 * N * H);
    const { count, cost } = segmentItems(c.k.i32(s.ptr[seg], N), H, items);
    const args = [s.ptr[q], s.ptr[k], s.ptr[v], s.ptr[node.id], H, d, dv, scale, s.temp, count];
    c.pool.parallelFor("seg_attention", args, cost, { minRows: minRows(8 * (d + dv)) });
  };
}

/**
 * Writes the work items of `segment` into `items` ({q0, q1, k0, k1, h, cost0} each) and returns their count and
 * total cost. An item costs one unit per 8 keys per query row, plus 4 for its setup. The kernel attends over
 * `[k0, k1)`, so each segment must be one contiguous run of rows (what `visionBatch` builds).
 */
export function segmentItems(segment: Int32Array, H: number, items: Int32Array): { count: number; cost: number } {
  const seen = new Set<number>();
  let count = 0, cost = 0;
  for (let k0 = 0, k1: number; k0 < segment.length; k0 = k1) {
    const id = segment[k0];
    if (seen.has(id)) {
      throw new RangeError(`attention: segment ${id} is not one contiguous run of rows (row ${k0}); wasm needs that`);
    }
    seen.add(id);
    for (k1 = k0 + 1; k1 < segment.length && segment[k1] === id;) k1++;
    // Blocks of equal size (no short tail block): ceil(len / SEG_QB) of them.
    const len = k1 - k0, blocks = Math.ceil(len / SEG_QB), rows = Math.ceil(len / blocks);
    for (let q0 = k0; q0 < k1; q0 += rows) {
      const q1 = Math.min(k1, q0 + rows);
      for (let h = 0; h < H; h++) {
        items.set([q0, q1, k0, k1, h, cost], 6 * count++);
        cost += (q1 - q0) * Math.ceil(len / 8) + 4;
      }
    }
  }
  return { count, cost };
}

/** `patch_merge`: a channel-major gather of `index`'s rows; indices are checked first, as for `gather_rows`. */
function compilePatchMerge(c: CompileContext, node: Node): Step {
  const [x, index] = node.inputs;
  const C = lastOf(maxShape(c.table[x].shape)), K = lastOf(maxShape(c.table[index].shape));
  return (s) => {
    const P = shapeOf(c, x, s.vars)[0], M = shapeOf(c, index, s.vars)[0];
    checkIndices(c, s.ptr[index], M * K, P, "patch_merge: row");
    const args = [s.ptr[x], C, s.ptr[index], K, s.ptr[node.id]];
    c.pool.parallelFor("patch_merge", args, M, { minRows: minRows(C * K) });
  };
}
