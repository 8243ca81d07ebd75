import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { f32, runReference } from "./op.ts";
import { slice, sliceOp } from "./slice.ts";

Deno.test("slice: last-dim range", () => {
  const g = new GraphBuilder();
  const T = sym("T", 4);
  const x = g.input("x", [T, 2, 6], "f32");
  assertEquals(slice(g, x, { start: 4, end: 6 }).shape, [T, 2, 2]);
  assertThrows(() => slice(g, x, { start: 4, end: 7 }), Error, "outside");
  const y = runReference(sliceOp, [f32([2, 3], [1, 2, 3, 4, 5, 6])], { start: 1, end: 3 });
  assertEquals(y.shape, [2, 2]);
  assertEquals(Array.from(y.data), [2, 3, 5, 6]);
});
