import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { f32, runReference } from "./op.ts";
import { rmsNorm, rmsNormOp } from "./rms_norm.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("rms_norm: shape follows x; w must match the last dim", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  const x = g.input("x", [T, 4], "f32");
  assertEquals(rmsNorm(g, x, g.weight("n", [4], "bf16"), { eps: 1e-6 }).shape, [T, 4]);
  assertThrows(() => rmsNorm(g, x, g.weight("m", [5], "bf16"), { eps: 1e-6 }), Error, "last dim");
});

Deno.test("rms_norm: reference by hand", () => {
  // [3, 4]: mean square 12.5 → × 1/√12.5; w = [1, 2].
  const a = runReference(rmsNormOp, [f32([1, 2], [3, 4]), f32([2], [1, 2])], { eps: 0 });
  assertClose(a.data, [3 / Math.sqrt(12.5), 8 / Math.sqrt(12.5)]);
  // eps matters: ones with eps 1 → 1/√2; two rows are independent.
  const b = runReference(rmsNormOp, [f32([2, 2], [1, 1, 2, 0]), f32([2], [1, 1])], { eps: 1 });
  assertClose(b.data, [Math.SQRT1_2, Math.SQRT1_2, 2 / Math.sqrt(3), 0]);
});
