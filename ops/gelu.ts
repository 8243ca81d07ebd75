/**
 * `gelu`: exact (erf) GELU, `0.5 · x · (1 + erf(x / √2))`, elementwise (the vision projector uses it).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { gelu } from "./gelu.ts";
 * const g = new GraphBuilder();
 * const y = gelu(g, g.input("x", [2, 4], "f32")); // [2, 4]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { expectFloat, ioBytes, type OpDef } from "./op.ts";

/**
 * The error function to ~1e-14: Maclaurin series below |x| = 2.5, continued fraction of erfc above (the series
 * loses digits to cancellation there, the fraction converges fast).
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
    let term = x, sum = x;
    const x2 = x * x;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const d = term / (2 * n + 1);
      sum += d;
      if (Math.abs(d) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  if (ax > 6) return Math.sign(x);
  // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated from the tail.
  let t = ax;
  for (let n = 60; n >= 1; n--) t = ax + (n / 2) / t;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / t;
  return Math.sign(x) * (1 - erfc);
}

/** The `gelu` op (no attributes). */
export const geluOp: OpDef<Record<string, never>> = {
  name: "gelu",
  inputNames: ["x"],
  inferShape([x]) {
    expectFloat("x", x);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x], out) {
    for (let i = 0; i < out.data.length; i++) {
      const v = x.data[i];
      out.data[i] = 0.5 * v * (1 + erf(v * Math.SQRT1_2));
    }
  },
  cost(inputs, out) {
    return { flops: 10 * numel(out.shape), bytes: ioBytes(inputs, out) };
  },
};

/** Exact GELU, elementwise. */
export function gelu(g: GraphBuilder, x: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(geluOp, [x], {}, options);
}
