/**
 * The `cuda` backend's op compilers: `compileNode` turns one node into a {@link Step}, a closure built once at
 * prepare that at each run reads the concrete shapes and the host copies of the integer inputs and records kernel
 * launches (kernel name, grid, block, dynamic shared memory, and its argument block: pointers then 32-bit words,
 * kernels/cuda/common.cuh `Args`) through an {@link Encoder}. The same design as the webgpu backend's ops.ts, and
 * the same storage layouts (which nodes run, and how weights are stored, come from there: `supportsNode`,
 * `storedBytes`, `scaleWord`), so one upload path and one set of bounds serve both.
 *
 * Grid and block per op and shape: elementwise and copies one thread per element (256 a block); rms_norm a block
 * of 256 per row; matmul `matvec_*` (one warp per output feature, 4 a block) for up to 8 rows with K a multiple
 * of the lane's group ({@link matvecGroup}), else `gemm_mma_*` on tensor cores where {@link mmaGemm} allows
 * (64 × 64 tiles, 128 threads) or `gemm_*` (64 × 64 tiles, 256 threads); MoE one warp per output
 * row under 4 tokens, else `moe_group` (one block of 1024) then grouped tiles of (⌈F / 64⌉ or ⌈D / 64⌉, E) blocks;
 * MLA `mla_absorb` then `mla_split` over (token · head, chunks of whole 256-position pieces: about
 * {@link MLA_TARGET_BLOCKS} blocks in all, at least one chunk) then `mla_merge`; attention a
 * block of 128 per (query, head); sample a block of 256 per row.
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
import { checkHostCache, f32Bits, hostOf, keyRanges, lastWins, scaleWord, storedOf } from "../gpu_layout.ts";

/** A device range: its address and size in bytes. */
export type Ref = { readonly ptr: bigint; readonly size: number };

/** One part of a weight: its range and the leading-dimension rows it holds. */
export type PartRef = { ref: Ref; row0: number; rows: number };

/** One kernel launch as a step records it. */
export type LaunchSpec = {
  kernel: string;
  grid: number | readonly [number, number];
  block: number;
  /** Dynamic shared memory bytes (0 when the kernel uses none). */
  shared?: number;
  /** Device addresses, in the kernel's pointer order (8 at most). */
  ptrs: readonly bigint[];
  /** 32-bit parameter words (16 at most; floats as their bits, see {@link f32Bits}). */
  words: readonly number[];
};

/** What a step records its work through, for one run. */
export interface Encoder {
  readonly vars: Vars;
  readonly host: HostInputs;
  /** Tensor `id` as one range (a split weight is an error naming it). */
  view(id: number): Ref;
  /** Weight `id` as its row-range parts (one part when it is not split). */
  parts(id: number): PartRef[];
  /** Device scratch of the step, `bytes` at most (reused by every run). */
  scratch(key: string, bytes: number): Ref;
  /** `data` copied to a buffer of the step, ordered before this run's launches (host-computed tables). */
  upload(key: string, data: Float32Array | Int32Array, maxBytes: number): Ref;
  /** Queues one launch. */
  launch(spec: LaunchSpec): void;
}

/** One compiled node. */
export type Step = (e: Encoder) => void;

/** What compiling a node may look at. */
export type CompileContext = { table: TensorInfo[] };

/** Threads per block of the one-thread-per-element kernels. */
export const BLOCK = 256;
/** Context positions per `mla_split` block (kernels/cuda/mla.cu `MLA_CHUNK`). */
export const MLA_CHUNK = 256;
/** (token · head · chunk) blocks `mla_split` aims for: about 30 per SM of an H100 or H200. */
export const MLA_TARGET_BLOCKS = 4096;
/** Most latent width `mla_split` holds per thread (128 threads × 8, kernels/cuda/mla.cu `MLA_ACC`). */
export const MLA_MAX_KVR = 1024;

let spanOverride: number | null | undefined;
/**
 * `TRAMONTANE_CUDA_MLA_SPAN` (a multiple of 256 positions), for tests that force several chunks of several pieces
 * each: the `MLA_CHUNK`-pieces per chunk, or null when unset.
 */
function mlaSpanOverride(): number | null {
  if (spanOverride === undefined) {
    let v: string | undefined;
    try {
      v = Deno.env.get("TRAMONTANE_CUDA_MLA_SPAN");
    } catch {
      v = undefined;
    }
    const n = Number(v);
    spanOverride = v && Number.isInteger(n) && n > 0 && n % MLA_CHUNK === 0 ? n / MLA_CHUNK : null;
  }
  return spanOverride;
}

/** Output features per `matvec_*` block (4 warps), and the most rows it takes (kernels/cuda/matmul.cu). */
export const MATVEC_ROWS = 4;
export const MATVEC_MAX_M = 8;
/**
 * Elements a `matvec_*` lane reads per step (16 bytes of codes; q4 4 values): K must be a multiple of it, or the
 * GEMM runs instead (kernels/cuda/common.cuh `V`).
 */
export function matvecGroup(dtype: string): number {
  return ({ f32: 4, bf16: 8, f16: 8, f8e4m3: 16, q8: 16, nvfp4: 32 } as Record<string, number>)[dtype] ?? 4;
}

/**
 * Whether a prefill matmul of weight dtype `dtype` and K-row length `K` runs on tensor cores (`gemm_mma_*`,
 * kernels/cuda/matmul_mma.cu: bf16 mma, activations split into three bf16 terms): the dtypes whose codes are exact
 * in bf16, with q8's 32- and NVFP4's 16-blocks whole inside each K-row. Every device the backend opens has compute
 * capability ≥ 8.0 (device.ts), which mma.sync bf16 needs. f32 and f16 weights, and other K, take the SIMT `gemm_*`.
 */
export function mmaGemm(dtype: string, K: number): boolean {
  const block = ({ bf16: 1, f8e4m3: 1, q4: 1, q8: 32, nvfp4: 16 } as Record<string, number>)[dtype];
  return block !== undefined && K % block === 0;
}

/** `gemm_*` output tile (and the grouped MoE kernels'). */
export const GEMM_TILE = 64;
/** Tokens from which a step's routed experts group their tokens per expert (fewer: one warp per output row). */
export const MOE_GROUP_MIN_TOKENS = 4;

const blocksFor = (n: number) => Math.ceil(n / BLOCK);

/** The kernel-name suffix of a stored weight dtype (`matvec_f8e4m3`). */
export function dtypeSuffix(t: Pick<TensorInfo, "dtype">): string {
  return storedOf(t);
}

/** Compiles `node` (which the webgpu `supportsNode` accepts) into a step. */
export function compileNode(c: CompileContext, node: Node): Step {
  const compile = COMPILERS[node.op];
  if (!compile) throw new Error(`cuda: no kernel for ${node.op}`);
  return compile(c, node);
}

type Compiler = (c: CompileContext, node: Node) => Step;

const shapeOf = (c: CompileContext, e: Encoder, id: number) => resolveShape(c.table[id].shape, e.vars);
const lastOf = (s: readonly number[]) => s[s.length - 1];

/** The codes and scales addresses of a weight part whose own shape is `shape` (`rows` leading rows). */
export function weightPtrs(ref: Ref, shape: readonly number[], t: Pick<TensorInfo, "dtype">): [bigint, bigint] {
  return [ref.ptr, ref.ptr + 4n * BigInt(scaleWord(shape, shape[0] ?? 1, storedOf(t)))];
}

/** A row copy of 32-bit words through `copy_rows`, with an optional index. */
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
  const words = [n, o.width, o.srcStride, o.srcCol ?? 0, o.dstStride, o.dstCol ?? 0, mode, index?.base ?? 0];
  words.push(index?.bound ?? 0);
  e.launch({
    kernel: "copy_rows",
    grid: blocksFor(n),
    block: BLOCK,
    ptrs: [src.ptr, index?.ref.ptr ?? 0n, dst.ptr],
    words,
  });
}

/** A one-thread-per-element launch of `kernel` over `n` elements. */
function elementwise(e: Encoder, kernel: string, n: number, ptrs: bigint[], words: number[]): void {
  if (n) e.launch({ kernel, grid: blocksFor(n), block: BLOCK, ptrs, words: [n, ...words] });
}

const COMPILERS: Record<string, Compiler> = {
  embedding(c, node) {
    const [ids, table] = node.inputs;
    const [V, D] = maxShape(c.table[table].shape);
    const kernel = `gather_${dtypeSuffix(c.table[table])}`;
    return (e) => {
      const T = shapeOf(c, e, ids)[0];
      const host = e.host.get(ids);
      if (host) checkIndices(host.subarray(0, T), V, "embedding: id");
      // Each part gathers the ids that fall in its rows.
      for (const p of e.parts(table)) {
        const [codes, scales] = weightPtrs(p.ref, [p.rows, D], c.table[table]);
        elementwise(e, kernel, T * D, [codes, scales, e.view(ids).ptr, e.view(node.id).ptr], [D, p.row0, p.rows]);
      }
    };
  },
  gather_rows(c, node) {
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
    const [x, rows, src] = node.inputs;
    const d = lastOf(maxShape(c.table[x].shape)), maxR = maxShape(c.table[rows].shape)[0];
    return (e) => {
      const T = shapeOf(c, e, x)[0], R = shapeOf(c, e, rows)[0];
      copyRows(e, e.view(x), e.view(node.id), { rows: 1, width: T * d, srcStride: 0, dstStride: 0 });
      const targets = lastWins(
        hostOf("cuda", e.host, rows, "scatter_rows rows").subarray(0, R),
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
    const [target, rows, src] = node.inputs;
    const ts = maxShape(c.table[target].shape), n = ts[0], d = numel(ts) / n;
    const maxR = maxShape(c.table[rows].shape)[0];
    return (e) => {
      const R = shapeOf(c, e, rows)[0];
      copyRows(e, e.view(src), e.view(node.id), { rows: 1, width: R * d, srcStride: 0, dstStride: 0 });
      const targets = lastWins(
        hostOf("cuda", e.host, rows, "write_rows rows").subarray(0, R),
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
    const [x] = node.inputs;
    const bf16 = storedOf(c.table[x]) === "bf16";
    return (e) => {
      const n = bf16 ? Math.ceil(numel(shapeOf(c, e, x)) / 2) : numel(shapeOf(c, e, x));
      copyRows(e, e.view(x), e.view(node.id), { rows: 1, width: n, srcStride: n, dstStride: n });
    };
  },
  add: (c, node) => binary(c, node, "add"),
  mul: (c, node) => binary(c, node, "mul"),
  swiglu(c, node) {
    const [x] = node.inputs;
    const f = lastOf(maxShape(c.table[node.id].shape));
    return (e) => elementwise(e, "swiglu", numel(shapeOf(c, e, node.id)), [e.view(x).ptr, e.view(node.id).ptr], [f]);
  },
  rms_norm(c, node) {
    const [x, w] = node.inputs;
    const kernel = `rms_norm_${dtypeSuffix(c.table[w])}`;
    const d = lastOf(maxShape(c.table[x].shape)), eps = (node.attrs as { eps: number }).eps;
    return (e) => {
      const rows = numel(shapeOf(c, e, x)) / d;
      if (!rows) return;
      e.launch({
        kernel,
        grid: rows,
        block: BLOCK,
        ptrs: [e.view(x).ptr, e.view(w).ptr, e.view(node.id).ptr],
        words: [rows, d, f32Bits(eps)],
      });
    };
  },
  matmul(c, node) {
    const [x, w] = node.inputs;
    const dt = dtypeSuffix(c.table[w]);
    const [N, K] = maxShape(c.table[w].shape);
    return (e) => {
      const M = numel(shapeOf(c, e, x)) / K;
      if (!M) return;
      for (const p of e.parts(w)) {
        const [codes, scales] = weightPtrs(p.ref, [p.rows, K], c.table[w]);
        const ptrs = [e.view(x).ptr, codes, scales, e.view(node.id).ptr], words = [M, p.rows, K, N, p.row0];
        if (M <= MATVEC_MAX_M && K % matvecGroup(dt) === 0) {
          e.launch({
            kernel: `matvec_${dt}`,
            grid: Math.ceil(p.rows / MATVEC_ROWS),
            block: 32 * MATVEC_ROWS,
            ptrs,
            words,
          });
        } else if (mmaGemm(dt, K)) {
          const grid = [Math.ceil(p.rows / GEMM_TILE), Math.ceil(M / GEMM_TILE)] as const;
          e.launch({ kernel: `gemm_mma_${dt}`, grid, block: 128, ptrs, words });
        } else {
          const grid = [Math.ceil(p.rows / GEMM_TILE), Math.ceil(M / GEMM_TILE)] as const;
          e.launch({ kernel: `gemm_${dt}`, grid, block: 256, ptrs, words });
        }
      }
    };
  },
  rope(c, node) {
    const [x, pos] = node.inputs;
    const { invFreq, magnitude, pairAxis } = node.attrs as RopeAttrs;
    const xs = maxShape(c.table[x].shape), dr = lastOf(xs), half = dr / 2;
    const heads = numel(xs) / (xs[0] * dr), maxT = xs[0];
    const ps = maxShape(c.table[pos].shape), P = ps.length === 2 ? ps[1] : 1;
    const theta = invFreq.map(Math.fround);
    return (e) => {
      const T = shapeOf(c, e, x)[0];
      if (!T) return;
      const p = hostOf("cuda", e.host, pos, "rope positions");
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
      elementwise(e, "rope", T * heads * half, [e.view(x).ptr, table.ptr, e.view(node.id).ptr], [heads, half, T]);
    };
  },
  attn_temperature(c, node) {
    const [x, pos] = node.inputs;
    const { beta, original } = node.attrs as AttnTemperatureAttrs;
    const xs = maxShape(c.table[x].shape), width = numel(xs) / xs[0];
    return (e) => {
      const T = shapeOf(c, e, x)[0];
      if (!T) return;
      const p = hostOf("cuda", e.host, pos, "attn_temperature positions");
      const scales = new Float32Array(T);
      for (let t = 0; t < T; t++) scales[t] = attnTemperatureScale(p[t], beta, original);
      const s = e.upload("scales", scales, 4 * xs[0]);
      elementwise(e, "row_scale", T * width, [e.view(x).ptr, s.ptr, e.view(node.id).ptr], [width]);
    };
  },
  moe_topk(c, node) {
    const [logits] = node.inputs;
    const E = maxShape(c.table[logits].shape)[1], K = (node.attrs as { topK: number }).topK;
    return (e) => {
      const T = shapeOf(c, e, logits)[0];
      elementwise(e, "moe_topk", T, [e.view(logits).ptr, e.view(node.id).ptr], [E, K]);
    };
  },
  moe_gate(c, node) {
    const [logits, ids] = node.inputs;
    const E = maxShape(c.table[logits].shape)[1], K = maxShape(c.table[ids].shape)[1];
    return (e) => {
      const T = shapeOf(c, e, logits)[0];
      elementwise(e, "moe_gate", T, [e.view(logits).ptr, e.view(ids).ptr, e.view(node.id).ptr], [E, K]);
    };
  },
  moe_experts(c, node) {
    const [x, ids, weights, gateUp, down] = node.inputs;
    const gdt = dtypeSuffix(c.table[gateUp]), ddt = dtypeSuffix(c.table[down]);
    const [maxT, D] = maxShape(c.table[x].shape), K = maxShape(c.table[ids].shape)[1];
    const [E, F2] = maxShape(c.table[gateUp].shape), F = F2 / 2;
    const warps = 4;
    return (e) => {
      const T = shapeOf(c, e, x)[0];
      if (!T) return;
      const a = e.scratch("act", 4 * maxT * K * F), y = e.scratch("y", 4 * maxT * K * D);
      const [gu, gus] = weightPtrs(whole(e, gateUp, node), [E, F2, D], c.table[gateUp]);
      const [dw, dws] = weightPtrs(whole(e, down, node), [E, D, F], c.table[down]);
      const pairs = T * K, idp = e.view(ids).ptr;
      if (T >= MOE_GROUP_MIN_TOKENS) {
        // Tokens grouped per expert on the device, then one tiled product per expert (kernels/cuda/moe.cu).
        const offsets = e.scratch("offsets", 4 * (E + 2)), order = e.scratch("order", 4 * maxT * K);
        e.launch({
          kernel: "moe_group",
          grid: 1,
          block: 1024,
          shared: 8 * (E + 2),
          ptrs: [idp, offsets.ptr, order.ptr],
          words: [pairs, E],
        });
        const words = [pairs, K, F, D, E], xp = e.view(x).ptr;
        e.launch({
          kernel: `moe_act_grouped_${gdt}`,
          grid: [Math.ceil(F / GEMM_TILE), E],
          block: 256,
          ptrs: [xp, offsets.ptr, order.ptr, gu, gus, a.ptr],
          words,
        });
        e.launch({
          kernel: `moe_down_grouped_${ddt}`,
          grid: [Math.ceil(D / GEMM_TILE), E],
          block: 256,
          ptrs: [a.ptr, offsets.ptr, order.ptr, dw, dws, y.ptr],
          words,
        });
      } else {
        const words = (n: number) => [n, K, F, D, E];
        e.launch({
          kernel: `moe_act_${gdt}`,
          grid: Math.ceil((pairs * F) / warps),
          block: 32 * warps,
          ptrs: [e.view(x).ptr, idp, gu, gus, a.ptr],
          words: words(pairs * F),
        });
        e.launch({
          kernel: `moe_down_${ddt}`,
          grid: Math.ceil((pairs * D) / warps),
          block: 32 * warps,
          ptrs: [a.ptr, idp, dw, dws, y.ptr],
          words: words(pairs * D),
        });
      }
      elementwise(e, "moe_mix", T * D, [y.ptr, e.view(weights).ptr, e.view(node.id).ptr, idp], [K, F, D, E]);
    };
  },
  sample(c, node) {
    const [logits, , , , , , mask] = node.inputs;
    const V = maxShape(c.table[logits].shape)[1], W = maxShape(c.table[mask].shape)[1];
    return (e) => {
      const R = shapeOf(c, e, logits)[0], M = shapeOf(c, e, mask)[0];
      if (!R) return;
      const ptrs = [...node.inputs.map((id) => e.view(id).ptr), e.view(node.id).ptr];
      e.launch({ kernel: "sample", grid: R, block: 256, ptrs, words: [R, V, W, M] });
    };
  },
  gelu(c, node) {
    const [x] = node.inputs;
    return (e) => elementwise(e, "gelu", numel(shapeOf(c, e, x)), [e.view(x).ptr, e.view(node.id).ptr], []);
  },
  attention: (c, node) => attention(c, node, false),
  attention_rows: (c, node) => attention(c, node, true),
  patch_merge(c, node) {
    const [x, index] = node.inputs;
    const C = maxShape(c.table[x].shape)[1], K = maxShape(c.table[index].shape)[1];
    return (e) => {
      const P = shapeOf(c, e, x)[0], M = shapeOf(c, e, index)[0];
      const host = e.host.get(index);
      if (host) checkIndices(host.subarray(0, M * K), P, "patch_merge: row");
      elementwise(e, "patch_merge", M * C * K, [e.view(x).ptr, e.view(index).ptr, e.view(node.id).ptr], [C, K, P]);
    };
  },
  mla_cache_write(c, node) {
    const [ckv, kpe, cache, seq, pos, bt] = node.inputs;
    const kernel = `mla_cache_write_${storedOf(c.table[cache]) === "bf16" ? "bf16" : "f32"}`;
    const kvr = maxShape(c.table[ckv].shape)[1], dr = maxShape(c.table[kpe].shape)[1];
    const [nb, bs] = maxShape(c.table[cache].shape), mb = maxShape(c.table[bt].shape)[1];
    const round = c.table[cache].dtype === "bf16" ? 1 : 0;
    return (e) => {
      const T = shapeOf(c, e, ckv)[0], S = shapeOf(c, e, bt)[0];
      if (!T) return;
      checkHostCache(e.host, seq, pos, bt, T, { sequences: S, maxBlocks: mb, numBlocks: nb, blockSize: bs });
      const ptrs = [ckv, kpe, cache, seq, pos, bt, node.id].map((id) => e.view(id).ptr);
      elementwise(e, kernel, T * (kvr + dr), ptrs, [kvr, dr, nb, bs, S, mb, round]);
    };
  },
  mla_attention(c, node) {
    const [q, wkvb, cache, seq, pos, bt] = node.inputs;
    const a = node.attrs as MlaAttentionAttrs;
    const [nb] = maxShape(c.table[cache].shape), maxBlocks = maxShape(c.table[bt].shape)[1];
    const maxT = maxShape(c.table[q].shape)[0], ws = maxShape(c.table[wkvb].shape);
    const wdt = dtypeSuffix(c.table[wkvb]), cdt = storedOf(c.table[cache]) === "bf16" ? "bf16" : "f32";
    const row = a.kvr + a.dr;
    return (e) => {
      const T = shapeOf(c, e, q)[0], S = shapeOf(c, e, bt)[0];
      if (!T) return;
      checkHostCache(e.host, seq, pos, bt, T, { sequences: S, maxBlocks, numBlocks: nb, blockSize: a.blockSize });
      // The context of the step's longest sequence (positions are on the host) in chunks of `span` positions:
      // enough chunks that (token, head, chunk) blocks fill the device (decode), one when tokens and heads do
      // (prefill), so the chunks' scratch stays small.
      const hp = e.host.get(pos);
      let longest = maxBlocks * a.blockSize;
      if (hp) {
        let last = 1;
        for (const p of hp.subarray(0, T)) last = Math.max(last, p + 1);
        longest = Math.min(longest, last);
      }
      const g = T * a.heads, pieces = Math.ceil(longest / MLA_CHUNK);
      const perChunk = mlaSpanOverride() ?? Math.ceil(pieces / Math.min(pieces, Math.ceil(MLA_TARGET_BLOCKS / g)));
      const span = MLA_CHUNK * perChunk, chunks = Math.ceil(pieces / perChunk);
      const [w, wsc] = weightPtrs(whole(e, wkvb, node), ws, c.table[wkvb]);
      const qa = e.scratch("qa", 4 * maxT * a.heads * a.kvr);
      const ml = e.scratch("ml", 8 * g * chunks);
      const acc = e.scratch("acc", 4 * g * chunks * a.kvr);
      const qp = e.view(q).ptr;
      e.launch({
        kernel: `mla_absorb_${wdt}`,
        grid: g,
        block: 256,
        shared: 4 * a.dn,
        ptrs: [qp, w, wsc, qa.ptr],
        words: [T, a.heads, a.dn, a.dr, a.dv, a.kvr],
      });
      e.launch({
        kernel: `mla_split_${cdt}`,
        grid: [g, chunks],
        block: 128,
        shared: 4 * (2 * Math.ceil((row + MLA_CHUNK) / 2)) + 8 * MLA_CHUNK,
        ptrs: [qa.ptr, qp, ...[cache, seq, pos, bt].map((id) => e.view(id).ptr), ml.ptr, acc.ptr],
        words: [T, S, nb, f32Bits(a.scale), a.heads, a.dn, a.dr, a.kvr, a.blockSize, maxBlocks, chunks, span],
      });
      e.launch({
        kernel: `mla_merge_${wdt}`,
        grid: g,
        block: 256,
        shared: 4 * a.kvr,
        ptrs: [ml.ptr, acc.ptr, w, wsc, e.view(node.id).ptr],
        words: [T, a.heads, a.dn, a.dv, a.kvr, chunks],
      });
    };
  },
};

/** Most value columns the attention kernel holds per thread: 128 threads × 8 (kernels/cuda/attention.cu). */
export const ATTENTION_MAX_DV = 1024;

/**
 * `attention` (each row against its own segment) or `attention_rows` (the queries of rows `rows` against keys of a
 * longer state): each query's key range, the contiguous run of its segment, is found on the host.
 */
function attention(c: CompileContext, node: Node, rows: boolean): Step {
  const [q, , v, segment, rowIds] = node.inputs;
  const [maxQ, heads, d] = maxShape(c.table[q].shape), dv = maxShape(c.table[v].shape)[2];
  if (dv > ATTENTION_MAX_DV) {
    throw new Error(`cuda: ${node.op} "${node.name}": value width ${dv} > ${ATTENTION_MAX_DV}`);
  }
  const { scale } = node.attrs as { scale: number };
  return (e) => {
    const Q = shapeOf(c, e, q)[0];
    if (!Q) return;
    const seg = hostOf("cuda", e.host, segment, `${node.op} segments`).subarray(0, shapeOf(c, e, segment)[0]);
    const picked = rows ? hostOf("cuda", e.host, rowIds, "attention_rows rows").subarray(0, Q) : undefined;
    if (picked) checkIndices(picked, seg.length, "attention_rows: row");
    const r = e.upload("ranges", keyRanges(seg, Q, picked), 8 * maxQ);
    const [qi, ki, vi] = node.inputs;
    e.launch({
      kernel: "attention",
      grid: Q * heads,
      block: 128,
      shared: 4 * (d + 128),
      ptrs: [e.view(qi).ptr, e.view(ki).ptr, e.view(vi).ptr, r.ptr, e.view(node.id).ptr],
      words: [Q, f32Bits(scale), heads, d, dv],
    });
  };
}

function binary(c: CompileContext, node: Node, kernel: string): Step {
  const [a, b] = node.inputs;
  return (e) => elementwise(e, kernel, numel(shapeOf(c, e, node.id)), [a, b, node.id].map((id) => e.view(id).ptr), []);
}

/** A weight these kernels read whole: one part, or an error saying which weight is split. */
function whole(e: Encoder, id: number, node: Node): Ref {
  const parts = e.parts(id);
  if (parts.length !== 1) {
    throw new Error(`cuda: ${node.op} "${node.name}" reads its weight whole, but it is split in ${parts.length} parts`);
  }
  return parts[0].ref;
}
