import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { attention, attentionOp } from "./attention.ts";
import { f32, i32, runReference } from "./op.ts";
import { assertClose, randomF32 } from "../tests/op_helpers.ts";

Deno.test("attention: shapes, and a mismatched head dim names the node", () => {
  const g = new GraphBuilder();
  const P = sym("P", 32);
  const [q, k] = ["q", "k"].map((n) => g.input(n, [P, 2, 8], "f32"));
  const v = g.input("v", [P, 2, 4], "f32"), segment = g.input("segment", [P], "i32");
  assertEquals(attention(g, { q, k, v, segment }, { scale: 0.5 }).shape, [P, 2, 4]);
  const bad = g.input("k2", [P, 2, 6], "f32");
  assertThrows(() => attention(g, { q, k: bad, v, segment }, { scale: 0.5, name: "vis" }), Error, '"vis"');
});

Deno.test("attention: by hand, one head, two rows", () => {
  // scores = [[1, 0], [0, 1]] · scale 1 → softmax rows [e, 1]/(e + 1) and [1, e]/(1 + e).
  const q = f32([2, 1, 2], [1, 0, 0, 1]), k = f32([2, 1, 2], [1, 0, 0, 1]);
  const v = f32([2, 1, 1], [10, 20]);
  const y = runReference(attentionOp, [q, k, v, i32([2], [0, 0])], { scale: 1 });
  const e = Math.E;
  assertClose(y.data, [(10 * e + 20) / (e + 1), (10 + 20 * e) / (1 + e)], 1e-6);
  // Separate segments: each row sees only itself.
  const z = runReference(attentionOp, [q, k, v, i32([2], [0, 1])], { scale: 1 });
  assertClose(z.data, [10, 20]);
});

Deno.test("attention: block-diagonal ≡ each segment alone", () => {
  let s = 7;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const [n1, n2, h, d] = [3, 5, 2, 4];
  const q = randomF32([n1 + n2, h, d], rand),
    k = randomF32([n1 + n2, h, d], rand),
    v = randomF32([n1 + n2, h, d], rand);
  const seg = i32([n1 + n2], [...Array(n1).fill(4), ...Array(n2).fill(9)]);
  const both = runReference(attentionOp, [q, k, v, seg], { scale: 0.5 });
  const part = (t: typeof q, a: number, b: number) => f32([b - a, h, d], t.data.subarray(a * h * d, b * h * d));
  for (const [a, b] of [[0, n1], [n1, n1 + n2]]) {
    const alone = runReference(attentionOp, [
      part(q, a, b),
      part(k, a, b),
      part(v, a, b),
      i32([b - a], Array(b - a).fill(0)),
    ], {
      scale: 0.5,
    });
    assertClose(both.data.subarray(a * h * d, b * h * d), alone.data, 1e-6);
  }
});
