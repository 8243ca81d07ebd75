import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
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

/** `x / sqrt(mean(x²) + eps) * w` per row of `d`, in f64: the formula, written apart from the reference. */
function expected(x: number[], w: number[], eps: number): number[] {
  const d = w.length, out: number[] = [];
  for (let o = 0; o < x.length; o += d) {
    const row = x.slice(o, o + d);
    const inv = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / d + eps);
    out.push(...row.map((v, i) => v * inv * w[i]));
  }
  return out;
}

Deno.test("rms_norm: rows where eps decides the result (all zeros, tiny values), each row on its own", () => {
  // Rows of [3, 4]: ordinary values; all zeros (only eps keeps 1/rms finite: 0, not NaN); tiny values whose mean
  // square (7.5e-10) is far below eps, so the output is ≈ x / √eps = 1000·x, not x / rms(x) ≈ ±1.
  const x = [0.5, -1.5, 2, 1, 0, 0, 0, 0, 1e-5, -3e-5, 4e-5, 2e-5];
  const w = [1, 0.5, -2, 1.25];
  const eps = 1e-6;
  const y = runReference(rmsNormOp, [f32([3, 4], x), f32([4], w)], { eps }).data;
  assertClose(y, expected(x, w, eps), 1e-6);
  assert(y.subarray(4, 8).every((v) => v === 0), "the zero row stays zero");
  // What a kernel that ignored eps would give on the tiny row: ~36× more, far outside any bound.
  const ignoringEps = expected(x.slice(8), w, 0);
  for (let i = 0; i < 4; i++) assert(Math.abs(ignoringEps[i]) > 20 * Math.abs(y[8 + i]), `tiny row [${i}]`);
  // And on the zero row 0 · ∞ = NaN: eps is all that keeps it finite.
  assert(runReference(rmsNormOp, [f32([1, 4], [0, 0, 0, 0]), f32([4], w)], { eps: 0 }).data.every(Number.isNaN));
});

Deno.test("rms_norm: eps is added under the root, at its own value (1, not a built-in 1e-6)", () => {
  // Mean square 0.25 + eps 1 → × 1/√1.25; eps after the root would give × 1/1.5, a fixed 1e-6 × 2.
  const x = [0.5, -0.5, 0.5, -0.5], w = [1, 1, 1, 1];
  const y = runReference(rmsNormOp, [f32([1, 4], x), f32([4], w)], { eps: 1 }).data;
  assertClose(y, x.map((v) => v / Math.sqrt(1.25)), 1e-7);
  // Eps dominating a tiny row at 1e-6 with a D that is not a power of two (odd tails in SIMD kernels).
  const tiny = Array.from({ length: 17 }, (_, i) => (i % 3 - 1) * 2e-5 + 1e-6);
  const wt = Array.from({ length: 17 }, (_, i) => 1 + i / 17);
  const yt = runReference(rmsNormOp, [f32([1, 17], tiny), f32([17], wt)], { eps: 1e-6 }).data;
  assertClose(yt, expected(tiny, wt, 1e-6), 1e-6);
});
