import { assertEquals } from "../tests/assert.ts";
import { GraphBuilder } from "./builder.ts";
import { sym } from "./ir.ts";
import { add } from "../ops/add.ts";
import { matmul } from "../ops/matmul.ts";
import { graphFlops, nodeFlops } from "./cost.ts";

Deno.test("graphFlops: each op's cost under the symbols given; an unbound symbol is an error", () => {
  const g = new GraphBuilder();
  const x = g.input("x", [sym("T", 8), 64], "f32");
  const y = matmul(g, x, g.weight("w", [32, 64], "f32"));
  g.output("z", add(g, y, y));
  const graph = g.build();
  assertEquals(nodeFlops(graph, { T: 3 }), [2 * 3 * 32 * 64, 3 * 32]);
  assertEquals(graphFlops(graph, { T: 1 }), 2 * 32 * 64 + 32);
  let error = "";
  try {
    graphFlops(graph, {});
  } catch (e) {
    error = String(e);
  }
  assertEquals(error.includes("symbol T is not bound"), true, error);
});
