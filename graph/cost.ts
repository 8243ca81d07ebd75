/**
 * A graph's arithmetic under concrete symbol values, from each op's `cost`: what inspection reports per token and
 * what the engine budgets the vision encoder's work per step by.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./builder.ts";
 * import { sym } from "./ir.ts";
 * import { matmul } from "../ops/matmul.ts";
 * import { graphFlops } from "./cost.ts";
 * const g = new GraphBuilder();
 * g.output("y", matmul(g, g.input("x", [sym("T", 8), 64], "f32"), g.weight("w", [32, 64], "f32")));
 * graphFlops(g.build(), { T: 2 }); // 2 · 2 · 32 · 64 = 8192
 * ```
 *
 * @module
 */

import { type Graph, resolveShape, tensorTable, type Vars } from "./ir.ts";
import { getOp } from "../ops/mod.ts";

/** FLOPs of each node of `graph` (in node order) with its symbols bound by `vars` (every one must be). */
export function nodeFlops(graph: Graph, vars: Vars): number[] {
  const table = tensorTable(graph);
  return graph.nodes.map((n) => {
    const inputs = n.inputs.map((id) => ({ shape: resolveShape(table[id].shape, vars), dtype: table[id].dtype }));
    return getOp(n.op).cost(inputs, { shape: resolveShape(n.shape, vars), dtype: n.dtype }, n.attrs).flops;
  });
}

/** Total FLOPs of `graph` under `vars`. */
export function graphFlops(graph: Graph, vars: Vars): number {
  return nodeFlops(graph, vars).reduce((a, b) => a + b, 0);
}
