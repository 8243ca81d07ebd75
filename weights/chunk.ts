/**
 * Row chunks (`weights/source.ts`) as backends consume them: decoding a chunk to f32 (for backends that promote),
 * and a {@link WeightSource} over a weight already in memory (a converted {@link CanonicalWeight}), for tests,
 * tools and small tensors.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { bytesToF32, dequantizeNvfp4Folded, F8_VALUES, FLOAT_BYTES, type FloatDType, Q8_BLOCK } from "./codecs.ts";
import { convertWeight } from "./convert.ts";
import type { CanonicalWeight } from "./load.ts";
import { leadingRows, rowElements, type WeightChunk, type WeightSource } from "./source.ts";

/** Elements of the last dimension of `shape` (the K of a K-row). */
function lastDim(shape: readonly number[]): number {
  return shape.length === 0 ? 1 : shape[shape.length - 1];
}

/** Row-local scales per K-row of `dtype` with K = `k` (see `weights/source.ts`). */
export function scalesPerKRow(dtype: DType, k: number): number {
  if (dtype === "f8e4m3") return 1;
  if (dtype === "q8") return Math.ceil(k / Q8_BLOCK);
  if (dtype === "nvfp4") return k / 16;
  return 0;
}

/** Bytes of `n` elements of `dtype` as chunk data (NVFP4: two per byte). */
export function chunkDataBytes(dtype: DType, n: number): number {
  if (dtype === "nvfp4") return n / 2;
  if (dtype === "f8e4m3" || dtype === "q8") return n;
  if (dtype === "i32") return 4 * n;
  return n * FLOAT_BYTES[dtype as FloatDType];
}

/** The f32 values of a chunk, exactly (FP8 code · row scale, q8 · block scale, NVFP4 e2m1 · folded scale). */
export function chunkToF32(c: WeightChunk): Float32Array {
  const n = c.rows * rowElements(c.shape), k = lastDim(c.shape);
  if (c.dtype === "f8e4m3") {
    const out = new Float32Array(n), s = c.scales!;
    for (let r = 0; r < n / k; r++) {
      const scale = Math.fround(s[r]);
      for (let i = r * k; i < (r + 1) * k; i++) out[i] = F8_VALUES[c.data[i]] * scale;
    }
    return out;
  }
  if (c.dtype === "q8") {
    const out = new Float32Array(n), s = c.scales!, nb = Math.ceil(k / Q8_BLOCK);
    const q = new Int8Array(c.data.buffer, c.data.byteOffset, n);
    for (let r = 0; r < n / k; r++) {
      for (let i = 0; i < k; i++) out[r * k + i] = q[r * k + i] * s[r * nb + Math.floor(i / Q8_BLOCK)];
    }
    return out;
  }
  if (c.dtype === "nvfp4") return dequantizeNvfp4Folded(c.data, c.scales!);
  if (c.dtype in FLOAT_BYTES) return bytesToF32(c.data, c.dtype as FloatDType);
  throw new RangeError(`chunkToF32: dtype ${c.dtype} has no element-wise decoding`);
}

/** One scale per K-row of `w` (an FP8 canonical weight, whose B scales split its K-rows into B equal runs). */
function f8RowScales(w: CanonicalWeight): Float32Array {
  const kRows = w.shape.reduce((a, b) => a * b, 1) / lastDim(w.shape);
  const blocks = w.scales ?? new Float32Array([1]);
  if (blocks.length === 0 || kRows % blocks.length !== 0) {
    throw new RangeError(`${w.name}: ${kRows} rows do not split into ${blocks.length} FP8 scale blocks`);
  }
  const out = new Float32Array(kRows), run = kRows / blocks.length;
  for (let r = 0; r < kRows; r++) out[r] = blocks[Math.floor(r / run)];
  return out;
}

/**
 * A source over `w` converted to `dtype` (`convertWeight`: the whole tensor at once, so only for weights already in
 * memory: tests, tools, small tensors). Chunks are views into the converted tensor.
 *
 * @example
 * ```ts
 * // const src = memorySource(weights.get("norm")!, "f32", "preset tiny seed 0");
 * // const { data } = await src.read(0, 64);
 * ```
 */
export function memorySource(w: CanonicalWeight, dtype: DType, origin = "memory"): WeightSource {
  const cw = convertWeight(w, dtype);
  const rows = leadingRows(cw.shape), per = rowElements(cw.shape), k = lastDim(cw.shape);
  const kRowsPerRow = per / k, perK = scalesPerKRow(cw.dtype, k);
  const scales = cw.dtype === "f8e4m3" ? f8RowScales(cw) : cw.scales;
  const bytes = cw.data.byteLength + (scales?.byteLength ?? 0);
  return {
    name: cw.name,
    shape: cw.shape,
    dtype: cw.dtype,
    bytes,
    origin,
    read(row0: number, n: number): Promise<WeightChunk> {
      if (!(row0 >= 0 && n >= 0 && row0 + n <= rows)) {
        return Promise.reject(new RangeError(`${cw.name}: rows ${row0}..${row0 + n} outside 0..${rows}`));
      }
      const b0 = chunkDataBytes(cw.dtype, row0 * per), b1 = chunkDataBytes(cw.dtype, (row0 + n) * per);
      const s0 = row0 * kRowsPerRow * perK, s1 = (row0 + n) * kRowsPerRow * perK;
      return Promise.resolve({
        row0,
        rows: n,
        shape: [n, ...cw.shape.slice(1)],
        dtype: cw.dtype,
        data: cw.data.subarray(b0, b1),
        scales: scales?.subarray(s0, s1),
      });
    },
  };
}

/** Leading-dimension row ranges of at most about `maxBytes` of chunk data each (at least one row per chunk). */
export function chunkRanges(source: WeightSource, maxBytes = 16 * 2 ** 20): { row0: number; rows: number }[] {
  const rows = leadingRows(source.shape), per = Math.max(1, chunkDataBytes(source.dtype, rowElements(source.shape)));
  const step = Math.max(1, Math.floor(maxBytes / per));
  const out: { row0: number; rows: number }[] = [];
  for (let r = 0; r < rows; r += step) out.push({ row0: r, rows: Math.min(step, rows - r) });
  return out;
}
