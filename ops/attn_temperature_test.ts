import { assertAlmostEquals, assertEquals } from "../tests/assert.ts";
import { fixtureJson } from "../tests/fixtures.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { attnTemperature, attnTemperatureOp, attnTemperatureScale } from "./attn_temperature.ts";
import { f32, i32, runReference } from "./op.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("attn_temperature: s(p) equals the fixture's examples", () => {
  const fx = fixtureJson<{ llama4_q_scale_examples: Record<string, number> }>("model/derived_yarn_and_scales.json");
  for (const [p, s] of Object.entries(fx.llama4_q_scale_examples)) {
    assertAlmostEquals(attnTemperatureScale(Number(p), 0.1, 8192), s, 1e-15);
  }
});

Deno.test("attn_temperature: scales each token's whole row", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  const q = attnTemperature(g, g.input("q", [T, 2, 3], "f32"), g.input("pos", [T], "i32"), {
    beta: 0.1,
    original: 8192,
  });
  assertEquals(q.shape, [T, 2, 3]);
  const y = runReference(attnTemperatureOp, [f32([2, 2], [1, 2, 3, 4]), i32([2], [8191, 16384])], {
    beta: 0.1,
    original: 8192,
  });
  const s = 1 + 0.1 * Math.log(3);
  assertClose(y.data, [1, 2, 3 * s, 4 * s]);
});
