/**
 * `concat`: joins tensors along the last dim; leading dims must agree: `[.., D0]`, `[.., D1]`… → `[.., ΣD]`.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { concat } from "./concat.ts";
 * const g = new GraphBuilder();
 * const q = concat(g, [g.input("nope", [3, 4, 16], "f32"), g.input("pe", [3, 4, 16], "f32")]); // [3, 4, 32]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { concreteDim, expectDim, ioBytes, type OpDef } from "./op.ts";

/** The `concat` op (no attributes; variadic). */
export const concatOp: OpDef<Record<string, never>> = {
  name: "concat",
  inputNames: ["x"],
  variadic: true,
  inferShape(xs) {
    const first = xs[0];
    const rank = first.shape.length;
    if (rank < 1) throw new Error("inputs must have rank ≥ 1");
    let total = 0;
    xs.forEach((x, i) => {
      if (x.shape.length !== rank) throw new Error(`input ${i} has rank ${x.shape.length}, input 0 has ${rank}`);
      if (x.dtype !== first.dtype) throw new Error(`input ${i} is ${x.dtype}, input 0 is ${first.dtype}`);
      for (let a = 0; a < rank - 1; a++) expectDim(`input ${i} dim ${a}`, x.shape[a], first.shape[a]);
      total += concreteDim(`last dim of input ${i}`, x.shape[rank - 1]);
    });
    return { shape: [...first.shape.slice(0, -1), total], dtype: first.dtype };
  },
  reference(xs, out) {
    const dOut = out.shape[out.shape.length - 1];
    const rows = numel(out.shape) / dOut;
    let col = 0;
    for (const x of xs) {
      const d = x.shape[x.shape.length - 1];
      for (let r = 0; r < rows; r++) out.data.set(x.data.subarray(r * d, (r + 1) * d), r * dOut + col);
      col += d;
    }
  },
  cost(inputs, out) {
    return { flops: 0, bytes: ioBytes(inputs, out) };
  },
};

/** Concatenates `xs` along the last dim. */
export function concat(g: GraphBuilder, xs: Tensor[], options: NodeOptions = {}): Tensor {
  return g.op(concatOp, xs, {}, options);
}
