import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { f32, i32, runReference } from "./op.ts";
import { writeRows, writeRowsOp } from "./write_rows.ts";

Deno.test("write_rows: shapes, in place on input 0, errors", () => {
  const g = new GraphBuilder();
  const M = sym("M", 4), store = g.state("store", [6, 3], "f32");
  assertEquals(writeRows(g, store, g.input("rows", [M], "i32"), g.input("src", [M, 3], "f32")).shape, [M, 3]);
  assertEquals(writeRowsOp.writesInputs, [0]);
  assertThrows(() => writeRows(g, store, g.input("r2", [M], "i32"), g.input("s2", [M, 4], "f32")), Error, "width");
  assertThrows(() => writeRows(g, store, g.input("r3", [M], "f32"), g.input("s3", [M, 3], "f32")), Error, "i32");
});

Deno.test("write_rows: rows land at their indices, in order; the result is the source", () => {
  const target = f32([4, 2], [0, 0, 0, 0, 0, 0, 0, 0]);
  const src = f32([3, 2], [1, 2, 3, 4, 5, 6]);
  const out = runReference(writeRowsOp, [target, i32([3], [3, 0, 3]), src], {});
  assertEquals(Array.from(target.data), [3, 4, 0, 0, 0, 0, 5, 6]); // row 3 twice: the last source wins
  runReference(writeRowsOp, [target, i32([3], [-1, 1, -1]), src], {}); // negative rows write nothing
  assertEquals(Array.from(target.data), [3, 4, 3, 4, 0, 0, 5, 6]);
  assertEquals(Array.from(out.data), [1, 2, 3, 4, 5, 6]);
  assertThrows(() => runReference(writeRowsOp, [target, i32([1], [4]), f32([1, 2], [1, 1])], {}), RangeError, "row 4");
});

Deno.test("write_rows: a rank-3 target takes rows of its leading dim", () => {
  const g = new GraphBuilder();
  const M = sym("M", 4), store = g.state("keys", [5, 2, 3], "f32");
  assertEquals(writeRows(g, store, g.input("rows", [M], "i32"), g.input("src", [M, 2, 3], "f32")).shape, [M, 2, 3]);
  assertThrows(() => writeRows(g, store, g.input("r2", [M], "i32"), g.input("s2", [M, 6], "f32")), Error, "rank");
  const target = f32([3, 2, 2], new Array(12).fill(0));
  runReference(writeRowsOp, [target, i32([2], [2, 0]), f32([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8])], {});
  assertEquals(Array.from(target.data), [5, 6, 7, 8, 0, 0, 0, 0, 1, 2, 3, 4]);
});
