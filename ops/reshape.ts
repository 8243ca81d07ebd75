/**
 * `reshape`: a view with a new shape over the same row-major elements (`[T, H·D]` ↔ `[T, H, D]`). Symbolic dims
 * must carry over unchanged (same symbols, same count) and the concrete dims must have the same product.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { reshape } from "./reshape.ts";
 * const g = new GraphBuilder();
 * const T = sym("T", 64);
 * const q = reshape(g, g.input("q", [T, 128], "f32"), { shape: [T, 4, 32] }); // [T, 4, 32]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { formatShape, type Shape } from "../graph/ir.ts";
import type { OpDef } from "./op.ts";

/** `shape`: the new shape. */
export type ReshapeAttrs = { shape: Shape };

function signature(s: Shape): { n: number; syms: string } {
  let n = 1;
  const syms: string[] = [];
  for (const d of s) {
    if (typeof d === "number") n *= d;
    else syms.push(d.sym);
  }
  return { n, syms: syms.sort().join(",") };
}

/** The `reshape` op: a view; backends may alias the input's memory. */
export const reshapeOp: OpDef<ReshapeAttrs> = {
  name: "reshape",
  inputNames: ["x"],
  inferShape([x], { shape }) {
    if (!Array.isArray(shape)) throw new Error("attr shape must be an array of dims");
    for (const d of shape) {
      if (typeof d === "number" ? !Number.isInteger(d) || d < 0 : typeof d?.sym !== "string") {
        throw new Error(`bad dim ${JSON.stringify(d)} in shape`);
      }
    }
    const a = signature(x.shape), b = signature(shape);
    if (a.n !== b.n || a.syms !== b.syms) {
      throw new Error(`cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
    }
    return { shape: [...shape], dtype: x.dtype };
  },
  reference([x], out) {
    out.data.set(x.data);
  },
  cost() {
    return { flops: 0, bytes: 0 };
  },
};

/** The same elements, viewed as `shape`. */
export function reshape(g: GraphBuilder, x: Tensor, options: NodeOptions & ReshapeAttrs): Tensor {
  const { shape, ...node } = options;
  return g.op(reshapeOp, [x], { shape }, node);
}
