import { assertEquals, assertThrows } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { moeExperts, moeExpertsOp } from "./moe_experts.ts";
import { moeGateOp } from "./moe_gate.ts";
import { moeTopKOp } from "./moe_topk.ts";
import { f32, i32, runReference } from "./op.ts";
import { silu } from "./swiglu.ts";
import { assertClose, randomF32 } from "../tests/op_helpers.ts";

Deno.test("moe_experts: shapes of fused expert tensors", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  const x = g.input("x", [T, 16], "f32"), ids = g.input("ids", [T, 2], "i32"), w = g.input("w", [T, 2], "f32");
  const gu = g.weight("gate_up", [4, 2 * 6, 16], "f8e4m3"), down = g.weight("down", [4, 16, 6], "f8e4m3");
  assertEquals(moeExperts(g, x, ids, w, gu, down).shape, [T, 16]);
  const bad = g.weight("down_bad", [4, 16, 5], "f8e4m3");
  assertThrows(() => moeExperts(g, x, ids, w, gu, bad), Error, "gateUp dim 1");
  const w3 = g.input("w3", [T, 3], "f32");
  assertThrows(() => moeExperts(g, x, ids, w3, gu, down), Error, "weights dim 1");
  assertThrows(() => moeExperts(g, x, w, w, gu, down), Error, "i32");
});

Deno.test("moe_experts: two experts by hand", () => {
  // Expert 0: gate [1, 0], up [0, 1], down [[1], [2]]; expert 1: gate [0, 1], up [1, 1], down [[-1], [1]].
  const gu = f32([2, 2, 2], [1, 0, 0, 1, 0, 1, 1, 1]);
  const down = f32([2, 2, 1], [1, 2, -1, 1]);
  const x = f32([2, 2], [1, 2, 1, 2]);
  // Token 0: 0.25 · expert 0 + 0.75 · expert 1; token 1: expert 0 alone (expert 1 at weight 0).
  const ids = i32([2, 2], [0, 1, 0, 1]), weights = f32([2, 2], [0.25, 0.75, 1, 0]);
  const y = runReference(moeExpertsOp, [x, ids, weights, gu, down], {});
  const a0 = silu(1) * 2, a1 = silu(2) * 3; // x = [1, 2]: gates 1 and 2, ups 2 and 3
  assertClose(y.data, [0.25 * a0 - 0.75 * a1, 0.25 * 2 * a0 + 0.75 * a1, a0, 2 * a0]);
  // The expression's value to 17 digits (40-digit decimal; the old literal was 3.3e-9 off), and the op against it.
  assertClose([0.25 * a0 - 0.75 * a1], [-3.5980575615854686], 1e-15);
  assertClose([y.data[0]], [-3.5980575615854686], 1e-7);
});

Deno.test("moe_experts: route → experts matches a per-token naive mixture", () => {
  const rand = mulberry32(5);
  const [t, d, e, f, k] = [3, 5, 4, 3, 2];
  const x = randomF32([t, d], rand), logits = randomF32([t, e], rand, 3);
  const gu = randomF32([e, 2 * f, d], rand), down = randomF32([e, d, f], rand);
  const ids = runReference(moeTopKOp, [logits], { topK: k });
  const weights = runReference(moeGateOp, [logits, ids], {});
  const y = runReference(moeExpertsOp, [x, ids, weights, gu, down], {});
  const expected: number[] = [];
  for (let r = 0; r < t; r++) {
    const l = Array.from(logits.data.subarray(r * e, (r + 1) * e));
    const p = l.map((v) => Math.exp(v)).map((v, _, all) => v / all.reduce((s, u) => s + u, 0));
    const top = p.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, k);
    const z = top.reduce((s, [v]) => s + v, 0);
    const acc = new Array(d).fill(0);
    for (const [pv, ex] of top) {
      const dot = (row: number) => {
        let s = 0;
        for (let c = 0; c < d; c++) s += gu.data[(ex * 2 * f + row) * d + c] * x.data[r * d + c];
        return s;
      };
      const act = Array.from({ length: f }, (_, i) => silu(dot(i)) * dot(f + i));
      for (let c = 0; c < d; c++) {
        acc[c] += (pv / z) * act.reduce((s, a, i) => s + a * down.data[(ex * d + c) * f + i], 0);
      }
    }
    expected.push(...acc);
  }
  assertClose(y.data, expected, 1e-5);
});

Deno.test("moe_experts: cost reads only the experts a batch can touch", () => {
  const c = moeExpertsOp.cost(
    [
      { shape: [1, 8], dtype: "f32" },
      { shape: [1, 2], dtype: "i32" },
      { shape: [1, 2], dtype: "f32" },
      { shape: [16, 8, 8], dtype: "f8e4m3" },
      { shape: [16, 8, 4], dtype: "f8e4m3" },
    ],
    { shape: [1, 8], dtype: "f32" },
    {},
  );
  assertEquals(c.bytes, 32 + 8 + 8 + 32 + 2 * (8 * 8 + 8 * 4));
});
