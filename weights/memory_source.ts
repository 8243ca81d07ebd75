/**
 * A {@link WeightSource} over a weight already in memory (a {@link CanonicalWeight}, converted whole): for tests,
 * tools and small tensors. Model loading streams from `weights/stream.ts` and `weights/random.ts` instead.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { chunkScaleCount, codeBytes, kDim } from "./chunks.ts";
import { convertWeight } from "./convert.ts";
import type { CanonicalWeight } from "./load.ts";
import { leadingRows, rowElements, type WeightChunk, type WeightSource } from "./source.ts";

/**
 * One scale per K-row of `w` (an FP8 canonical weight, whose B scales split its K-rows into B equal runs; also an
 * NVFP4 weight's global scales, given as `scales`).
 */
function f8RowScales(w: CanonicalWeight): Float32Array {
  const kRows = w.shape.reduce((a, b) => a * b, 1) / kDim(w.shape);
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
  const rows = leadingRows(cw.shape), per = rowElements(cw.shape), k = kDim(cw.shape);
  const kRowsPerRow = per / k, perK = chunkScaleCount(cw.dtype, k, k);
  const scales = cw.dtype === "f8e4m3" ? f8RowScales(cw) : cw.scales;
  // NVFP4: each K-row's global scale (its run's), as streamed chunks carry them.
  const globals = cw.dtype === "nvfp4" && cw.globalScales ? f8RowScales({ ...cw, scales: cw.globalScales }) : undefined;
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
      const b0 = codeBytes(cw.dtype, row0 * per, k), b1 = codeBytes(cw.dtype, (row0 + n) * per, k);
      const s0 = row0 * kRowsPerRow * perK, s1 = (row0 + n) * kRowsPerRow * perK;
      return Promise.resolve({
        row0,
        rows: n,
        shape: [n, ...cw.shape.slice(1)],
        dtype: cw.dtype,
        data: cw.data.subarray(b0, b1),
        scales: scales?.subarray(s0, s1),
        ...(globals ? { globalScales: globals.subarray(row0 * kRowsPerRow, (row0 + n) * kRowsPerRow) } : {}),
      });
    },
  };
}
