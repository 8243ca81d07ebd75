import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { gatherRows, gatherRowsOp } from "./gather_rows.ts";
import { f32, i32, runReference } from "./op.ts";

Deno.test("gather_rows: [T, D] by [R] → [R, D]", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8), R = sym("R", 4);
  assertEquals(gatherRows(g, g.input("h", [T, 5], "f32"), g.input("rows", [R], "i32")).shape, [R, 5]);
  const x = f32([3, 2], [1, 2, 3, 4, 5, 6]);
  const y = runReference(gatherRowsOp, [x, i32([3], [2, 2, 0])]);
  assertEquals(Array.from(y.data), [5, 6, 5, 6, 1, 2]);
  assertThrows(() => runReference(gatherRowsOp, [x, i32([1], [3])]), RangeError);
});
