/**
 * What the GPU backends (webgpu, cuda) share: how a tensor is laid out in device memory (activations f32, ids i32,
 * bf16/f16 packed, FP8/q8/NVFP4 codes then their f32 scales, q4 K-rows of codes then f16 scales — the kernels of both
 * read this one layout), and the host-side work of a step: parameter words, the reference's index checks on the host
 * copies of the step's inputs, and attention's key ranges.
 *
 * @module
 */

import { maxShape, numel, type TensorInfo } from "../../graph/ir.ts";
import type { Stored } from "../../kernels/wgsl/common.ts";
import type { HostInputs } from "../backend.ts";
import { checkCacheIndices } from "../step_plan.ts";

const F32 = new Float32Array(1), U32 = new Uint32Array(F32.buffer);

/** The bits of `x` as an f32 (a float parameter word). */
export function f32Bits(x: number): number {
  F32[0] = x;
  return U32[0];
}

/** The quantised weight dtypes: codes then scales. */
export const QUANTISED = new Set<Stored>(["f8e4m3", "q8", "nvfp4", "q4"]);

/**
 * How tensor `t` is stored on this device: bf16, f16, FP8, q8, NVFP4 and q4 as they are, f32 as f32 (ids are 32-bit
 * too).
 */
export function storedOf(t: Pick<TensorInfo, "dtype">): Stored {
  const d = t.dtype;
  return d === "bf16" || d === "f16" || d === "f8e4m3" || d === "q8" || d === "nvfp4" || d === "q4" ? d : "f32";
}

/** 32-bit words of one K-row of `k` values in q4: its codes (16 bytes a block of 32), then its f16 scales. */
export function q4RowWords(k: number): { codes: number; scales: number } {
  const blocks = Math.ceil(k / 32);
  return { codes: 4 * blocks, scales: Math.ceil(blocks / 2) };
}

/** Scales per K-row: FP8 one, q8 one per 32 values, NVFP4 one per 16. */
function scalesPerKRow(stored: Stored, k: number): number {
  return stored === "q8" ? k / 32 : stored === "nvfp4" ? k / 16 : 1;
}

/** Codes per 32-bit word of a quantised weight. */
function codesPerWord(stored: Stored): number {
  return stored === "nvfp4" ? 8 : 4;
}

/**
 * Bytes of a tensor of concrete `shape` stored as `stored`: 4 or 2 per value, or for a quantised weight its codes
 * (one byte each, NVFP4 half a byte, padded to a word) then its f32 scales; q4 its padded K-rows of codes then their
 * f16 scales ({@link q4RowWords}).
 */
export function storedBytes(shape: readonly number[], stored: Stored): number {
  const n = numel(shape);
  if (stored === "f32") return 4 * n;
  if (stored === "bf16" || stored === "f16") return 2 * n;
  const k = shape[shape.length - 1] ?? 1;
  if (stored === "q4") {
    const w = q4RowWords(k);
    return k ? 4 * (n / k) * (w.codes + w.scales) : 0;
  }
  return 4 * Math.ceil(n / codesPerWord(stored)) + 4 * (k ? n / k : 0) * scalesPerKRow(stored, k);
}

/**
 * The first scale word of `rows` leading rows of a weight of `shape` quantised as `stored` (its codes come first;
 * 0 for other dtypes, which have none).
 */
export function scaleWord(shape: readonly number[], rows: number, stored: Stored): number {
  if (!QUANTISED.has(stored)) return 0;
  if (stored === "q4") {
    const k = shape[shape.length - 1] ?? 1;
    return k ? (rows * numel(shape)) / (shape[0] || 1) / k * q4RowWords(k).codes : 0;
  }
  return Math.ceil((rows * numel(shape)) / (shape[0] || 1) / codesPerWord(stored));
}

/** Bytes of tensor `t` at its largest shape on this device. */
export function maxBytes(t: TensorInfo): number {
  return storedBytes(maxShape(t.shape), storedOf(t));
}

/**
 * The destination of each source row, −1 where a later source row goes to the same place (the reference writes in
 * order, so the last one stays) or where the index is negative and `skipNegative`; throws on an index outside
 * `0..bound − 1` as the reference does.
 */
export function lastWins(rows: Int32Array, bound: number, what: string, skipNegative: boolean): Int32Array {
  const out = new Int32Array(rows.length), seen = new Set<number>();
  for (let r = rows.length - 1; r >= 0; r--) {
    const i = rows[r];
    if (i < 0 && skipNegative) {
      out[r] = -1;
      continue;
    }
    if (!(i >= 0 && i < bound)) throw new RangeError(`${what} ${i} at ${r} outside 0..${bound - 1}`);
    out[r] = seen.has(i) ? -1 : i;
    seen.add(i);
  }
  return out;
}

/** The host copy of input `id` (positions, block tables, segments): every per-run graph input has one. */
export function hostOf(backend: string, host: HostInputs, id: number, what: string): Int32Array {
  const h = host.get(id);
  if (!h) throw new Error(`${backend}: ${what} have no host copy (they must be a per-run graph input)`);
  return h;
}

/** The reference's index checks, on the host copies when the inputs have them (they do in the model). */
export function checkHostCache(
  host: HostInputs,
  seq: number,
  pos: number,
  bt: number,
  T: number,
  o: { sequences: number; maxBlocks: number; numBlocks: number; blockSize: number },
): void {
  const s = host.get(seq), p = host.get(pos), b = host.get(bt);
  if (s && p && b) checkCacheIndices(s.subarray(0, T), p.subarray(0, T), b, o);
}

/**
 * Each query's key range for `attention`: the contiguous run of its segment in `seg` ([start, end) pairs, `Q` of
 * them); `picked` maps query i to its row of `seg` (`attention_rows`), else query i is row i.
 */
export function keyRanges(seg: Int32Array, Q: number, picked?: Int32Array): Int32Array {
  // Runs of equal segment ids: [start, end) for every position.
  const runStart = new Int32Array(seg.length), runEnd = new Int32Array(seg.length);
  for (let a = 0; a < seg.length;) {
    let b = a + 1;
    while (b < seg.length && seg[b] === seg[a]) b++;
    runStart.fill(a, a, b);
    runEnd.fill(b, a, b);
    a = b;
  }
  const ranges = new Int32Array(2 * Q);
  for (let i = 0; i < Q; i++) {
    const row = picked ? picked[i] : i;
    ranges[2 * i] = runStart[row];
    ranges[2 * i + 1] = runEnd[row];
  }
  return ranges;
}
