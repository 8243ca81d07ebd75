import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { add, addOp } from "./add.ts";
import { f32, runReference } from "./op.ts";

Deno.test("add: same shapes only", () => {
  const g = new GraphBuilder();
  assertEquals(add(g, g.input("a", [2, 3], "f32"), g.input("b", [2, 3], "f32")).shape, [2, 3]);
  assertThrows(() => add(g, g.input("c", [2, 3], "f32"), g.input("d", [3], "f32")), Error, "shapes must be equal");
});

Deno.test("add: reference", () => {
  const y = runReference(addOp, [f32([2, 2], [1, 2, 3, 4]), f32([2, 2], [0.5, -2, 10, 0])]);
  assertEquals(Array.from(y.data), [1.5, 0, 13, 4]);
});
