/**
 * The `wasm` backend's weight layout, and the encoder `uploadWeight` writes chunks through. For a weight of shape
 * `[..., K]` with `rows = numel / K` K-rows:
 * - f32, bf16, i32: the elements, little-endian, as is.
 * - q8: int8 values `[rows, K]`, zero bytes up to a multiple of 4, then f32 scales `[rows, ceil(K/32)]`.
 * - q4: codes `[rows, ceil(K/32), 16]` (split nibbles, the chunks' own layout: weights/codecs.ts `quantizeQ4`) with
 *   each whole group of 4 blocks transposed as a 4 × 4 matrix of 32-bit words (word t of block j moves to word
 *   4t + j of the group: {@link transposeQ4Groups}), then f16 scales `[rows, ceil(K/32)]` (the chunks' f32 scales
 *   are f16 values, so the narrowing is exact). The transpose puts 4 codes of each of 4 blocks in one 16-byte
 *   load, so the decode kernel sums 4 blocks in one vector and converts once per group (kernels/wasm/gemm_q4.c).
 * - f8e4m3: E4M3 codes `[rows, K]`, zero bytes up to a multiple of 4, then one f32 scale per K-row `[rows]` (the
 *   checkpoint's per-tensor or block scales expanded, as chunks carry them), so `W[r, :] = f8 · scale[r]`.
 * - nvfp4 (as released, MODEL.md §2; K a multiple of 16): per K-row its K/2 bytes of E2M1 codes (even element in the
 *   low nibble; each whole group of 64 elements permuted by {@link permuteNvfp4Groups}) then its K/16 f8e4m3 block scale codes (9K/16 bytes a K-row, so a row streams as one run), zero
 *   bytes up to a multiple of 4, then the f32 global scales (divisors, `W = e2m1 · f8 / global`): for an expert
 *   tensor `[E, N, K]` {@link nvfp4Slots} per expert (gate ‖ up's two halves, each its linear's; 0.5625 bytes per
 *   value plus 8 per expert), else one per K-row.
 * Quantised weights carry their scales in their buffer: a graph that declares only the weight still carries FP8
 * block scales to the kernels. Chunks are row-local, so each lands at its rows' offsets with nothing else held.
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { numel } from "../../../graph/ir.ts";
import { chunkScaleCount, chunkToF32, codeBytes, scratchF32 } from "../../../weights/chunks.ts";
import { f32ToF16, NVFP4_BLOCK, Q4_BLOCK, q4RowBytes, unfoldNvfp4Scales } from "../../../weights/codecs.ts";
import type { WeightChunk } from "../../../weights/source.ts";
import { Q8_BLOCK } from "./module.ts";

/** Byte offset of the scales after `n` one-byte values: 4-aligned so the kernels read them as f32. */
export function scalesOffset(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** Bytes one NVFP4 K-row of `k` values takes in the wasm layout: codes, then its block scale codes. */
export function nvfp4RowBytes(k: number): number {
  return (k / 2) + (k / NVFP4_BLOCK);
}

/**
 * Global scales an NVFP4 expert tensor `[E, N, K]` keeps per expert: 2 when N is even (slot j covers rows
 * j·N/2 … (j+1)·N/2: a fused gate ‖ up's halves, each its own linear's; both hold the one global of a down
 * projection), else 1.
 */
export function nvfp4Slots(n: number): number {
  return n % 2 === 0 ? 2 : 1;
}

/** Global scales an NVFP4 weight of `shape` keeps: {@link nvfp4Slots} per expert of a 3-D tensor, else one per K-row. */
export function nvfp4Globals(shape: readonly number[]): number {
  const K = shape[shape.length - 1] ?? 1, rows = K === 0 ? 0 : numel(shape) / K;
  return shape.length === 3 ? shape[0] * nvfp4Slots(shape[1]) : rows;
}

/** Byte offset of a weight's scales in the wasm layout (q4: after its padded codes; else {@link scalesOffset}). */
export function weightScalesOffset(shape: readonly number[], dtype: DType): number {
  const n = numel(shape), K = shape[shape.length - 1] ?? 1;
  return dtype === "q4" ? (K === 0 ? 0 : (n / K) * q4RowBytes(K)) : scalesOffset(n);
}

/** Bytes a weight of concrete `shape` stored as `dtype` takes in the wasm layout. */
export function wasmWeightBytes(shape: readonly number[], dtype: DType): number {
  const n = numel(shape), K = shape[shape.length - 1] ?? 1, rows = K === 0 ? 0 : n / K;
  if (dtype === "nvfp4") {
    if (K % NVFP4_BLOCK !== 0) {
      throw new RangeError(`wasm: an NVFP4 weight needs K a multiple of ${NVFP4_BLOCK}, got shape [${shape}]`);
    }
    return scalesOffset(rows * nvfp4RowBytes(K)) + 4 * nvfp4Globals(shape);
  }
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
  if (storage === "nvfp4") return encodeNvfp4(bytes, shape, chunk, first, count);
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
  if (storage === "q4") transposeQ4Groups(bytes, codeBytes(storage, first, K), count / K, K);
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

/**
 * q4 codes of `rows` K-rows at `offset` of `bytes`, in place: in each row, each whole group of 4 blocks (64 bytes)
 * transposed as a 4 × 4 matrix of little-endian 32-bit words; a row's last blocks past its last whole group stay.
 * The transpose is its own inverse.
 */
export function transposeQ4Groups(bytes: Uint8Array, offset: number, rows: number, K: number): void {
  const rowWords = q4RowBytes(K) / 4, groups = Math.floor(rowWords / 16);
  const w = wordsAt(bytes, offset, rows * rowWords * 4);
  for (let r = 0; r < rows; r++) {
    for (let b = r * rowWords, end = b + 16 * groups; b < end; b += 16) {
      // Six swaps: words (4j + t) ↔ (4t + j) for t < j.
      const a1 = w[b + 1], a2 = w[b + 2], a3 = w[b + 3], a6 = w[b + 6], a7 = w[b + 7], a11 = w[b + 11];
      w[b + 1] = w[b + 4], w[b + 4] = a1, w[b + 2] = w[b + 8], w[b + 8] = a2, w[b + 3] = w[b + 12], w[b + 12] = a3;
      w[b + 6] = w[b + 9], w[b + 9] = a6, w[b + 7] = w[b + 13], w[b + 13] = a7, w[b + 11] = w[b + 14], w[b + 14] = a11;
    }
  }
  writeBack(bytes, offset, w);
}

/**
 * `length` bytes (a multiple of 4) of `bytes` at `offset` as little-endian 32-bit words: a view where they lie on a
 * word, else an aligned copy for {@link writeBack} (NVFP4 rows are 9K/16 bytes, off the word when K/16 is odd).
 */
function wordsAt(bytes: Uint8Array, offset: number, length: number): Uint32Array {
  const at = bytes.byteOffset + offset;
  if (at % 4 === 0) return new Uint32Array(bytes.buffer, at, length / 4);
  return new Uint32Array(bytes.slice(offset, offset + length).buffer);
}

/** Writes words from {@link wordsAt} back to `bytes` at `offset` when they were a copy. */
function writeBack(bytes: Uint8Array, offset: number, w: Uint32Array): void {
  if (w.buffer !== bytes.buffer) bytes.set(new Uint8Array(w.buffer), offset);
}

/**
 * One K-row of NVFP4 codes at `offset` of `bytes`, in place: each whole group of 64 elements (32 bytes, 4 f8 blocks
 * of 16) becomes the first 4 bytes (elements 0–7) of each of its 4 blocks, then their last 4 (8–15), so one 16-byte
 * load holds 8 elements of every block and a lane pair of the kernel's dots is one block (kernels/wasm/gemm_nvfp4.c).
 * Bytes past the last whole group stay.
 */
export function permuteNvfp4Groups(bytes: Uint8Array, offset: number, K: number): void {
  const groups = Math.floor(K / 64), w = wordsAt(bytes, offset, 32 * groups);
  // Word 2j + h of a group (block j, elements 8h … 8h+7) moves to word 4h + j.
  for (let g = 0; g < 8 * groups; g += 8) {
    const w1 = w[g + 1], w2 = w[g + 2], w3 = w[g + 3], w4 = w[g + 4], w5 = w[g + 5], w6 = w[g + 6];
    w[g + 1] = w2, w[g + 2] = w4, w[g + 3] = w6, w[g + 4] = w1, w[g + 5] = w3, w[g + 6] = w5;
  }
  writeBack(bytes, offset, w);
}

/** {@link encodeChunk} for NVFP4: elements `[first, first + count)` of `shape`, whole K-rows (and whole experts). */
function encodeNvfp4(bytes: Uint8Array, shape: readonly number[], chunk: WeightChunk, first: number, count: number) {
  const K = shape[shape.length - 1], n = numel(shape), kb = K / NVFP4_BLOCK, rb = nvfp4RowBytes(K);
  const r0 = first / K, kRows = count / K;
  if (chunk.dtype !== "nvfp4") throw new RangeError(`wasm: a ${chunk.dtype} chunk cannot be stored as nvfp4`);
  if (chunk.data.byteLength !== count / 2 || chunk.scales?.length !== kRows * kb) {
    throw new RangeError(`wasm: NVFP4 chunk of ${kRows} K-rows has ${chunk.data.byteLength} B, not ${count / 2}`);
  }
  const globals = chunk.globalScales;
  if (globals?.length !== kRows) {
    throw new RangeError(
      `wasm: an NVFP4 chunk must carry one global scale per K-row (globalScales) to be kept packed; has ` +
        `${globals?.length ?? "none"} for ${kRows}`,
    );
  }
  // The f8 block codes back from the folded scales (exact: unfoldNvfp4Scales), then each K-row's codes ‖ scales.
  const codes = unfoldNvfp4Scales(chunk.scales, globals);
  for (let r = 0; r < kRows; r++) {
    const at = (r0 + r) * rb;
    bytes.set(chunk.data.subarray((r * K) / 2, ((r + 1) * K) / 2), at);
    permuteNvfp4Groups(bytes, at, K);
    bytes.set(codes.subarray(r * kb, (r + 1) * kb), at + K / 2);
  }
  const out = new Float32Array(bytes.buffer, bytes.byteOffset + scalesOffset((n / K) * rb), nvfp4Globals(shape));
  if (shape.length !== 3) return void out.set(globals, r0);
  // Experts: one global per slot; every K-row of a slot must share it (a chunk holds whole experts).
  const N = shape[1], S = nvfp4Slots(N), seen = new Set<number>();
  for (let r = 0; r < kRows; r++) {
    const i = r0 + r, slot = Math.floor(i / N) * S + Math.floor(((i % N) * S) / N);
    if (!seen.has(slot)) {
      seen.add(slot);
      out[slot] = globals[r];
    } else if (!Object.is(out[slot], globals[r])) {
      throw new RangeError(
        `wasm: NVFP4 expert tensor [${shape}] has more than ${S} global scale(s) per expert (row ${i % N} of ` +
          `expert ${Math.floor(i / N)}: ${globals[r]} vs ${out[slot]})`,
      );
    }
  }
}
