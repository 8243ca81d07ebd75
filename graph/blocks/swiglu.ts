/**
 * SwiGLU MLP block: `down(silu(gate·x) · (up·x))` with gate ‖ up fused into one `[2F, D]` weight (the loader fuses
 * the checkpoint's separate gate/up or w1/w3), so it is one matmul, the `swiglu` op, and one matmul. Used for the
 * shared expert, dense layers and the vision encoder's feed-forward.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { swigluMlp } from "./swiglu.ts";
 * const g = new GraphBuilder();
 * const x = g.input("x", [4, 64], "f32");
 * const y = swigluMlp(g, x, { prefix: "layers.0.shared", hidden: 64, width: 32, dtype: "bf16" });
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import { matmul } from "../../ops/matmul.ts";
import { swiglu } from "../../ops/swiglu.ts";

/**
 * `prefix`: canonical name prefix (weights `${prefix}.gate_up`, `${prefix}.down`; nodes `${prefix}.*`);
 * `hidden` D, `width` F, `dtype` the weights' stored dtype.
 */
export type SwigluOptions = { prefix: string; hidden: number; width: number; dtype: DType; layer?: number };

/** `x [.., D]` → `[.., D]`. */
export function swigluMlp(g: GraphBuilder, x: Tensor, o: SwigluOptions): Tensor {
  const { prefix: p, layer } = o;
  const gateUp = g.weight(`${p}.gate_up`, [2 * o.width, o.hidden], o.dtype);
  const down = g.weight(`${p}.down`, [o.hidden, o.width], o.dtype);
  const gu = matmul(g, x, gateUp, { name: `${p}.gate_up_out`, layer }); // [.., 2F] gate ‖ up
  const act = swiglu(g, gu, { name: `${p}.act`, layer }); // [.., F]
  return matmul(g, act, down, { name: `${p}.out`, layer });
}
