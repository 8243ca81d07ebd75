/**
 * `embedding`: `ids i32 [T]`, `table [V, D]` → `[T, D]` (row `ids[t]` of the table). The table keeps its stored
 * dtype; the result is an activation (`dtype` attr, f32 by default).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { embedding } from "./embedding.ts";
 * const g = new GraphBuilder();
 * const h = embedding(g, g.input("ids", [5], "i32"), g.weight("embed", [100, 8], "bf16")); // [5, 8] f32
 * ```
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { bytesOf, expectDType, expectFloat, expectRank, isFloat, type OpDef, tensorBytes } from "./op.ts";

/** `dtype`: element type of the result (an activation dtype). */
export type EmbeddingAttrs = { dtype: DType };

/** The `embedding` op. */
export const embeddingOp: OpDef<EmbeddingAttrs> = {
  name: "embedding",
  inputNames: ["ids", "table"],
  inferShape([ids, table], { dtype }) {
    expectRank("ids", ids, 1);
    expectDType("ids", ids, "i32");
    expectRank("table", table, 2);
    expectFloat("table", table);
    if (!isFloat(dtype)) throw new Error(`dtype must be a float type, got ${dtype}`);
    return { shape: [ids.shape[0], table.shape[1]], dtype };
  },
  reference([ids, table], out) {
    const [v, d] = table.shape;
    for (let t = 0; t < ids.shape[0]; t++) {
      const id = ids.data[t];
      if (id < 0 || id >= v) throw new RangeError(`embedding: id ${id} at row ${t} outside 0..${v - 1}`);
      out.data.set(table.data.subarray(id * d, (id + 1) * d), t * d);
    }
  },
  cost([ids, table], out) {
    // Only the gathered rows are read.
    return {
      flops: 0,
      bytes: tensorBytes(ids) + bytesOf(ids.shape[0] * table.shape[1], table.dtype) + tensorBytes(out),
    };
  },
};

/** Rows `ids` of `table` → `[T, D]`. */
export function embedding(
  g: GraphBuilder,
  ids: Tensor,
  table: Tensor,
  options: NodeOptions & { dtype?: DType } = {},
): Tensor {
  const { dtype = "f32", ...node } = options;
  return g.op(embeddingOp, [ids, table], { dtype }, node);
}
