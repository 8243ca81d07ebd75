/**
 * The `wasm` backend's op compilers: `supportsNode` says which nodes the kernels run (by op, stored dtypes and
 * input kinds), and `compileNode` turns one node into a {@link Step}: a closure with everything shape-independent
 * resolved at prepare time (kernel, dtype codes, attribute tables, scratch sizes) that reads pointers, symbol
 * values and host copies of the integer inputs from the {@link RunState} of each run, and splits rows across the
 * thread pool. This file holds the elementwise, norm, matmul and copy ops; mla.ts, moe.ts and vision_ops.ts the
 * rest. Weights use the layout of layout.ts.
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { maxShape, type Node, numel, type TensorInfo } from "../../../graph/ir.ts";
import type { RopeAttrs } from "../../../ops/rope.ts";
import { checkIndices, temperatureRuns } from "../../step_plan.ts";
import {
  type CompileContext,
  type Compiler,
  copyRows,
  ELEM_BYTES,
  hostInts,
  lastOf,
  matrixArgs,
  MIN_ELEMS,
  minRows,
  pieces,
  preQuantised,
  type RunState,
  shapeOf,
  type Step,
} from "./compile.ts";
import { compileCacheWrite, compileMla } from "./mla.ts";
import { compileMoeExperts, compileMoeGate, compileMoeTopK } from "./moe.ts";
import { compilePatchMerge, compileRowAttention, compileSample, compileSegAttention } from "./vision_ops.ts";

export { type RunState, type Step, type WasmTuning } from "./compile.ts";

// ---------------------------------------------------------------------------------------------- support

const MATRIX = new Set<DType>(["f32", "bf16", "f8e4m3", "q8", "q4", "nvfp4"]);
const PLAIN = new Set<DType>(["f32", "bf16", "i32"]);

/**
 * True when the kernels run `node` with these stored input dtypes: activations f32, ids i32, matrices (matmul,
 * embedding, W_kvb, experts) in f32/bf16/f8e4m3/q8/q4/nvfp4 when they are weights (else f32/bf16; W_kvb not q4:
 * `--dtype q4` keeps it q8, graph/blocks/mla.ts), caches f32/bf16. Index
 * inputs that decide where a kernel reads or writes (token ids, positions, rows, block tables, segments) must be
 * per-run graph inputs, whose host copies `run` receives; device-computed ids (MoE routes) stay on the device.
 */
export function supportsNode(node: Node, stored: readonly DType[], kinds: readonly TensorInfo["kind"][]): boolean {
  const is = (i: number, ...dts: DType[]) => dts.includes(stored[i]);
  const matrix = (i: number) => kinds[i] === "weight" ? MATRIX.has(stored[i]) : is(i, "f32", "bf16");
  // Indices that steer a step (positions, rows, blocks) are read from the run's host copies: graph inputs only.
  const host = (i: number) => kinds[i] === "input";
  const indices = (...ids: number[]) => ids.every((i) => is(i, "i32") && host(i));
  const out = node.dtype;
  const allF32 = stored.every((d) => d === "f32") && out === "f32";
  switch (node.op) {
    case "embedding":
      return is(0, "i32") && host(0) && matrix(1) && out === "f32";
    case "rms_norm":
      return is(0, "f32") && is(1, "f32", "bf16") && out === "f32";
    case "matmul":
      return is(0, "f32") && matrix(1) && out === "f32";
    case "add":
    case "mul":
    case "swiglu":
    case "gelu":
      return allF32;
    case "moe_topk":
      return is(0, "f32") && out === "i32";
    case "moe_gate":
      return is(0, "f32") && is(1, "i32") && out === "f32";
    case "slice":
    case "reshape":
    case "concat":
      return stored.every((d) => d === stored[0] && PLAIN.has(d));
    case "gather_rows":
      return PLAIN.has(stored[0]) && is(1, "i32") && host(1);
    case "scatter_rows":
    case "write_rows":
      return PLAIN.has(stored[0]) && is(1, "i32") && host(1) && stored[2] === stored[0];
    case "rope": {
      const pairAxis = (node.attrs as RopeAttrs).pairAxis;
      // The kernel takes one position column, or two split at one pair index (2-D vision rope).
      const split = pairAxis.findIndex((a) => a !== 0);
      const twoColumns = split < 0 || pairAxis.slice(split).every((a) => a === 1);
      return is(0, "f32") && is(1, "i32") && out === "f32" && twoColumns;
    }
    case "attn_temperature":
      return is(0, "f32") && is(1, "i32") && host(1) && out === "f32";
    case "mla_cache_write":
      return is(0, "f32") && is(1, "f32") && is(2, "f32", "bf16") && indices(3, 4, 5) && out === "f32";
    case "mla_attention":
      return is(0, "f32") && matrix(1) && !is(1, "q4") && is(2, "f32", "bf16") && indices(3, 4, 5) && out === "f32";
    case "moe_experts":
      // One dtype code serves gate, up and down.
      return is(0, "f32") && is(1, "i32") && is(2, "f32") && matrix(3) && stored[4] === stored[3] && out === "f32";
    case "sample":
      return is(0, "f32") && is(1, "f32") && is(2, "i32") && is(3, "f32") && is(4, "f32") && is(5, "i32") &&
        is(6, "i32") && out === "i32";
    case "attention":
      return is(0, "f32") && is(1, "f32") && is(2, "f32") && is(3, "i32") && host(3) && out === "f32";
    case "attention_rows":
      return is(0, "f32") && is(1, "f32") && is(2, "f32") && indices(3, 4) && out === "f32";
    case "patch_merge":
      return is(0, "f32") && is(1, "i32") && host(1) && out === "f32";
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------- compile

/** Compiles one node (already checked by `supportsNode`). */
export function compileNode(c: CompileContext, node: Node): Step {
  const compile = COMPILERS[node.op];
  if (!compile) throw new Error(`wasm: no kernel for ${node.op}`);
  return compile(c, node);
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

const COMPILERS: Record<string, Compiler> = {
  embedding(c, node) {
    const [ids, table] = node.inputs, { wdt, scales } = matrixArgs(c, table);
    const [V, D] = maxShape(c.table[table].shape);
    return (s) => {
      const T = shapeOf(c, ids, s.vars)[0], w = s.ptr[table];
      checkIndices(hostInts(s, ids), V, "embedding: id");
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
    // q8, q4 and NVFP4 decode: the activation rows are quantised once here, not by every piece of the split (K =
    // 1024 costs about as much as a piece's 48 rows of q4 weights at ms4-mini's sizes).
    const pre = preQuantised(c, wdt, K);
    if (pre) c.temp(8 * pre.rowBytes);
    return (s) => {
      const M = numel(shapeOf(c, x, s.vars)) / K, w = s.ptr[wid], qs = scales ? w + scales : 0;
      // Split over output features in 8-row panels; enough of them per thread to pay for the wake-up, in pieces
      // the threads take as they finish (a thread descheduled on a busy machine would otherwise hold up the step).
      const split = { align: 8, minRows: minRows(M * K), chunks: pieces(c) };
      if (pre?.on(M)) {
        pre.quantize(s.ptr[x], s.temp, M);
        return c.pool.parallelFor(pre.matmul, [s.temp, w, qs, s.ptr[node.id], M, N, K], N, split);
      }
      c.pool.parallelFor("matmul", [s.ptr[x], w, wdt, 1, qs, s.ptr[node.id], M, N, K], N, split);
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
      checkIndices(hostInts(s, rows), xs[0], "gather_rows: row");
      copyRows(c, s.ptr[x], w, s.ptr[rows], s.ptr[node.id], w, w, R);
    };
  },

  scatter_rows(c, node) {
    const [x, rows, src] = node.inputs, w = lastOf(maxShape(node.shape)) * ELEM_BYTES[c.stored(x)]!;
    return (s) => {
      const T = shapeOf(c, x, s.vars)[0], R = shapeOf(c, rows, s.vars)[0], out = s.ptr[node.id];
      const idx = hostInts(s, rows);
      checkIndices(idx, T, "scatter_rows: row");
      c.k.exports.copy_rows(s.ptr[x], 0, 0, out, 0, T * w, 0, 1);
      // In order, one row at a time: a row given twice ends with its last source, as in the reference.
      for (let r = 0; r < R; r++) c.k.exports.copy_rows(s.ptr[src] + r * w, 0, 0, out + idx[r] * w, 0, w, 0, 1);
    };
  },

  write_rows(c, node) {
    const [target, rows, src] = node.inputs, ts = maxShape(c.table[target].shape);
    const w = (numel(ts) / ts[0]) * ELEM_BYTES[c.stored(target)]!; // one row of the leading dim
    return (s) => {
      const R = shapeOf(c, rows, s.vars)[0], idx = hostInts(s, rows);
      checkIndices(idx.map((i) => Math.max(i, 0)), ts[0], "write_rows: row");
      c.k.exports.copy_rows(s.ptr[src], 0, 0, s.ptr[node.id], 0, R * w, 0, 1); // the result: the source as given
      // In order, one row at a time: a row given twice ends with its last source, as in the reference; a negative
      // row writes nothing.
      for (let r = 0; r < R; r++) {
        if (idx[r] >= 0) c.k.exports.copy_rows(s.ptr[src] + r * w, 0, 0, s.ptr[target] + idx[r] * w, 0, w, 0, 1);
      }
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
      // Runs of tokens sharing a scale (all of them below the original length) go in one call.
      for (const r of temperatureRuns(hostInts(s, pos), beta, original)) {
        const args = [s.ptr[x] + 4 * r.start * w, r.scale, 0, s.ptr[node.id] + 4 * r.start * w];
        c.pool.parallelFor("scale_add", args, (r.end - r.start) * w, { align: 4, minRows: MIN_ELEMS });
      }
    };
  },

  mla_cache_write: compileCacheWrite,
  mla_attention: compileMla,
  moe_topk: compileMoeTopK,
  moe_gate: compileMoeGate,
  moe_experts: compileMoeExperts,
  sample: compileSample,
  attention: compileSegAttention,
  attention_rows: compileRowAttention,
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
