/**
 * `gather_rows`: `x [N, ..]`, `rows i32 [R]` → `[R, ..]` (row `rows[r]` of x). Picks the hidden states of the
 * tokens that are sampled, so the lm head runs on R rows instead of T.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { gatherRows } from "./gather_rows.ts";
 * const g = new GraphBuilder();
 * const last = gatherRows(g, g.input("h", [sym("T", 64), 8], "f32"), g.input("rows", [sym("R", 8)], "i32")); // [R, 8]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { expectDType, expectRank, type OpDef, tensorBytes } from "./op.ts";

/** The `gather_rows` op (no attributes). */
export const gatherRowsOp: OpDef<Record<string, never>> = {
  name: "gather_rows",
  inputNames: ["x", "rows"],
  inferShape([x, rows]) {
    if (x.shape.length < 1) throw new Error("x must have rank ≥ 1");
    expectRank("rows", rows, 1);
    expectDType("rows", rows, "i32");
    return { shape: [rows.shape[0], ...x.shape.slice(1)], dtype: x.dtype };
  },
  reference([x, rows], out) {
    const n = x.shape[0];
    const w = n === 0 ? 0 : numel(x.shape) / n;
    for (let r = 0; r < rows.shape[0]; r++) {
      const i = rows.data[r];
      if (i < 0 || i >= n) throw new RangeError(`gather_rows: row ${i} at ${r} outside 0..${n - 1}`);
      out.data.set(x.data.subarray(i * w, (i + 1) * w), r * w);
    }
  },
  cost([, rows], out) {
    return { flops: 0, bytes: tensorBytes(rows) + 2 * tensorBytes(out) };
  },
};

/** Rows `rows` of `x`. */
export function gatherRows(g: GraphBuilder, x: Tensor, rows: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(gatherRowsOp, [x, rows], {}, options);
}
