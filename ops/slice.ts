/**
 * `slice`: elements `start..end` (end exclusive) of the last dim: `[.., D]` → `[.., end − start]`. Used to split
 * `q` into `q_nope ‖ q_rope` and `[c_kv ‖ k_rope]`.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { slice } from "./slice.ts";
 * const g = new GraphBuilder();
 * const kpe = slice(g, g.input("kva", [3, 320], "f32"), { start: 256, end: 320 }); // [3, 64]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { concreteDim, ioBytes, lastDim, type OpDef } from "./op.ts";

/** Half-open range `[start, end)` of the last dim. */
export type SliceAttrs = { start: number; end: number };

/** The `slice` op. */
export const sliceOp: OpDef<SliceAttrs> = {
  name: "slice",
  inputNames: ["x"],
  inferShape([x], { start, end }) {
    if (x.shape.length < 1) throw new Error("x must have rank ≥ 1");
    const d = concreteDim("last dim of x", lastDim(x.shape));
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > d || start >= end) {
      throw new Error(`slice [${start}, ${end}) outside last dim ${d}`);
    }
    return { shape: [...x.shape.slice(0, -1), end - start], dtype: x.dtype };
  },
  reference([x], out, { start, end }) {
    const d = x.shape[x.shape.length - 1];
    const w = end - start;
    const rows = numel(x.shape) / d;
    for (let r = 0; r < rows; r++) out.data.set(x.data.subarray(r * d + start, r * d + end), r * w);
  },
  cost(_inputs, out) {
    return { flops: 0, bytes: 2 * ioBytes([], out) };
  },
};

/** `x[..., start:end]`. */
export function slice(g: GraphBuilder, x: Tensor, options: NodeOptions & SliceAttrs): Tensor {
  const { start, end, ...node } = options;
  return g.op(sliceOp, [x], { start, end }, node);
}
