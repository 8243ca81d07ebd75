/**
 * `swiglu`: `x [.., 2F]` laid out gate ‖ up → `silu(gate) · up` `[.., F]` (the fused gate/up projection's output).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { swiglu } from "./swiglu.ts";
 * const g = new GraphBuilder();
 * const y = swiglu(g, g.input("gate_up", [3, 8], "f32")); // [3, 4]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { concreteDim, expectFloat, ioBytes, lastDim, type OpDef } from "./op.ts";

/** `silu(v) = v · sigmoid(v)`, in f64. */
export function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/** The `swiglu` op (no attributes). */
export const swigluOp: OpDef<Record<string, never>> = {
  name: "swiglu",
  inputNames: ["x"],
  inferShape([x]) {
    expectFloat("x", x);
    if (x.shape.length < 1) throw new Error("x must have rank ≥ 1");
    const two = concreteDim("last dim of x", lastDim(x.shape));
    if (two % 2 !== 0) throw new Error(`last dim of x must be even (gate ‖ up), got ${two}`);
    return { shape: [...x.shape.slice(0, -1), two / 2], dtype: x.dtype };
  },
  reference([x], out) {
    const f = out.shape[out.shape.length - 1];
    const rows = numel(out.shape) / f;
    for (let r = 0; r < rows; r++) {
      const xo = r * 2 * f;
      for (let i = 0; i < f; i++) out.data[r * f + i] = silu(x.data[xo + i]) * x.data[xo + f + i];
    }
  },
  cost(inputs, out) {
    return { flops: 5 * numel(out.shape), bytes: ioBytes(inputs, out) };
  },
};

/** `silu(gate) · up` over the halves of the last dim. */
export function swiglu(g: GraphBuilder, x: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(swigluOp, [x], {}, options);
}
