/**
 * Re-encoding a loaded weight into another stored dtype (`--dtype`): the values a backend then holds are exactly
 * what that dtype can represent, so every backend and the reference see the same quantised weights.
 *
 * @module
 */

import type { DType } from "../../graph/dtype.ts";
import { f32ToBytes, type FloatDType, quantizeFp8, quantizeQ8 } from "./codecs.ts";
import { type CanonicalWeight, weightToF32 } from "./load.ts";

const FLOATS: readonly DType[] = ["f32", "bf16", "f16"];

/**
 * `w` stored as `dtype`. FP8 gets one scale per leading slice of a 3-D (expert) tensor, else one per tensor;
 * q8 stores int8 blocks of 32 along the last dim in `data` with one f32 scale per block in `scales`.
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
  if (dtype === "q8") {
    const cols = w.shape[w.shape.length - 1];
    const q = quantizeQ8(values, values.length / cols, cols);
    return { name: w.name, shape: w.shape, dtype, data: new Uint8Array(q.values.buffer), scales: q.scales };
  }
  throw new RangeError(`convertWeight: ${w.name} cannot be converted to ${dtype}`);
}
