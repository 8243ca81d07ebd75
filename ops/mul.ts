/**
 * `mul`: elementwise `a · b`, same shapes.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { mul } from "./mul.ts";
 * const g = new GraphBuilder();
 * const y = mul(g, g.input("a", [2, 3], "f32"), g.input("b", [2, 3], "f32")); // [2, 3]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { elementwiseBinary, type OpDef } from "./op.ts";

/** The `mul` op (no attributes). */
export const mulOp: OpDef<Record<string, never>> = elementwiseBinary("mul", (a, b) => a * b);

/** `a · b`, elementwise. */
export function mul(g: GraphBuilder, a: Tensor, b: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(mulOp, [a, b], {}, options);
}
