import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { matmul, matmulOp } from "./matmul.ts";
import { f32, runReference } from "./op.ts";
import { assertClose } from "../tests/op_helpers.ts";

Deno.test("matmul: shape [T, K] · [N, K]ᵀ → [T, N], keeps x dtype", () => {
  const g = new GraphBuilder();
  const T = sym("T", 16);
  const y = matmul(g, g.input("x", [T, 3], "f32"), g.weight("w", [2, 3], "f8e4m3"));
  assertEquals(y.shape, [T, 2]);
  assertEquals(y.dtype, "f32");
  const z = matmul(g, g.input("x3", [T, 4, 3], "f32"), g.weight("w", [2, 3], "f8e4m3"));
  assertEquals(z.shape, [T, 4, 2]);
});

Deno.test("matmul: K mismatch names the node", () => {
  const g = new GraphBuilder();
  assertThrows(
    () => matmul(g, g.input("x", [4, 3], "f32"), g.weight("w", [2, 5], "bf16"), { name: "q_proj" }),
    Error,
    'matmul #2 "q_proj"',
  );
});

Deno.test("matmul: reference by hand", () => {
  const x = f32([2, 3], [1, 2, 3, 4, 5, 6]);
  const w = f32([2, 3], [1, 0, -1, 0.5, 0.5, 0.5]);
  const y = runReference(matmulOp, [x, w]);
  assertEquals(y.shape, [2, 2]);
  assertClose(y.data, [-2, 3, -2, 7.5]);
});

Deno.test("matmul: cost counts weights at their stored dtype", () => {
  const c = matmulOp.cost(
    [{ shape: [2, 3], dtype: "f32" }, { shape: [4, 3], dtype: "bf16" }],
    { shape: [2, 4], dtype: "f32" },
    {},
  );
  assertEquals(c, { flops: 2 * 2 * 4 * 3, bytes: 24 + 24 + 32 });
  const q = matmulOp.cost(
    [{ shape: [1, 32], dtype: "f32" }, { shape: [2, 32], dtype: "nvfp4" }],
    { shape: [1, 2], dtype: "f32" },
    {},
  );
  assertEquals(q.bytes, 128 + 36 + 8); // 64 elements × 4.5 bits = 36 B
});
