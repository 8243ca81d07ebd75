/**
 * `patch_merge`: the projector's spatial merge (MODEL.md §3.4) as a gather: `x [P, C]`, `index i32 [M, K]` →
 * `[M, C·K]` with `out[m, c·K + j] = x[index[m, j], c]`, i.e. torch `unfold`'s channel-major order. For a 2×2
 * merge K = 4 and `index[m] = [top-left, top-right, bottom-left, bottom-right]` patch rows (j = dy·2 + dx).
 * The host builds `index` from each image's patch grid (see `engine/vision.ts`), so one op serves any number
 * of images of any sizes, and the merged-token count M is an input dim like any other.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { patchMerge } from "./patch_merge.ts";
 * const g = new GraphBuilder();
 * const x = g.input("x", [sym("P", 64), 8], "f32");
 * const y = patchMerge(g, x, g.input("index", [sym("M", 16), 4], "i32")); // [M, 32]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { concreteDim, expectDType, expectRank, type OpDef, tensorBytes } from "./op.ts";

/** The `patch_merge` op (no attributes). */
export const patchMergeOp: OpDef<Record<string, never>> = {
  name: "patch_merge",
  inputNames: ["x", "index"],
  inferShape([x, index]) {
    expectRank("x", x, 2);
    expectRank("index", index, 2);
    expectDType("index", index, "i32");
    const c = concreteDim("channels (x dim 1)", x.shape[1]);
    const k = concreteDim("patches per token (index dim 1)", index.shape[1]);
    return { shape: [index.shape[0], c * k], dtype: x.dtype };
  },
  reference([x, index], out) {
    const [p, c] = x.shape, [m, k] = index.shape;
    for (let t = 0; t < m; t++) {
      for (let j = 0; j < k; j++) {
        const row = index.data[t * k + j];
        if (row < 0 || row >= p) throw new RangeError(`patch_merge: row ${row} at [${t}, ${j}] outside 0..${p - 1}`);
        for (let ch = 0; ch < c; ch++) out.data[t * c * k + ch * k + j] = x.data[row * c + ch];
      }
    }
  },
  cost([, index], out) {
    return { flops: 0, bytes: tensorBytes(index) + 2 * tensorBytes(out) };
  },
};

/** Gathers `index`'s rows of `x` per output token, channel-major. */
export function patchMerge(g: GraphBuilder, x: Tensor, index: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(patchMergeOp, [x, index], {}, options);
}
