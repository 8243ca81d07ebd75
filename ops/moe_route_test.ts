import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { moeRoute, moeRouteOp } from "./moe_route.ts";
import { f32, runReference } from "./op.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("moe_route: [T, E] f32 logits → [T, E] dense weights", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  assertEquals(moeRoute(g, g.input("logits", [T, 8], "f32"), { topK: 2 }).shape, [T, 8]);
  assertThrows(() => moeRoute(g, g.input("few", [T, 2], "f32"), { topK: 3 }), Error, "topK");
  assertThrows(() => moeRoute(g, g.input("bf", [T, 8], "bf16"), { topK: 2 }), Error, "f32");
});

Deno.test("moe_route: softmax over all, top-k, renormalise", () => {
  // exp(logits) ∝ 1, 2, 3, 4 → p = .1 .2 .3 .4; top-2 = experts 3 and 2 → 4/7, 3/7.
  const y = runReference(moeRouteOp, [f32([2, 4], [0, Math.log(2), Math.log(3), Math.log(4), 0, 0, 0, 0])], {
    topK: 2,
  });
  // Row 1 ties everywhere: the lower indices win.
  assertClose(y.data, [0, 0, 3 / 7, 4 / 7, 0.5, 0.5, 0, 0]);
});
