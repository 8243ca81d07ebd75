/**
 * `matmul`: `x [.., K] · Wᵀ` with `W [N, K]` → `[.., N]`, as PyTorch `nn.Linear` (no bias). W may have any stored
 * dtype (f32, bf16, f8e4m3, nvfp4, q8…); the output keeps x's dtype. The reference accumulates in f64.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { matmul } from "./matmul.ts";
 * const g = new GraphBuilder();
 * const y = matmul(g, g.input("x", [3, 4], "f32"), g.weight("w", [2, 4], "f8e4m3")); // [3, 2]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { bytesOf, expectDim, expectFloat, expectRank, lastDim, type OpDef, tensorBytes } from "./op.ts";

/** No attributes. */
export type MatmulAttrs = Record<string, never>;

/** The `matmul` op. */
export const matmulOp: OpDef<MatmulAttrs> = {
  name: "matmul",
  inputNames: ["x", "w"],
  inferShape([x, w]) {
    expectFloat("x", x);
    expectFloat("w", w);
    if (x.shape.length < 1) throw new Error("x must have rank ≥ 1");
    expectRank("w", w, 2);
    expectDim("K (last dim of x vs w[1])", lastDim(x.shape), w.shape[1]);
    return { shape: [...x.shape.slice(0, -1), w.shape[0]], dtype: x.dtype };
  },
  reference([x, w], out) {
    const [n, k] = w.shape;
    const m = numel(x.shape) / k;
    const xd = x.data, wd = w.data, od = out.data;
    for (let i = 0; i < m; i++) {
      const xo = i * k;
      for (let j = 0; j < n; j++) {
        const wo = j * k;
        let acc = 0;
        for (let c = 0; c < k; c++) acc += xd[xo + c] * wd[wo + c];
        od[i * n + j] = acc;
      }
    }
  },
  cost([x, w], out) {
    const [n, k] = w.shape;
    const m = numel(x.shape) / k;
    return { flops: 2 * m * n * k, bytes: tensorBytes(x) + bytesOf(n * k, w.dtype) + tensorBytes(out) };
  },
};

/** `x [.., K] · Wᵀ` → `[.., N]`. */
export function matmul(g: GraphBuilder, x: Tensor, w: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(matmulOp, [x, w], {}, options);
}
