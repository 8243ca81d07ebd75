import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { scatterRows, scatterRowsOp } from "./scatter_rows.ts";
import { f32, i32, runReference } from "./op.ts";

Deno.test("scatter_rows: replaces the listed rows, R = 0 copies", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8), I = sym("I", 4);
  const y = scatterRows(g, g.input("x", [T, 2], "f32"), g.input("rows", [I], "i32"), g.input("src", [I, 2], "f32"));
  assertEquals(y.shape, [T, 2]);
  const x = f32([3, 2], [1, 2, 3, 4, 5, 6]);
  const out = runReference(scatterRowsOp, [x, i32([2], [2, 0]), f32([2, 2], [7, 8, 9, 10])]);
  assertEquals(Array.from(out.data), [9, 10, 3, 4, 7, 8]);
  const same = runReference(scatterRowsOp, [x, i32([0], []), f32([0, 2], [])]);
  assertEquals(Array.from(same.data), [1, 2, 3, 4, 5, 6]);
  assertThrows(() => runReference(scatterRowsOp, [x, i32([1], [3]), f32([1, 2], [0, 0])]), RangeError);
});
