import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { f32, runReference } from "./op.ts";
import { reshape, reshapeOp } from "./reshape.ts";

Deno.test("reshape: same symbols, same concrete product", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  const x = g.input("x", [T, 6], "f32");
  assertEquals(reshape(g, x, { shape: [T, 2, 3] }).shape, [T, 2, 3]);
  assertThrows(() => reshape(g, x, { shape: [T, 4] }), Error, "cannot reshape");
  assertThrows(() => reshape(g, x, { shape: [6, sym("S", 8)] }), Error, "cannot reshape");
  const y = runReference(reshapeOp, [f32([2, 3], [1, 2, 3, 4, 5, 6])], { shape: [3, 2] });
  assertEquals(y.shape, [3, 2]);
  assertEquals(Array.from(y.data), [1, 2, 3, 4, 5, 6]);
});
