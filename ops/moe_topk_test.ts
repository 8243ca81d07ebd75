import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { moeGate, moeGateOp } from "./moe_gate.ts";
import { moeTopK, moeTopKOp, routerProbabilities } from "./moe_topk.ts";
import { f32, i32, runReference } from "./op.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("moe_topk / moe_gate: shapes and errors", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8), logits = g.input("logits", [T, 8], "f32");
  const ids = moeTopK(g, logits, { topK: 2 });
  assertEquals([ids.shape, ids.dtype], [[T, 2], "i32"]);
  const w = moeGate(g, logits, ids);
  assertEquals([w.shape, w.dtype], [[T, 2], "f32"]);
  assertThrows(() => moeTopK(g, g.input("few", [T, 2], "f32"), { topK: 3 }), Error, "topK");
  assertThrows(() => moeTopK(g, g.input("bf", [T, 8], "bf16"), { topK: 2 }), Error, "f32");
  assertThrows(() => moeGate(g, logits, w), Error, "i32");
  assertThrows(() => moeGate(g, g.input("other", [sym("U", 4), 8], "f32"), ids), Error, "tokens");
});

Deno.test("moe_topk: most probable first, ties → lower id; moe_gate renormalises in ids order", () => {
  // exp(logits) ∝ 1, 2, 3, 4 → p = .1 .2 .3 .4: top-2 = experts 3 then 2, weights 4/7 and 3/7.
  // Row 1 ties everywhere: the lower ids win, weights 1/2 each.
  const logits = f32([2, 4], [0, Math.log(2), Math.log(3), Math.log(4), 0, 0, 0, 0]);
  const ids = runReference(moeTopKOp, [logits], { topK: 2 });
  assertEquals(Array.from(ids.data), [3, 2, 0, 1]);
  const w = runReference(moeGateOp, [logits, ids], {});
  assertClose(w.data, [4 / 7, 3 / 7, 0.5, 0.5]);
  // The gate follows the ids it is given, not its own choice: experts 0 and 3 of row 0 → .1/.5, .4/.5.
  const other = runReference(moeGateOp, [logits, i32([2, 2], [0, 3, 1, 2])], {});
  assertClose(other.data, [0.2, 0.8, 0.5, 0.5]);
  assertThrows(() => runReference(moeGateOp, [logits, i32([2, 2], [0, 9, 1, 2])], {}), RangeError, "expert 9");
});

Deno.test("moe_gate: the renormalising sum is f32 with +1e-20, as the kernels compute it", () => {
  // Logits where summing the three chosen probabilities in f32 and in f64 gives different weights (found by search).
  const logits = f32([1, 4], [2.9565606117248535, -2.6457953453063965, -0.6956132054328918, -2.81847882270813]);
  const ids = i32([1, 3], [0, 1, 2]);
  const w = Array.from(runReference(moeGateOp, [logits, ids], {}).data);
  const p = new Float32Array(4);
  routerProbabilities(logits.data as Float32Array, 0, p);
  const top32 = Math.fround(Math.fround(Math.fround(p[0] + p[1]) + p[2]) + 1e-20), top64 = p[0] + p[1] + p[2] + 1e-20;
  assertEquals(w, [0, 1, 2].map((j) => Math.fround(p[j] / top32)));
  assert(w.some((x, j) => x !== Math.fround(p[j] / top64)), "an f64 sum would give other weights here");
});
