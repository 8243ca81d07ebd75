/**
 * `write_rows`: `target [N, D]` (a state tensor, **written in place**, input 0), `rows i32 [R]`, `src [R, D]` →
 * `target[rows[r]] = src[r]` for each r in order (a row given twice ends with its last source; a negative row
 * writes nothing); the op's result is `src` as given `[R, D]`. The vision graph stores each image's vectors in the model's image store this way, so the
 * step that places them reads them on the backend (`gather_rows`) and they never travel through the host.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { writeRows } from "./write_rows.ts";
 * const g = new GraphBuilder();
 * const M = sym("M", 16);
 * const store = g.state("image_store", [64, 8], "f32");
 * writeRows(g, store, g.input("slots", [M], "i32"), g.input("features", [M, 8], "f32")); // [M, 8]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { concreteDim, expectDim, expectDType, expectFloat, expectRank, type OpDef, tensorBytes } from "./op.ts";

/** The `write_rows` op (no attributes). Input 0 is written in place. */
export const writeRowsOp: OpDef<Record<string, never>> = {
  name: "write_rows",
  inputNames: ["target", "rows", "src"],
  writesInputs: [0],
  inferShape([target, rows, src]) {
    expectFloat("target", target);
    expectFloat("src", src);
    expectRank("target", target, 2);
    expectRank("src", src, 2);
    expectRank("rows", rows, 1);
    expectDType("rows", rows, "i32");
    concreteDim("target rows", target.shape[0]);
    expectDim("rows vs src dim 0", rows.shape[0], src.shape[0]);
    expectDim("width (target vs src)", target.shape[1], src.shape[1]);
    return { shape: [...src.shape], dtype: src.dtype };
  },
  reference([target, rows, src], out) {
    const [n, d] = target.shape;
    out.data.set(src.data);
    for (let r = 0; r < rows.shape[0]; r++) {
      const i = rows.data[r];
      if (i < 0) continue;
      if (i >= n) throw new RangeError(`write_rows: row ${i} at ${r} outside 0..${n - 1}`);
      target.data.set(src.data.subarray(r * d, (r + 1) * d), i * d);
    }
  },
  cost([, rows, src], out) {
    return { flops: 0, bytes: tensorBytes(rows) + 2 * tensorBytes(src) + tensorBytes(out) };
  },
};

/** Writes `src`'s rows into `target` (state) at `rows`; returns `src`. */
export function writeRows(
  g: GraphBuilder,
  target: Tensor,
  rows: Tensor,
  src: Tensor,
  options: NodeOptions = {},
): Tensor {
  return g.op(writeRowsOp, [target, rows, src], {}, options);
}
