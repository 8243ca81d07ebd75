/**
 * `attention_rows`: the {@link attention} of some query rows of a packed batch, for the vision encoder run a few
 * rows at a time (engine steps interleave with it). `q [Q, H, d]` are the queries of the batch rows `rows i32 [Q]`;
 * `k [N, H, d]` and `v [N, H, dv]` hold the keys and values of the whole batch in their first P rows, where P is
 * the length of `segment i32 [P]` (N ≥ P: a state buffer sized for the largest batch; later rows are not read).
 * Query i attends to every key row j < P with `segment[j] = segment[rows[i]]` → `[Q, H, dv]`. When `q[i]` is row
 * `rows[i]` of a batch's queries, the result is that row of `attention` over the batch, bit for bit on the
 * reference (one shared row routine). The attention is non-causal, so every key of the layer must be written
 * before any query row runs; the query rows themselves are independent. As for `attention`, each segment's rows
 * must be one contiguous run for the `wasm` kernel.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { attentionRows } from "./attention_rows.ts";
 * const g = new GraphBuilder();
 * const Q = sym("Q", 16), P = sym("P", 64);
 * const q = g.input("q", [Q, 2, 16], "f32");
 * const [k, v] = ["k", "v"].map((n) => g.state(n, [64, 2, 16], "f32"));
 * const rows = g.input("rows", [Q], "i32"), segment = g.input("segment", [P], "i32");
 * const y = attentionRows(g, { q, k, v, segment, rows }, { scale: 0.25 }); // [Q, 2, 16]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import type { Dim } from "../graph/ir.ts";
import { attendRow, type AttentionAttrs } from "./attention.ts";
import { concreteDim, expectDim, expectDType, expectFloat, expectRank, ioBytes, type OpDef } from "./op.ts";

/** The largest value a dim takes. */
const maxOf = (d: Dim) => typeof d === "number" ? d : d.max;

/** The `attention_rows` op (attributes as `attention`'s). */
export const attentionRowsOp: OpDef<AttentionAttrs> = {
  name: "attention_rows",
  inputNames: ["q", "k", "v", "segment", "rows"],
  inferShape([q, k, v, segment, rows], { scale }) {
    for (const [n, t] of [["q", q], ["k", k], ["v", v]] as const) {
      expectFloat(n, t);
      expectRank(n, t, 3);
    }
    for (const [n, t] of [["segment", segment], ["rows", rows]] as const) {
      expectDType(n, t, "i32");
      expectRank(n, t, 1);
    }
    expectDim("k vs v rows", k.shape[0], v.shape[0]);
    for (let i = 1; i < 3; i++) expectDim(`q vs k dim ${i}`, q.shape[i], k.shape[i]);
    expectDim("q vs v heads", q.shape[1], v.shape[1]);
    expectDim("rows (q vs rows)", q.shape[0], rows.shape[0]);
    concreteDim("heads", q.shape[1]);
    if (maxOf(segment.shape[0]) > maxOf(k.shape[0])) {
      throw new Error(`segment (${maxOf(segment.shape[0])} rows at most) is longer than k (${maxOf(k.shape[0])})`);
    }
    if (typeof scale !== "number" || !(scale > 0)) throw new Error(`scale must be a number > 0, got ${scale}`);
    return { shape: [q.shape[0], q.shape[1], v.shape[2]], dtype: q.dtype };
  },
  reference([q, k, v, segment, rows], out, { scale }) {
    const P = segment.shape[0], heads = q.shape[1];
    const args = { q, k, v, segment, out, scale, scores: new Float64Array(P), acc: new Float64Array(v.shape[2]) };
    for (let i = 0; i < q.shape[0]; i++) {
      const row = rows.data[i];
      if (!(row >= 0 && row < P)) throw new RangeError(`attention_rows: row ${row} at ${i} outside 0..${P - 1}`);
      for (let h = 0; h < heads; h++) attendRow(args, i, row, h);
    }
  },
  cost([q, , v, segment, rows], out) {
    // Upper bound: every query's segment holds all P keys. Only the first P rows of k and v are read.
    const [Q, heads, d] = q.shape, P = segment.shape[0], dv = v.shape[2];
    const kv = { shape: [P, heads, d + dv], dtype: v.dtype };
    return { flops: 2 * Q * P * heads * (d + dv), bytes: ioBytes([q, kv, segment, rows], out) };
  },
};

/** The tensors of one {@link attentionRows} call. */
export type AttentionRowsInputs = { q: Tensor; k: Tensor; v: Tensor; segment: Tensor; rows: Tensor };

/** Non-causal attention within segments for the query rows `rows` of a batch whose keys are in `k`, `v`. */
export function attentionRows(
  g: GraphBuilder,
  x: AttentionRowsInputs,
  options: NodeOptions & AttentionAttrs,
): Tensor {
  const { scale, ...node } = options;
  return g.op(attentionRowsOp, [x.q, x.k, x.v, x.segment, x.rows], { scale }, node);
}
