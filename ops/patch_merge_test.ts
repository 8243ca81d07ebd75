import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { patchMerge, patchMergeOp } from "./patch_merge.ts";
import { f32, i32, runReference } from "./op.ts";

Deno.test("patch_merge: [P, C] by [M, K] → [M, C·K]", () => {
  const g = new GraphBuilder();
  const y = patchMerge(g, g.input("x", [sym("P", 16), 3], "f32"), g.input("index", [sym("M", 4), 4], "i32"));
  assertEquals(y.shape, [sym("M", 4), 12]);
});

Deno.test("patch_merge: channel-major unfold order (index = c·4 + dy·2 + dx)", () => {
  // A 2×2 patch grid, 2 channels: patch (r, c) holds [10·(2r + c), 10·(2r + c) + 1].
  const x = f32([4, 2], [0, 1, 10, 11, 20, 21, 30, 31]);
  const y = runReference(patchMergeOp, [x, i32([1, 4], [0, 1, 2, 3])]);
  assertEquals(Array.from(y.data), [0, 10, 20, 30, 1, 11, 21, 31]);
  assertThrows(() => runReference(patchMergeOp, [x, i32([1, 4], [0, 1, 2, 4])]), RangeError);
});
