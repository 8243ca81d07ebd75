/**
 * Comparison helpers for op tests and backend-vs-reference checks: element-wise closeness and the normalised
 * error the backend op table uses.
 *
 * @example
 * ```ts
 * import { assertClose, normalisedError } from "./op_helpers.ts";
 * assertClose(new Float32Array([1, 2.0000001]), [1, 2]);
 * normalisedError([1, 2], [1, 2]); // 0
 * ```
 *
 * @module
 */

import { numel } from "../graph/ir.ts";
import type { RefTensor } from "../ops/op.ts";

/** `max|a − e| / max|e|` (0 when both are all zeros): scale-free error of a whole tensor. */
export function normalisedError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} ≠ ${expected.length}`);
  let diff = 0, mag = 0;
  for (let i = 0; i < actual.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    mag = Math.max(mag, Math.abs(expected[i]));
  }
  if (Number.isNaN(diff)) return Infinity;
  return mag === 0 ? diff : diff / mag;
}

/** Throws unless every `|a − e| ≤ tol · max(1, |e|)`, naming the first bad index. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-6, what = ""): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what} length ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (!(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)))) {
      throw new Error(`${what}[${i}] = ${a}, expected ${e} (tol ${tol}); actual ${Array.from(actual).join(", ")}`);
    }
  }
}

/** An f32 tensor of values uniform in [−scale, scale) from `rand` (a seeded PRNG returning [0, 1)). */
export function randomF32(shape: number[], rand: () => number, scale = 1): RefTensor {
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = (2 * rand() - 1) * scale;
  return { data, shape, dtype: "f32" };
}
