import { assertEquals } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { mul, mulOp } from "./mul.ts";
import { f32, runReference } from "./op.ts";

Deno.test("mul: shape and reference", () => {
  const g = new GraphBuilder();
  assertEquals(mul(g, g.input("a", [3], "f32"), g.input("b", [3], "f32")).shape, [3]);
  const y = runReference(mulOp, [f32([3], [1, -2, 3]), f32([3], [4, 5, 0.5])]);
  assertEquals(Array.from(y.data), [4, -10, 1.5]);
});
