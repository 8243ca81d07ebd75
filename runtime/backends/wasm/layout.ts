/**
 * The `wasm` backend's weight layout, and the encoder `uploadWeight` writes chunks through. For a weight of shape
 * `[..., K]` with `rows = numel / K` K-rows:
 * - f32, bf16, i32: the elements, little-endian, as is.
 * - q8: int8 values `[rows, K]`, zero bytes up to a multiple of 4, then f32 scales `[rows, ceil(K/32)]`.
 * - q4: codes `[rows, ceil(K/32), 16]` (split nibbles, the chunks' own layout: weights/codecs.ts `quantizeQ4`), then
 *   f16 scales `[rows, ceil(K/32)]` (the chunks' f32 scales are f16 values, so the narrowing is exact).
 * - f8e4m3: E4M3 codes `[rows, K]`, zero bytes up to a multiple of 4, then one f32 scale per K-row `[rows]` (the
 *   checkpoint's per-tensor or block scales expanded, as chunks carry them), so `W[r, :] = f8 · scale[r]`.
 * Quantised weights carry their scales in their buffer: a graph that declares only the weight still carries FP8
 * block scales to the kernels. Chunks are row-local, so each lands at its rows' offsets with nothing else held.
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { numel } from "../../../graph/ir.ts";
import { chunkScaleCount, chunkToF32, codeBytes, scratchF32 } from "../../../weights/chunks.ts";
import { f32ToF16 } from "../../../weights/codecs.ts";
import type { WeightChunk } from "../../../weights/source.ts";
import { Q4_BLOCK, q4RowBytes, Q8_BLOCK } from "./module.ts";

/** Byte offset of the scales after `n` one-byte values: 4-aligned so the kernels read them as f32. */
export function scalesOffset(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** Byte offset of a weight's scales in the wasm layout (q4: after its padded codes; else {@link scalesOffset}). */
export function weightScalesOffset(shape: readonly number[], dtype: DType): number {
  const n = numel(shape), K = shape[shape.length - 1] ?? 1;
  return dtype === "q4" ? (K === 0 ? 0 : (n / K) * q4RowBytes(K)) : scalesOffset(n);
}

/** Bytes a weight of concrete `shape` stored as `dtype` takes in the wasm layout. */
export function wasmWeightBytes(shape: readonly number[], dtype: DType): number {
  const n = numel(shape), K = shape[shape.length - 1] ?? 1, rows = K === 0 ? 0 : n / K;
  if (dtype === "q8") return scalesOffset(n) + rows * Math.ceil(K / Q8_BLOCK) * 4;
  if (dtype === "q4") return weightScalesOffset(shape, dtype) + scalesOffset(rows * Math.ceil(K / Q4_BLOCK) * 2);
  if (dtype === "f8e4m3") return scalesOffset(n) + rows * 4;
  if (dtype === "bf16") return 2 * n;
  if (dtype === "f32" || dtype === "i32") return 4 * n;
  throw new RangeError(`wasm: weights cannot be stored as ${dtype}`);
}

/**
 * Writes `chunk` (rows `row`… of a weight of `shape` stored as `storage`, whose layout starts at `bytes`, a view of
 * the weight's whole buffer) in the wasm layout. A chunk whose dtype `storage` promotes (f16, nvfp4 → f32) is
 * decoded first.
 */
export function encodeChunk(
  bytes: Uint8Array,
  shape: readonly number[],
  storage: DType,
  chunk: WeightChunk,
  row: number,
): void {
  const per = numel(shape.slice(1)), K = shape[shape.length - 1] ?? 1, n = numel(shape);
  const first = row * per, count = chunk.rows * per;
  if (storage !== chunk.dtype) {
    if (storage !== "f32") throw new RangeError(`wasm: a ${chunk.dtype} chunk cannot be stored as ${storage}`);
    const values = chunkToF32(chunk, scratchF32(count, 3));
    bytes.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), 4 * first);
    return;
  }
  const dataBytes = codeBytes(storage, count, K);
  if (chunk.data.byteLength !== dataBytes) {
    throw new RangeError(`wasm: chunk of ${chunk.rows} rows has ${chunk.data.byteLength} B, not ${dataBytes}`);
  }
  bytes.set(chunk.data, codeBytes(storage, first, K));
  const perK = chunkScaleCount(storage, K, K);
  if (perK === 0) return;
  const scales = chunk.scales!, at = (first / K) * perK;
  if (scales.length !== (count / K) * perK) {
    throw new RangeError(`wasm: ${storage} chunk needs ${(count / K) * perK} scales, has ${scales.length}`);
  }
  if (storage === "q4") {
    const out = new Uint16Array(bytes.buffer, bytes.byteOffset + weightScalesOffset(shape, storage), (n / K) * perK);
    f32ToF16(scales, out.subarray(at, at + scales.length));
    return;
  }
  const out = new Float32Array(bytes.buffer, bytes.byteOffset + scalesOffset(n), (n / K) * perK);
  out.set(scales, at);
}
