import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { embedding, embeddingOp } from "./embedding.ts";
import { f32, i32, runReference } from "./op.ts";

Deno.test("embedding: [T] ids over [V, D] → [T, D] f32 activations", () => {
  const g = new GraphBuilder();
  const T = sym("T", 8);
  const h = embedding(g, g.input("ids", [T], "i32"), g.weight("embed", [100, 6], "bf16"));
  assertEquals(h.shape, [T, 6]);
  assertEquals(h.dtype, "f32");
  assertThrows(() => embedding(g, g.input("fids", [T], "f32"), g.weight("embed", [100, 6], "bf16")), Error, "i32");
});

Deno.test("embedding: gathers rows, rejects ids out of range", () => {
  const table = f32([3, 2], [0, 1, 2, 3, 4, 5]);
  const out = runReference(embeddingOp, [i32([3], [2, 0, 2]), table], { dtype: "f32" });
  assertEquals(Array.from(out.data), [4, 5, 0, 1, 4, 5]);
  assertThrows(() => runReference(embeddingOp, [i32([1], [3]), table], { dtype: "f32" }), RangeError, "id 3");
});

Deno.test("embedding: cost reads only the gathered rows", () => {
  const c = embeddingOp.cost(
    [{ shape: [3], dtype: "i32" }, { shape: [1000, 8], dtype: "bf16" }],
    { shape: [3, 8], dtype: "f32" },
    { dtype: "f32" },
  );
  assertEquals(c, { flops: 0, bytes: 12 + 3 * 8 * 2 + 3 * 8 * 4 });
});
