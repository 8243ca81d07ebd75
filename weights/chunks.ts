/**
 * Working with {@link WeightChunk}s: how many bytes rows of a weight take in a dtype, the row ranges a consumer
 * should read so no chunk outgrows a bound, and decoding a chunk to f32 with its row-local scales (for backends
 * that promote weights to f32, and for tests).
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import {
  bytesToF32,
  dequantizeFp8,
  dequantizeNvfp4Folded,
  dequantizeQ4,
  dequantizeQ8,
  FLOAT_BYTES,
  type FloatDType,
  NVFP4_BLOCK,
  Q4_BLOCK,
  q4RowBytes,
  Q8_BLOCK,
} from "./codecs.ts";
import { leadingRows, rowElements, type WeightChunk, type WeightSource } from "./source.ts";

/** Default bound of {@link chunkRows}: 16 MiB. */
export const DEFAULT_CHUNK_BYTES = 16 * 2 ** 20;

/** The last dimension of `shape` (the K of a K-row; a scalar's is 1). */
export function kDim(shape: readonly number[]): number {
  return shape.length === 0 ? 1 : shape[shape.length - 1];
}

/**
 * Row-local scales a chunk of `elements` elements of a weight with last dimension `k` carries in `dtype`: f8e4m3
 * one per K-row, q8 and q4 one per 32 values per K-row, nvfp4 one per 16; float dtypes none.
 *
 * @example
 * ```ts
 * chunkScaleCount("q8", 2 * 64, 64); // 4
 * ```
 */
export function chunkScaleCount(dtype: DType, elements: number, k: number): number {
  if (dtype === "f8e4m3") return elements / k;
  if (dtype === "q8") return (elements / k) * Math.ceil(k / Q8_BLOCK);
  if (dtype === "q4") return (elements / k) * Math.ceil(k / Q4_BLOCK);
  if (dtype === "nvfp4") return elements / NVFP4_BLOCK;
  return 0;
}

/**
 * Bytes of the codes of `elements` elements of `dtype` (NVFP4: two per byte; i32 ids 4). q4 pads each K-row to whole
 * blocks of 32, so it needs the weight's last dimension `k`.
 */
export function codeBytes(dtype: DType, elements: number, k?: number): number {
  if (dtype === "nvfp4") return elements / 2;
  if (dtype === "q4") {
    if (k === undefined) throw new RangeError("weight chunks: q4 code bytes depend on K; pass the last dimension");
    return k === 0 ? 0 : (elements / k) * q4RowBytes(k);
  }
  if (dtype === "q8" || dtype === "u8") return elements;
  if (dtype === "i32") return 4 * elements;
  const b = FLOAT_BYTES[dtype as FloatDType];
  if (b === undefined) throw new RangeError(`weight chunks: ${dtype} is not a weight dtype`);
  return elements * b;
}

/**
 * Bytes (codes plus f32 row-local scales) of `rows` leading rows of a weight of `shape` in `dtype`.
 *
 * @example
 * ```ts
 * chunkBytes([8, 64, 64], "f8e4m3", 2); // 2·64·64 codes + 2·64 scales · 4 = 8704
 * ```
 */
export function chunkBytes(shape: readonly number[], dtype: DType, rows: number): number {
  const n = rows * rowElements(shape);
  return codeBytes(dtype, n, kDim(shape)) + 4 * chunkScaleCount(dtype, n, kDim(shape));
}

/** One read a consumer makes: leading rows `[row0, row0 + rows)`. */
export interface RowRange {
  /** First leading-dimension row. */
  row0: number;
  /** Rows to read. */
  rows: number;
}

/**
 * The row ranges to read `source` in, each at most `maxBytes` in the source's dtype ({@link chunkBytes}) — or one
 * leading row where a single row is larger (a chunk never splits a leading row: an expert of `[E, 2F, D]` is the
 * least a read gives). A 1-D tensor (a norm) comes as one chunk, since its only K-row is the whole tensor.
 *
 * @example
 * ```ts ignore
 * for (const { row0, rows } of chunkRows(source)) await backend.upload(await source.read(row0, rows));
 * ```
 */
export function chunkRows(
  source: Pick<WeightSource, "shape" | "dtype">,
  maxBytes: number = DEFAULT_CHUNK_BYTES,
): RowRange[] {
  const n = leadingRows(source.shape);
  if (source.shape.length <= 1) return [{ row0: 0, rows: n }];
  const per = Math.max(1, Math.floor(maxBytes / chunkBytes(source.shape, source.dtype, 1)));
  const out: RowRange[] = [];
  for (let row0 = 0; row0 < n; row0 += per) out.push({ row0, rows: Math.min(per, n - row0) });
  return out;
}

/**
 * A reusable f32 buffer of at least `n` elements (`slot` keeps independent users apart), for temporaries that
 * never outlive a synchronous stretch of code: chunk after chunk of a load then makes no garbage of them, which
 * V8 would collect late (it sees a small JS heap) and the process's peak RSS would show.
 */
export function scratchF32(n: number, slot: number): Float32Array {
  let buf = SCRATCH[slot];
  if (!buf || buf.length < n) buf = SCRATCH[slot] = new Float32Array(Math.max(n, (buf?.length ?? 0) * 2));
  return buf.subarray(0, n);
}
const SCRATCH: Float32Array[] = [];

/** Drops the scratch buffers (a load's end: they hold the largest chunk's values). */
export function releaseScratch(): void {
  SCRATCH.length = 0;
}

/**
 * Decodes a chunk to f32 with its row-local scales: bit-identical to `weightToF32` of the whole weight on the same
 * rows (the same codec, the same scale per element). `dst` (at least the chunk's elements) receives them when given.
 *
 * @example
 * ```ts ignore
 * const values = chunkToF32(await source.read(0, 4)); // rows 0..3, every element
 * ```
 */
export function chunkToF32(chunk: WeightChunk, dst?: Float32Array): Float32Array {
  const { dtype, data, scales } = chunk;
  const n = chunk.rows * rowElements(chunk.shape), out = dst?.subarray(0, n);
  if (dtype === "f8e4m3") return dequantizeFp8(data, scales ?? 1, out);
  if (dtype === "nvfp4" || dtype === "q8" || dtype === "q4") {
    if (!scales) throw new RangeError(`chunkToF32: a ${dtype} chunk has no scales`);
    if (dtype === "nvfp4") return dequantizeNvfp4Folded(data, scales, out);
    const k = kDim(chunk.shape);
    if (dtype === "q4") return dequantizeQ4({ packed: data, scales }, n / k, k, out);
    const values = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
    return dequantizeQ8({ values, scales }, values.length / k, k, out);
  }
  if (dtype in FLOAT_BYTES) return bytesToF32(data, dtype as FloatDType, out);
  throw new RangeError(`chunkToF32: dtype ${dtype} has no element-wise decoding`);
}
