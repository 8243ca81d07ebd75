/**
 * `attn_temperature`: Llama-4 query temperature. Multiplies every element of token t by
 * `s(p) = 1 + beta · ln(1 + floor(p / original))` with `p = positions[t]` (so s = 1 below `original`).
 * `x [T, ..]`, `positions i32 [T]` → same shape as x.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { attnTemperature } from "./attn_temperature.ts";
 * const g = new GraphBuilder();
 * const q = g.input("q", [5, 4, 32], "f32");
 * const y = attnTemperature(g, q, g.input("pos", [5], "i32"), { beta: 0.1, original: 8192 });
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { expectDim, expectDType, expectFloat, expectPositiveInt, expectRank, ioBytes, type OpDef } from "./op.ts";

/** `beta` (llama_4_scaling_beta), `original` (original_max_position_embeddings). */
export type AttnTemperatureAttrs = { beta: number; original: number };

/** The scale at position `p`. */
export function attnTemperatureScale(p: number, beta: number, original: number): number {
  return 1 + beta * Math.log(1 + Math.floor(p / original));
}

/** The `attn_temperature` op. */
export const attnTemperatureOp: OpDef<AttnTemperatureAttrs> = {
  name: "attn_temperature",
  inputNames: ["x", "positions"],
  inferShape([x, pos], { beta, original }) {
    expectFloat("x", x);
    if (x.shape.length < 1) throw new Error("x must have rank ≥ 1");
    expectRank("positions", pos, 1);
    expectDType("positions", pos, "i32");
    expectDim("tokens (x dim 0 vs positions)", x.shape[0], pos.shape[0]);
    if (typeof beta !== "number") throw new Error("beta must be a number");
    expectPositiveInt("original", original);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x, pos], out, { beta, original }) {
    const t = x.shape[0];
    const w = t === 0 ? 0 : numel(x.shape) / t;
    for (let i = 0; i < t; i++) {
      const s = attnTemperatureScale(pos.data[i], beta, original);
      for (let j = i * w; j < (i + 1) * w; j++) out.data[j] = x.data[j] * s;
    }
  },
  cost(inputs, out) {
    return { flops: numel(out.shape), bytes: ioBytes(inputs, out) };
  },
};

/** Scales each token's row of `x` by the Llama-4 temperature at its position. */
export function attnTemperature(
  g: GraphBuilder,
  x: Tensor,
  positions: Tensor,
  options: NodeOptions & AttnTemperatureAttrs,
): Tensor {
  const { beta, original, ...node } = options;
  return g.op(attnTemperatureOp, [x, positions], { beta, original }, node);
}
