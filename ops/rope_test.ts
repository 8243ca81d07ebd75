import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { f32, i32, runReference } from "./op.ts";
import { rope, type RopeAttrs, ropeOp } from "./rope.ts";
import { assertClose } from "../tests/op_helpers.ts";
import { ropeInvFreq } from "./yarn.ts";

Deno.test("rope: shapes, table from theta, 2-D positions need pairAxis", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  const pos = g.input("pos", [T], "i32");
  const y = rope(g, g.input("q", [T, 4, 16], "f32"), pos, { theta: 1e4, name: "q_rope" });
  assertEquals(y.shape, [T, 4, 16]);
  const k = g.op(ropeOp, [g.input("k", [T, 16], "f32"), pos], {
    invFreq: ropeInvFreq({ dim: 16, theta: 1e4 }),
    magnitude: 1,
    pairAxis: [],
  });
  assertEquals(k.shape, [T, 16]);
  assertThrows(() => rope(g, g.input("odd", [T, 6], "f32"), pos, { invFreq: [1, 2] }), Error, "invFreq");
  const pos2 = g.input("pos2", [T, 2], "i32");
  assertThrows(() => rope(g, g.input("v", [T, 4], "f32"), pos2, { invFreq: [1, 1] }), Error, "pairAxis");
  assertEquals(rope(g, g.input("w", [T, 4], "f32"), pos2, { invFreq: [1, 1], pairAxis: [0, 1] }).shape, [T, 4]);
});

Deno.test("rope: interleaved pairs rotated by pos · θ_i, scaled by magnitude", () => {
  // Pair 0 = (1, 0) turned by 2 rad; pair 1 = (0, 1) turned by 1 rad (θ = [1, 0.5], position 2).
  const attrs: RopeAttrs = { invFreq: [1, 0.5], magnitude: 1, pairAxis: [] };
  const x = f32([2, 4], [1, 0, 0, 1, 1, 0, 0, 1]);
  const y = runReference(ropeOp, [x, i32([2], [2, 0])], attrs);
  assertClose(y.data, [Math.cos(2), Math.sin(2), -Math.sin(1), Math.cos(1), 1, 0, 0, 1]);
  // Heads share the rotation of their token; the magnitude scales cos and sin.
  const h = runReference(ropeOp, [f32([1, 2, 2], [3, 4, 1, 0]), i32([1], [1])], {
    invFreq: [Math.PI / 2],
    magnitude: 2,
    pairAxis: [],
  });
  assertClose(h.data, [-8, 6, 0, 2], 1e-6);
});

Deno.test("rope: 2-D positions pick a column per pair (vision)", () => {
  // Pair 0 uses the row (3), pair 1 the column (5).
  const y = runReference(ropeOp, [f32([1, 4], [1, 0, 1, 0]), i32([1, 2], [3, 5])], {
    invFreq: [1, 1],
    magnitude: 1,
    pairAxis: [0, 1],
  });
  assertClose(y.data, [Math.cos(3), Math.sin(3), Math.cos(5), Math.sin(5)]);
});

Deno.test("rope: angles are formed in f32 like the checkpoint's code", () => {
  const theta = 0.7498942093324559, p = 1_000_003;
  const y = runReference(ropeOp, [f32([1, 2], [1, 0]), i32([1], [p])], {
    invFreq: [theta],
    magnitude: 1,
    pairAxis: [],
  });
  const angle = Math.fround(Math.fround(theta) * p);
  assertClose(y.data, [Math.cos(angle), Math.sin(angle)]);
});
