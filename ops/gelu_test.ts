import { assertAlmostEquals, assertEquals } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { erf, gelu, geluOp } from "./gelu.ts";
import { f32, runReference } from "./op.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("erf: matches tabulated values across both branches", () => {
  const table: [number, number][] = [
    [0, 0],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [2.5, 0.999593047982555],
    [3, 0.9999779095030014],
    [4, 0.9999999845827421],
  ];
  for (const [x, e] of table) {
    assertAlmostEquals(erf(x), e, 1e-13);
    assertAlmostEquals(erf(-x), -e, 1e-13);
  }
});

Deno.test("gelu: exact (erf) form", () => {
  const g = new GraphBuilder();
  assertEquals(gelu(g, g.input("x", [2, 2], "f32")).shape, [2, 2]);
  const y = runReference(geluOp, [f32([4], [0, 1, -1, 3])]);
  assertClose(y.data, [0, 0.8413447460685429, -0.15865525393145707, 2.995950237128815]);
});
