/**
 * What the `wasm` backend's op compilers share: the run state a compiled step reads, the compile context, the
 * tuning every run reads, and small helpers (shapes, matrix arguments, row copies). One compiler per op lives in
 * ops.ts (elementwise, norms, matmul, copies), mla.ts (latent cache and attention), moe.ts (routing and experts)
 * and vision_ops.ts (sampling and the vision ops).
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { maxShape, type Node, numel, resolveShape, type TensorInfo, type Vars } from "../../../graph/ir.ts";
import type { HostInputs } from "../../backend.ts";
import { DT, type WasmKernels } from "./module.ts";
import type { ThreadPool } from "./threads.ts";
import { nvfp4RowBytes, scalesOffset, weightScalesOffset } from "./layout.ts";

/**
 * What a step reads at run time: the byte address of every tensor by id, the symbols, the shared temp block, and
 * host copies of the run's integer inputs (positions, sequence indices, block tables, row indices).
 */
export type RunState = { ptr: Float64Array; vars: Vars; temp: number; host: HostInputs };

/** One compiled node. */
export type Step = (s: RunState) => void;

/**
 * Tuning of the compiled steps, read at every run (an object passed to `create({ tuning })` may be changed between
 * runs: `bench/variants.ts` alternates variants in one process):
 * - `pieces`: pieces per thread of the large jobs (matmul, attention, MoE) that the threads take as they finish
 *   (`ParallelOptions.chunks`); 0 or 1: one contiguous range per thread.
 * - `splitContext`: from this many positions on, decode attention items take every head over a part of the
 *   context (split decode) rather than a group of heads over all of it; tests set 0 or Infinity to force a path.
 * - `naivePrefill`: runs of at least this many consecutive tokens of one sequence take MLA's naive (expanded) form
 *   (kernels/wasm/attention_prefill.c), the rest the absorbed kernel; 1 or Infinity forces a path.
 * - `q8Prefill`: `int8` multiplies q8 matmuls of more than 8 rows in int8 where the host's relaxed dot product
 *   allows it (probed), `f32` dequantises the weights instead.
 * - `q8DecodeU8`: q8 decode products take the weight as the u8 operand where the host allows it.
 * - `nvfp4Prefill`: NVFP4 matmuls of more than 8 rows on int8 products (`int8`, exact on every host), on f32 panels
 *   with the reference's dequantised values (`f32`), or `auto`: int8 up to 64 rows or where q8 prefill is int8.
 * - `q4Activations`: `int8` quantises the activations of q4 matmuls per 32-block (every host: kernels/wasm/gemm_q4.c),
 *   `f32` multiplies them as they are (the reference's numbers up to f32 sums; slower).
 * - `spinMicros`, `joinSpinMicros`: the thread pool's spin times (threads.ts).
 */
export type WasmTuning = {
  pieces: number;
  splitContext: number;
  naivePrefill: number;
  q8Prefill: "int8" | "f32";
  q8DecodeU8: boolean;
  nvfp4Prefill: "auto" | "int8" | "f32";
  q4Activations: "int8" | "f32";
  spinMicros: number;
  joinSpinMicros: number;
};

/** The defaults of {@link WasmTuning}. */
export const DEFAULT_TUNING: Readonly<WasmTuning> = {
  pieces: 4,
  splitContext: 256,
  naivePrefill: 64,
  q8Prefill: "int8",
  q8DecodeU8: true,
  nvfp4Prefill: "auto",
  q4Activations: "int8",
  spinMicros: 20,
  joinSpinMicros: 20,
};

/** What compiling a node needs from the backend. */
export interface CompileContext {
  k: WasmKernels;
  pool: ThreadPool;
  /** The live tuning (read at run time, not at compile time). */
  tuning: WasmTuning;
  /** Tensor table of the segment's graph. */
  table: TensorInfo[];
  /** The dtype tensor `id` is stored as on this backend. */
  stored(id: number): DType;
  /** Memory kept as long as the backend (attribute tables). */
  persist(bytes: number): number;
  /** Declares that the step needs `bytes` of temporary memory at `RunState.temp` while it runs. */
  temp(bytes: number): void;
}

/** Compiles one node into a step. */
export type Compiler = (c: CompileContext, node: Node) => Step;

/** Fewest elements (or rows × width) worth a thread of their own: below this, waking workers costs more. */
export const MIN_ELEMS = 1 << 14;

/** Weight dtype codes of the kernels, by stored dtype. */
export const WDT: Partial<Record<DType, number>> = DT;

/** Bytes per element of the plain dtypes. */
export const ELEM_BYTES: Partial<Record<DType, number>> = { f32: 4, i32: 4, bf16: 2 };

/** `ParallelOptions.chunks` of a large job under the current tuning. */
export const pieces = (c: CompileContext) => c.tuning.pieces * c.pool.threads;

/** The concrete shape of tensor `id` in this run. */
export const shapeOf = (c: CompileContext, id: number, vars: Vars) => resolveShape(c.table[id].shape, vars);

/** The last element of a shape. */
export const lastOf = (s: readonly number[]) => s[s.length - 1];

/** Rows per thread worth waking it for, for rows of `width` elements. */
export const minRows = (width: number) => Math.max(1, Math.ceil(MIN_ELEMS / Math.max(1, width)));

/** Kernel arguments of a matrix input: dtype code, and where its scales start relative to its address (0: none). */
export function matrixArgs(c: CompileContext, id: number): { wdt: number; scales: number } {
  const dt = c.stored(id), t = c.table[id];
  const n = numel(maxShape(t.shape));
  const K = lastOf(maxShape(t.shape));
  // NVFP4: the global scales after the rows of codes and block scales (layout.ts).
  if (t.kind === "weight" && dt === "nvfp4") return { wdt: WDT[dt]!, scales: scalesOffset((n / K) * nvfp4RowBytes(K)) };
  const quantised = dt === "q8" || dt === "q4" || dt === "f8e4m3";
  const scales = t.kind === "weight" && quantised ? weightScalesOffset(maxShape(t.shape), dt) : 0;
  return { wdt: WDT[dt]!, scales };
}

/**
 * Decode products on activation rows quantised once by the calling thread (kernels/wasm/matmul.c `q8_quantize`,
 * gemm_q4.c `q4_quantize`, gemm_nvfp4.c `nvfp4_quantize`) rather than by every piece of the split: for q8, q4 and
 * NVFP4 weights (kernel dtype `wdt`) and inputs of width K, else undefined. `on(M)`: whether a run of M rows takes it
 * (M ≤ 8; q4 only with int8 activations). `quantize(x, out, M)` writes the M rows of x (K apart) at out, `rowBytes`
 * each.
 */
export function preQuantised(c: CompileContext, wdt: number, K: number): {
  rowBytes: number;
  matmul: "matmul_q8_act" | "matmul_q4_act" | "matmul_nvfp4_act";
  on(M: number): boolean;
  quantize(x: number, out: number, M: number): void;
} | undefined {
  const name = wdt === DT.q8 ? "q8" : wdt === DT.q4 ? "q4" : wdt === DT.nvfp4 ? "nvfp4" : undefined;
  if (name === undefined) return undefined;
  const ex = c.k.exports, quantize = ex[`${name}_quantize`];
  return {
    rowBytes: ex[`${name}_act_bytes`](K),
    matmul: `matmul_${name}_act`,
    on: (M) => M <= 8 && (name !== "q4" || c.tuning.q4Activations === "int8"),
    quantize: (x, out, M) => quantize(x, K, K, out, 0, M),
  };
}

/** The host copy of integer input `id` (`supportsNode` admits index inputs only when they are graph inputs). */
export function hostInts(s: RunState, id: number): Int32Array {
  const v = s.host.get(id);
  if (!v) throw new Error(`wasm: no host copy of input #${id} (index inputs must be per-run graph inputs)`);
  return v;
}

/** Copies `rows` rows of `bytes` bytes from `src` (stride `lds`, optional row index list) to `dst` (stride `ldd`). */
export function copyRows(
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

/** Start addresses of consecutive blocks of the given sizes from `base`. */
export function offsets(base: number, sizes: number[]): number[] {
  const out: number[] = [];
  for (const size of sizes) out.push(base), base += size;
  return out;
}
