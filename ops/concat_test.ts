import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { concat, concatOp } from "./concat.ts";
import { f32, runReference } from "./op.ts";

Deno.test("concat: joins the last dim; leading dims must agree", () => {
  const g = new GraphBuilder();
  const T = sym("T", 4);
  const a = g.input("a", [T, 2, 3], "f32"), b = g.input("b", [T, 2, 1], "f32");
  assertEquals(concat(g, [a, b]).shape, [T, 2, 4]);
  assertThrows(() => concat(g, [a, g.input("c", [T, 3, 1], "f32")]), Error, "dim 1");
  const y = runReference(concatOp, [f32([2, 1], [1, 2]), f32([2, 2], [3, 4, 5, 6])]);
  assertEquals(Array.from(y.data), [1, 3, 4, 2, 5, 6]);
});
