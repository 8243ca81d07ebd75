import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { f32, runReference } from "./op.ts";
import { swiglu, swigluOp } from "./swiglu.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("swiglu: [T, 2F] → [T, F]", () => {
  const g = new GraphBuilder();
  assertEquals(swiglu(g, g.input("x", [3, 8], "f32")).shape, [3, 4]);
  assertThrows(() => swiglu(g, g.input("y", [3, 7], "f32")), Error, "even");
});

Deno.test("swiglu: silu(gate) · up by hand", () => {
  // Row 0: gate [0, 1], up [2, 3] → [0, 3·σ(1)]; row 1: gate [-1, 2], up [1, 1] → [−σ(−1), 2σ(2)].
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const y = runReference(swigluOp, [f32([2, 4], [0, 1, 2, 3, -1, 2, 1, 1])]);
  assertClose(y.data, [0, 3 * sig(1), -sig(-1), 2 * sig(2)]);
  // 3σ(1) to 17 digits, computed apart (40-digit decimal): the op's own output against it, not the test's arithmetic.
  assertClose([y.data[1]], [2.1931757358900146], 1e-7);
});
