/**
 * `write_rows`: `target [N, …]` (a state tensor, **written in place**, input 0), `rows i32 [R]`, `src [R, …]` (the
 * same trailing dims) → `target[rows[r]] = src[r]` for each r in order (a row given twice ends with its last
 * source; a negative row writes nothing); the op's result is `src` as given `[R, …]`. The vision graph stores each image's vectors in the
 * model's image store this way, so the step that places them reads them on the backend (`gather_rows`) and they
 * never travel through the host; the encoder run a few rows at a time keeps its hidden state, keys and values so.
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
import { numel } from "../graph/ir.ts";
import { concreteDim, expectDim, expectDType, expectFloat, expectRank, type OpDef, tensorBytes } from "./op.ts";

/** The `write_rows` op (no attributes). Input 0 is written in place. */
export const writeRowsOp: OpDef<Record<string, never>> = {
  name: "write_rows",
  inputNames: ["target", "rows", "src"],
  writesInputs: [0],
  inferShape([target, rows, src]) {
    expectFloat("target", target);
    expectFloat("src", src);
    if (target.shape.length < 2) throw new Error(`target must have rank ≥ 2, got ${target.shape.length}`);
    expectRank("src", src, target.shape.length);
    expectRank("rows", rows, 1);
    expectDType("rows", rows, "i32");
    concreteDim("target rows", target.shape[0]);
    expectDim("rows vs src dim 0", rows.shape[0], src.shape[0]);
    for (let i = 1; i < target.shape.length; i++) {
      expectDim(`width, dim ${i} (target vs src)`, target.shape[i], src.shape[i]);
    }
    return { shape: [...src.shape], dtype: src.dtype };
  },
  reference([target, rows, src], out) {
    const n = target.shape[0], d = numel(target.shape) / n;
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
