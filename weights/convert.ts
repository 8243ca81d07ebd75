/**
 * Re-encoding a loaded weight into another stored dtype (`--dtype`): the values a backend then holds are exactly
 * what that dtype can represent, so every backend and the reference see the same quantised weights.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import {
  f32ToBytes,
  type FloatDType,
  NVFP4_BLOCK,
  nvfp4BlockScale,
  quantizeFp8,
  quantizeNvfp4,
  quantizeQ4,
  quantizeQ8,
} from "./codecs.ts";
import { type CanonicalWeight, weightToF32 } from "./load.ts";

const FLOATS: readonly DType[] = ["f32", "bf16", "f16"];

/**
 * `values` (shape `shape`, row-major) quantised to a canonical NVFP4 weight with `parts` global scales: the rows
 * split into `parts` equal runs (the source linears of a fused tensor, or experts), each quantised on its own as
 * compressed-tensors does (`quantizeNvfp4`), block scales folded by their run's global scale.
 *
 * @example
 * ```ts
 * const w = nvfp4Weight("layers.0.shared.gate_up", [64, 64], values, 2); // gate and up, one global each
 * w.globalScales!.length; // 2
 * ```
 */
export function nvfp4Weight(name: string, shape: number[], values: Float32Array, parts: number): CanonicalWeight {
  const cols = shape[shape.length - 1], rows = values.length / cols;
  if (cols % NVFP4_BLOCK !== 0) {
    throw new RangeError(`nvfp4: ${name} has ${cols} columns; NVFP4 needs a multiple of ${NVFP4_BLOCK}`);
  }
  if (!Number.isInteger(parts) || parts <= 0 || rows % parts !== 0) {
    throw new RangeError(`nvfp4: ${name}'s ${rows} rows do not split into ${parts} global-scale runs`);
  }
  const run = rows / parts, blocks = cols / NVFP4_BLOCK;
  const data = new Uint8Array(values.length / 2), scales = new Float32Array(rows * blocks);
  const globalScales = new Float32Array(parts);
  for (let j = 0; j < parts; j++) {
    const q = quantizeNvfp4(values.subarray(j * run * cols, (j + 1) * run * cols), run, cols);
    data.set(q.packed, (j * run * cols) / 2);
    globalScales[j] = q.globalScale;
    for (let b = 0; b < q.scale.length; b++) scales[j * run * blocks + b] = nvfp4BlockScale(q.scale[b], q.globalScale);
  }
  return { name, shape: [...shape], dtype: "nvfp4", data, scales, globalScales };
}

/**
 * `w` stored as `dtype`. FP8 gets one scale per leading slice of a 3-D (expert) tensor, else one per tensor;
 * NVFP4 (rows × cols, cols a multiple of 16) one global scale likewise, with f8 block scales per 16 inputs folded
 * into `scales`; q8 stores int8 blocks of 32 along the last dim in `data` with one f32 scale per block in `scales`;
 * q4 split-nibble blocks of 32 (`quantizeQ4`) with one f16-valued scale per block.
 *
 * @example
 * ```ts
 * const q = convertWeight(w, "q8");
 * const values = weightToF32(q); // what a q8 backend computes with
 * ```
 */
export function convertWeight(w: CanonicalWeight, dtype: DType): CanonicalWeight {
  if (w.dtype === dtype) return w;
  const values = weightToF32(w);
  if (FLOATS.includes(dtype)) {
    return { name: w.name, shape: w.shape, dtype, data: f32ToBytes(values, dtype as FloatDType) };
  }
  if (dtype === "f8e4m3") {
    const q = quantizeFp8(values, w.shape.length === 3 ? w.shape[0] : 1);
    return { name: w.name, shape: w.shape, dtype, data: q.codes, scales: q.scales };
  }
  if (dtype === "nvfp4") return nvfp4Weight(w.name, w.shape, values, w.shape.length === 3 ? w.shape[0] : 1);
  if (dtype === "q8") {
    const cols = w.shape[w.shape.length - 1];
    const q = quantizeQ8(values, values.length / cols, cols);
    return { name: w.name, shape: w.shape, dtype, data: new Uint8Array(q.values.buffer), scales: q.scales };
  }
  if (dtype === "q4") {
    const cols = w.shape[w.shape.length - 1];
    const q = quantizeQ4(values, values.length / cols, cols);
    return { name: w.name, shape: w.shape, dtype, data: q.packed, scales: q.scales };
  }
  throw new RangeError(`convertWeight: ${w.name} cannot be converted to ${dtype}`);
}
