/**
 * How a loaded weight reaches a backend: converted to the graph's dtype, then to the backend's storage.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { type BackendCaps, storageDType } from "../runtime/backend.ts";
import { convertWeight } from "../weights/convert.ts";
import { type CanonicalWeight, weightToF32 } from "../weights/load.ts";

/**
 * A weight as a backend with `caps` stores the graph's `dtype`. Values pass through the graph's dtype first, so
 * every backend computes with exactly what that dtype represents (a backend promoting it, like the reference to
 * f32, sees the decoded values); a backend with a weight layout of its own gets them through its encoder.
 *
 * @example
 * ```ts
 * // const data = storedWeight(canonical, "q8", backend.caps); // what `Executor` uploads for that weight
 * ```
 */
export function storedWeight(cw: CanonicalWeight, dtype: DType, caps: BackendCaps): ArrayBufferView {
  const w = convertWeight(cw, dtype), storage = storageDType(caps, dtype);
  if (caps.weightLayout) return caps.weightLayout.encode(storage === dtype ? w : convertWeight(w, storage));
  if (storage === "f32") return weightToF32(w);
  if (storage !== dtype) throw new Error(`weight ${cw.name}: ${dtype} stored as ${storage} needs a weight layout`);
  return w.data;
}
