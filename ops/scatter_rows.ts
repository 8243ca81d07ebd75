/**
 * `scatter_rows`: `x [T, D]`, `rows i32 [R]`, `src [R, D]` → x with row `rows[r]` replaced by `src[r]`. Puts the
 * image features at the `[IMG]` positions of the token embeddings; with R = 0 it is a copy.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { scatterRows } from "./scatter_rows.ts";
 * const g = new GraphBuilder();
 * const I = sym("I", 16);
 * const x = g.input("h", [sym("T", 64), 8], "f32");
 * const y = scatterRows(g, x, g.input("rows", [I], "i32"), g.input("src", [I, 8], "f32")); // [T, 8]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { expectDim, expectDType, expectFloat, expectRank, type OpDef, tensorBytes } from "./op.ts";

/** The `scatter_rows` op (no attributes). */
export const scatterRowsOp: OpDef<Record<string, never>> = {
  name: "scatter_rows",
  inputNames: ["x", "rows", "src"],
  inferShape([x, rows, src]) {
    expectFloat("x", x);
    expectFloat("src", src);
    expectRank("x", x, 2);
    expectRank("src", src, 2);
    expectRank("rows", rows, 1);
    expectDType("rows", rows, "i32");
    expectDim("rows vs src dim 0", rows.shape[0], src.shape[0]);
    expectDim("width (x vs src)", x.shape[1], src.shape[1]);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x, rows, src], out) {
    const [t, d] = x.shape;
    out.data.set(x.data);
    for (let r = 0; r < rows.shape[0]; r++) {
      const i = rows.data[r];
      if (i < 0 || i >= t) throw new RangeError(`scatter_rows: row ${i} at ${r} outside 0..${t - 1}`);
      out.data.set(src.data.subarray(r * d, (r + 1) * d), i * d);
    }
  },
  cost([x, rows, src], out) {
    return { flops: 0, bytes: tensorBytes(x) + tensorBytes(rows) + tensorBytes(src) + tensorBytes(out) };
  },
};

/** `x` with rows `rows` replaced by `src`. */
export function scatterRows(g: GraphBuilder, x: Tensor, rows: Tensor, src: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(scatterRowsOp, [x, rows, src], {}, options);
}
