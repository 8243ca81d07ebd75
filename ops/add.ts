/**
 * `add`: elementwise `a + b`, same shapes (residual connections).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { add } from "./add.ts";
 * const g = new GraphBuilder();
 * const y = add(g, g.input("a", [2, 3], "f32"), g.input("b", [2, 3], "f32")); // [2, 3]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { elementwiseBinary, type OpDef } from "./op.ts";

/** The `add` op (no attributes). */
export const addOp: OpDef<Record<string, never>> = elementwiseBinary("add", (a, b) => a + b);

/** `a + b`, elementwise. */
export function add(g: GraphBuilder, a: Tensor, b: Tensor, options: NodeOptions = {}): Tensor {
  return g.op(addOp, [a, b], {}, options);
}
