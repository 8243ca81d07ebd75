/**
 * The `webgpu` backend's op compilers: `supportsNode` says which nodes the WGSL kernels (kernels/wgsl) run, and
 * `compileNode` turns one node into a {@link Step}: a closure, built once at prepare, that at each run reads the
 * concrete shapes and the host copies of the integer inputs and records its dispatches through an
 * {@link Encoder} (which resolves tensors to buffer ranges and caches bind groups).
 *
 * Activations are f32 on the device, ids i32; weights stay in their dtype (common.ts `Stored`), decoded as read.
 * Index inputs that only steer device work (token ids, MoE routes, block tables) are read on the device; positions
 * are read on the host where a kernel needs values computed from them (rope's cos/sin, the query temperature), so
 * those must be graph inputs.
 *
 * @module
 */

import { maxShape, type Node, numel, resolveShape, type TensorInfo, type Vars } from "../../../graph/ir.ts";
import type { AttnTemperatureAttrs } from "../../../ops/attn_temperature.ts";
import { attnTemperatureScale } from "../../../ops/attn_temperature.ts";
import type { MlaAttentionAttrs } from "../../../ops/mla_attention.ts";
import type { RopeAttrs } from "../../../ops/rope.ts";
import type { HostInputs } from "../../backend.ts";
import { checkIndices } from "../../step_plan.ts";
import { binaryKernel, ROW_SCALE, SWIGLU } from "../../../kernels/wgsl/elementwise.ts";
import { mlaCacheWriteKernel } from "../../../kernels/wgsl/mla.ts";
import { rmsNormKernel } from "../../../kernels/wgsl/norm.ts";
import { COPY_ROWS, gatherKernel } from "../../../kernels/wgsl/rows.ts";
import { ROPE } from "../../../kernels/wgsl/rope.ts";
import { WG } from "../../../kernels/wgsl/common.ts";
import { attentionKernel, GELU, PATCH_MERGE } from "../../../kernels/wgsl/vision.ts";
import { SAMPLE } from "../../../kernels/wgsl/sample.ts";
import { MOE_COMPILERS, moeFits } from "./ops_moe.ts";
import { compileMatmul } from "./ops_matmul.ts";
import { compileMlaAttention } from "./ops_mla.ts";
import type { WebGpuTuning } from "./tuning.ts";
import { checkHostCache, f32Bits, hostOf, keyRanges, lastWins, QUANTISED, scaleWord, storedOf } from "../gpu_layout.ts";

/** A byte range of a device buffer, as a kernel binds it (opaque to the compilers). */
export type Ref = { readonly buffer: unknown; readonly offset: number; readonly size: number };

/** One part of a weight: its range and the leading-dimension rows it holds. */
export type PartRef = { ref: Ref; row0: number; rows: number };

/** What a step records its work through, for one run. */
export interface Encoder {
  readonly vars: Vars;
  readonly host: HostInputs;
  /** Tensor `id` as one range (a split weight is an error naming it). */
  view(id: number): Ref;
  /** Weight `id` as its row-range parts (one part when it is not split). */
  parts(id: number): PartRef[];
  /** Device scratch of the step, `bytes` at most (sized at prepare, reused by every run). */
  scratch(key: string, bytes: number): Ref;
  /**
   * Device scratch shared by the steps of the segment that ask for `key` with the same size (its contents live
   * from one dispatch of a step to its next ones only: the steps run in order).
   */
  shared(key: string, bytes: number): Ref;
  /** `data` written to a buffer of the step, ordered before this run's dispatches (host-computed tables). */
  upload(key: string, data: Float32Array | Int32Array, maxBytes: number): Ref;
  /** A 4-byte placeholder for a binding a kernel variant does not read. */
  dummy(): Ref;
  /**
   * One dispatch of the kernel `wgsl` over `groups` workgroups, with its parameter words and tensor ranges. With 0
   * groups nothing runs but its bind group is made: a variant that other runs of the bucket take.
   */
  dispatch(wgsl: string, params: readonly number[], refs: readonly Ref[], groups: number): void;
}

/** One compiled node. */
export type Step = (e: Encoder) => void;

/** What compiling a node may look at. */
export type CompileContext = {
  table: TensorInfo[];
  /** Declares a kernel the step dispatches, so `prepare` builds its pipeline before the first run. */
  use(...wgsl: string[]): void;
  /** The device's workgroup memory limit (bytes). */
  workgroupBytes: number;
  /** Kernel choices (tuning.ts). */
  tuning: WebGpuTuning;
  /** Whether the device has `shader-f16` and the tuning allows it. */
  f16: boolean;
};

/** Workgroups of an element-wise kernel over `n` elements. */
export const groupsFor = (n: number) => Math.ceil(n / WG);

/**
 * True when the kernels run `node` whose inputs are `inputs` (graph dtypes; every float is f32 on this device).
 * `refuse` names ops to refuse anyway.
 */
export function supportsNode(
  node: Node,
  inputs: readonly TensorInfo[],
  workgroupBytes: number,
  storageBuffers: number,
): boolean {
  // An activation is f32 here; a weight or a cache may also be bf16 (packed), read through the kernels' bf16 form,
  // and the weights of matrix products FP8, q8, NVFP4 or q4 (`weight`), decoded as read.
  const float = (i: number) => storedOf(inputs[i]) === "f32" && inputs[i].dtype !== "i32" && inputs[i].dtype !== "u8";
  const matrix = (i: number) => float(i) || inputs[i].dtype === "bf16" || inputs[i].dtype === "f16";
  const cache = (i: number) => float(i) || inputs[i].dtype === "bf16";
  const weight = (i: number) => matrix(i) || (inputs[i].kind === "weight" && QUANTISED.has(storedOf(inputs[i])));
  const int = (i: number) => inputs[i].dtype === "i32";
  const hostInput = (i: number) => int(i) && inputs[i].kind === "input";
  const outF32 = node.dtype === "f32";
  switch (node.op) {
    case "embedding":
      return int(0) && weight(1) && outF32;
    case "rms_norm":
      return float(0) && matrix(1) && outF32;
    case "matmul":
      return float(0) && weight(1) && outF32;
    case "add":
    case "mul":
      return float(0) && float(1) && outF32;
    case "swiglu":
      return float(0) && outF32;
    case "rope":
    case "attn_temperature":
      return float(0) && hostInput(1) && outF32;
    case "reshape":
      // A word copy, so bf16 too (a tensor's binding is padded to whole words).
      return int(0) || matrix(0);
    case "slice":
    case "concat":
      return inputs.every((t) => t.dtype === inputs[0].dtype) && (int(0) || float(0));
    case "gather_rows":
      return (float(0) || int(0)) && int(1);
    case "scatter_rows":
    case "write_rows":
      return (float(0) || int(0)) && hostInput(1) && inputs[2].dtype === inputs[0].dtype;
    case "moe_topk":
      return float(0) && node.dtype === "i32";
    case "moe_gate":
      return float(0) && int(1) && outF32;
    case "moe_experts":
      return float(0) && int(1) && float(2) && weight(3) && weight(4) && outF32 &&
        moeFits(inputs[3].shape[0], workgroupBytes, storageBuffers);
    case "gelu":
      return float(0) && outF32;
    case "sample":
      // Its parameter block and eight tensors: nine storage bindings.
      return float(0) && float(1) && int(2) && float(3) && float(4) && int(5) && int(6) && node.dtype === "i32" &&
        storageBuffers >= 9;
    case "attention":
    case "attention_rows": {
      const d = inputs[0].shape[2];
      return float(0) && float(1) && float(2) && hostInput(3) && (node.op === "attention" || hostInput(4)) &&
        typeof d === "number" && 4 * (d + 256 + 66) <= workgroupBytes && outF32;
    }
    case "patch_merge":
      return float(0) && int(1) && outF32;
    case "mla_cache_write":
      // A bf16 cache is written a word (two values) at a time: rows must not share words.
      return float(0) && float(1) && cache(2) && int(3) && int(4) && int(5) &&
        (inputs[2].dtype !== "bf16" || inputs[2].shape[2] as number % 2 === 0);
    case "mla_attention": {
      const a = node.attrs as MlaAttentionAttrs;
      const maxBlocks = inputs[5].shape[1];
      // W_kvb in q4 is refused (`--dtype q4` keeps it q8); the kernel reads any other weight dtype.
      return float(0) && weight(1) && inputs[1].dtype !== "q4" && cache(2) && int(3) && int(4) && int(5) &&
        typeof maxBlocks === "number" &&
        8 * a.kvr + 8 * 256 + 4 * 66 <= workgroupBytes && outF32;
    }
    default:
      return false;
  }
}

/** Compiles `node` (which {@link supportsNode} accepts) into a step. */
export function compileNode(c: CompileContext, node: Node): Step {
  const compile = COMPILERS[node.op];
  if (!compile) throw new Error(`webgpu: no kernel for ${node.op}`);
  return compile(c, node);
}

type Compiler = (c: CompileContext, node: Node) => Step;

/** Tensor `id`'s shape in this run. */
export const shapeOf = (c: CompileContext, e: Encoder, id: number) => resolveShape(c.table[id].shape, e.vars);
const lastOf = (s: readonly number[]) => s[s.length - 1];

/** A row copy through COPY_ROWS (see kernels/wgsl/rows.ts), with an optional index binding. */
function copyRows(
  e: Encoder,
  src: Ref,
  dst: Ref,
  o: { rows: number; width: number; srcStride: number; srcCol?: number; dstStride: number; dstCol?: number },
  index?: { ref: Ref; base: number; bound: number; scatter?: boolean },
): void {
  const n = o.rows * o.width;
  if (n === 0) return;
  const mode = index ? (index.scatter ? 2 : 1) : 0;
  const params = [n, o.width, o.srcStride, o.srcCol ?? 0, o.dstStride, o.dstCol ?? 0, mode];
  params.push(index?.base ?? 0, index?.bound ?? 0);
  e.dispatch(COPY_ROWS, params, [src, index?.ref ?? e.dummy(), dst], groupsFor(n));
}

const ADD = binaryKernel("+"), MUL = binaryKernel("*");

const COMPILERS: Record<string, Compiler> = {
  embedding(c, node) {
    const [ids, table] = node.inputs;
    const [V, D] = maxShape(c.table[table].shape), stored = storedOf(c.table[table]);
    const gather = stored === "f32" ? undefined : gatherKernel(stored);
    c.use(gather ?? COPY_ROWS);
    return (e) => {
      const T = shapeOf(c, e, ids)[0];
      const host = e.host.get(ids);
      if (host) checkIndices(host.subarray(0, T), V, "embedding: id");
      // Each part gathers the ids that fall in its rows (a table over the binding limit is split by rows).
      for (const p of e.parts(table)) {
        if (gather) {
          const params = [T * D, D, p.row0, p.rows, scaleWord([V, D], p.rows, stored)];
          if (T) e.dispatch(gather, params, [p.ref, e.view(ids), e.view(node.id)], groupsFor(T * D));
          continue;
        }
        copyRows(e, p.ref, e.view(node.id), { rows: T, width: D, srcStride: D, dstStride: D }, {
          ref: e.view(ids),
          base: p.row0,
          bound: p.rows,
        });
      }
    };
  },
  gather_rows(c, node) {
    c.use(COPY_ROWS);
    const [x, rows] = node.inputs;
    const xs = maxShape(c.table[x].shape), width = numel(xs) / xs[0];
    return (e) => {
      const R = shapeOf(c, e, rows)[0], bound = shapeOf(c, e, x)[0];
      const host = e.host.get(rows);
      if (host) checkIndices(host.subarray(0, R), bound, "gather_rows: row");
      copyRows(e, e.view(x), e.view(node.id), { rows: R, width, srcStride: width, dstStride: width }, {
        ref: e.view(rows),
        base: 0,
        bound,
      });
    };
  },
  scatter_rows(c, node) {
    c.use(COPY_ROWS);
    const [x, rows, src] = node.inputs;
    const d = lastOf(maxShape(c.table[x].shape)), maxR = maxShape(c.table[rows].shape)[0];
    return (e) => {
      const T = shapeOf(c, e, x)[0], R = shapeOf(c, e, rows)[0];
      copyRows(e, e.view(x), e.view(node.id), { rows: 1, width: T * d, srcStride: 0, dstStride: 0 });
      const targets = lastWins(
        hostOf("webgpu", e.host, rows, "scatter_rows rows").subarray(0, R),
        T,
        "scatter_rows: row",
        false,
      );
      copyRows(e, e.view(src), e.view(node.id), { rows: R, width: d, srcStride: d, dstStride: d }, {
        ref: e.upload("rows", targets, 4 * maxR),
        base: 0,
        bound: 0,
        scatter: true,
      });
    };
  },
  write_rows(c, node) {
    c.use(COPY_ROWS);
    const [target, rows, src] = node.inputs;
    const ts = maxShape(c.table[target].shape), n = ts[0], d = numel(ts) / n;
    const maxR = maxShape(c.table[rows].shape)[0];
    return (e) => {
      const R = shapeOf(c, e, rows)[0];
      copyRows(e, e.view(src), e.view(node.id), { rows: 1, width: R * d, srcStride: 0, dstStride: 0 });
      const targets = lastWins(
        hostOf("webgpu", e.host, rows, "write_rows rows").subarray(0, R),
        n,
        "write_rows: row",
        true,
      );
      copyRows(e, e.view(src), e.view(target), { rows: R, width: d, srcStride: d, dstStride: d }, {
        ref: e.upload("rows", targets, 4 * maxR),
        base: 0,
        bound: 0,
        scatter: true,
      });
    };
  },
  slice(c, node) {
    c.use(COPY_ROWS);
    const [x] = node.inputs;
    const { start, end } = node.attrs as { start: number; end: number };
    const d = lastOf(maxShape(c.table[x].shape));
    return (e) => {
      const rows = numel(shapeOf(c, e, x)) / d;
      copyRows(e, e.view(x), e.view(node.id), {
        rows,
        width: end - start,
        srcStride: d,
        srcCol: start,
        dstStride: end - start,
      });
    };
  },
  concat(c, node) {
    c.use(COPY_ROWS);
    const widths = node.inputs.map((i) => lastOf(maxShape(c.table[i].shape)));
    const dOut = widths.reduce((a, b) => a + b, 0);
    return (e) => {
      const rows = numel(shapeOf(c, e, node.id)) / dOut;
      let col = 0;
      node.inputs.forEach((id, i) => {
        copyRows(e, e.view(id), e.view(node.id), {
          rows,
          width: widths[i],
          srcStride: widths[i],
          dstStride: dOut,
          dstCol: col,
        });
        col += widths[i];
      });
    };
  },
  reshape(c, node) {
    c.use(COPY_ROWS);
    const [x] = node.inputs;
    const bf16 = storedOf(c.table[x]) === "bf16";
    return (e) => {
      const n = bf16 ? Math.ceil(numel(shapeOf(c, e, x)) / 2) : numel(shapeOf(c, e, x));
      copyRows(e, e.view(x), e.view(node.id), { rows: 1, width: n, srcStride: n, dstStride: n });
    };
  },
  add: (c, node) => binary(c, node, ADD),
  mul: (c, node) => binary(c, node, MUL),
  swiglu(c, node) {
    c.use(SWIGLU);
    const [x] = node.inputs;
    const f = lastOf(maxShape(c.table[node.id].shape));
    return (e) => {
      const n = numel(shapeOf(c, e, node.id));
      if (n) e.dispatch(SWIGLU, [n, f], [e.view(x), e.view(node.id)], groupsFor(n));
    };
  },
  rms_norm(c, node) {
    const [x, w] = node.inputs;
    const kernel = rmsNormKernel(storedOf(c.table[w]));
    c.use(kernel);
    const d = lastOf(maxShape(c.table[x].shape)), eps = (node.attrs as { eps: number }).eps;
    return (e) => {
      const rows = numel(shapeOf(c, e, x)) / d;
      if (rows) e.dispatch(kernel, [rows, d, f32Bits(eps)], [e.view(x), e.view(w), e.view(node.id)], rows);
    };
  },
  matmul: compileMatmul,
  rope(c, node) {
    c.use(ROPE);
    const [x, pos] = node.inputs;
    const { invFreq, magnitude, pairAxis } = node.attrs as RopeAttrs;
    const xs = maxShape(c.table[x].shape), dr = lastOf(xs), half = dr / 2;
    const heads = numel(xs) / (xs[0] * dr), maxT = xs[0];
    const ps = maxShape(c.table[pos].shape), P = ps.length === 2 ? ps[1] : 1;
    const theta = invFreq.map(Math.fround);
    return (e) => {
      const T = shapeOf(c, e, x)[0];
      if (!T) return;
      const p = hostOf("webgpu", e.host, pos, "rope positions");
      // cos then sin, [T, half] each, exactly as the reference computes them (f64 trig of the f32 angle).
      const cs = new Float32Array(2 * T * half);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < half; i++) {
          const angle = Math.fround(theta[i] * p[t * P + (P === 1 ? 0 : pairAxis[i])]);
          cs[t * half + i] = Math.cos(angle) * magnitude;
          cs[T * half + t * half + i] = Math.sin(angle) * magnitude;
        }
      }
      const table = e.upload("cs", cs, 8 * maxT * half);
      const n = T * heads * half;
      e.dispatch(ROPE, [n, heads, half, T], [e.view(x), table, e.view(node.id)], groupsFor(n));
    };
  },
  attn_temperature(c, node) {
    c.use(ROW_SCALE);
    const [x, pos] = node.inputs;
    const { beta, original } = node.attrs as AttnTemperatureAttrs;
    const xs = maxShape(c.table[x].shape), width = numel(xs) / xs[0];
    return (e) => {
      const T = shapeOf(c, e, x)[0];
      if (!T) return;
      const p = hostOf("webgpu", e.host, pos, "attn_temperature positions");
      const scales = new Float32Array(T);
      for (let t = 0; t < T; t++) scales[t] = attnTemperatureScale(p[t], beta, original);
      const s = e.upload("scales", scales, 4 * xs[0]);
      e.dispatch(ROW_SCALE, [T * width, width], [e.view(x), s, e.view(node.id)], groupsFor(T * width));
    };
  },
  ...MOE_COMPILERS,
  sample(c, node) {
    c.use(SAMPLE);
    const [logits, , , , , , mask] = node.inputs;
    const V = maxShape(c.table[logits].shape)[1], W = maxShape(c.table[mask].shape)[1];
    return (e) => {
      const R = shapeOf(c, e, logits)[0], M = shapeOf(c, e, mask)[0];
      if (!R) return;
      const refs = [...node.inputs.map((id) => e.view(id)), e.view(node.id)];
      e.dispatch(SAMPLE, [R, V, W, M], refs, R);
    };
  },
  gelu(c, node) {
    c.use(GELU);
    const [x] = node.inputs;
    return (e) => {
      const n = numel(shapeOf(c, e, x));
      if (n) e.dispatch(GELU, [n], [e.view(x), e.view(node.id)], groupsFor(n));
    };
  },
  attention: (c, node) => attention(c, node, false),
  attention_rows: (c, node) => attention(c, node, true),
  patch_merge(c, node) {
    c.use(PATCH_MERGE);
    const [x, index] = node.inputs;
    const C = maxShape(c.table[x].shape)[1], K = maxShape(c.table[index].shape)[1];
    return (e) => {
      const P = shapeOf(c, e, x)[0], M = shapeOf(c, e, index)[0];
      const host = e.host.get(index);
      if (host) checkIndices(host.subarray(0, M * K), P, "patch_merge: row");
      const n = M * C * K;
      if (n) e.dispatch(PATCH_MERGE, [n, C, K, P], [e.view(x), e.view(index), e.view(node.id)], groupsFor(n));
    };
  },
  mla_cache_write(c, node) {
    const [ckv, kpe, cache, seq, pos, bt] = node.inputs;
    const kernel = mlaCacheWriteKernel(storedOf(c.table[cache]));
    c.use(kernel);
    const kvr = maxShape(c.table[ckv].shape)[1], dr = maxShape(c.table[kpe].shape)[1];
    const [nb, bs] = maxShape(c.table[cache].shape), mb = maxShape(c.table[bt].shape)[1];
    return (e) => {
      const T = shapeOf(c, e, ckv)[0], S = shapeOf(c, e, bt)[0];
      if (!T) return;
      checkHostCache(e.host, seq, pos, bt, T, { sequences: S, maxBlocks: mb, numBlocks: nb, blockSize: bs });
      const n = T * (kvr + dr);
      e.dispatch(kernel, [n, kvr, dr, nb, bs, S, mb], [
        e.view(ckv),
        e.view(kpe),
        e.view(cache),
        e.view(seq),
        e.view(pos),
        e.view(bt),
        e.view(node.id),
      ], groupsFor(n));
    };
  },
  mla_attention: compileMlaAttention,
};

/**
 * `attention` (each row against its own segment) or `attention_rows` (the queries of rows `rows` against keys of a
 * longer state): each query's key range, the contiguous run of its segment, is found on the host.
 */
function attention(c: CompileContext, node: Node, rows: boolean): Step {
  const [q, k, v, segment, rowIds] = node.inputs;
  const [maxQ, heads, d] = maxShape(c.table[q].shape), dv = maxShape(c.table[v].shape)[2];
  const kernel = attentionKernel({ heads, d, dv });
  c.use(kernel);
  const { scale } = node.attrs as { scale: number };
  return (e) => {
    const Q = shapeOf(c, e, q)[0];
    if (!Q) return;
    const seg = hostOf("webgpu", e.host, segment, `${node.op} segments`).subarray(0, shapeOf(c, e, segment)[0]);
    const picked = rows ? hostOf("webgpu", e.host, rowIds, "attention_rows rows").subarray(0, Q) : undefined;
    if (picked) checkIndices(picked, seg.length, "attention_rows: row");
    const r = e.upload("ranges", keyRanges(seg, Q, picked), 8 * maxQ);
    e.dispatch(kernel, [Q, f32Bits(scale)], [e.view(q), e.view(k), e.view(v), r, e.view(node.id)], Q * heads);
  };
}

function binary(c: CompileContext, node: Node, wgsl: string): Step {
  const [a, b] = node.inputs;
  c.use(wgsl);
  return (e) => {
    const n = numel(shapeOf(c, e, node.id));
    if (n) e.dispatch(wgsl, [n], [e.view(a), e.view(b), e.view(node.id)], groupsFor(n));
  };
}

/** A weight these kernels read whole: one part, or an error saying which weight is split. */
export function whole(e: Encoder, id: number, node: Node): Ref {
  const parts = e.parts(id);
  if (parts.length !== 1) {
    throw new Error(
      `webgpu: ${node.op} "${node.name}" reads its weight whole, but it is split in ${parts.length} parts (over the ` +
        `device's maxStorageBufferBindingSize): run this op on another backend (--backend webgpu,wasm)`,
    );
  }
  return parts[0].ref;
}
