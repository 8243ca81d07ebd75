import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { attentionOp } from "./attention.ts";
import { attentionRows, attentionRowsOp } from "./attention_rows.ts";
import { f32, i32, runReference } from "./op.ts";
import { randomF32 } from "../tests/op_helpers.ts";

Deno.test("attention_rows: shapes; keys longer than the batch; a segment longer than k is refused", () => {
  const g = new GraphBuilder();
  const Q = sym("Q", 8), P = sym("P", 32);
  const q = g.input("q", [Q, 2, 8], "f32");
  const k = g.state("k", [32, 2, 8], "f32"), v = g.state("v", [32, 2, 4], "f32");
  const rows = g.input("rows", [Q], "i32"), segment = g.input("segment", [P], "i32");
  assertEquals(attentionRows(g, { q, k, v, segment, rows }, { scale: 0.5 }).shape, [Q, 2, 4]);
  const long = g.input("long", [sym("L", 33)], "i32");
  assertThrows(
    () => attentionRows(g, { q, k, v, segment: long, rows }, { scale: 0.5, name: "vis" }),
    Error,
    "longer than k",
  );
});

Deno.test("attention_rows: each query row ≡ that row of attention over the batch, bit for bit", () => {
  let s = 11;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const [n, h, d] = [9, 2, 4];
  const q = randomF32([n, h, d], rand), k = randomF32([n, h, d], rand), v = randomF32([n, h, d], rand);
  const seg = i32([n], [0, 0, 0, 0, 1, 1, 1, 1, 1]);
  const whole = runReference(attentionOp, [q, k, v, seg], { scale: 0.5 });
  const picks = [8, 0, 4, 3];
  const qRows = f32(
    [picks.length, h, d],
    picks.flatMap((r) => Array.from(q.data.subarray(r * h * d, (r + 1) * h * d))),
  );
  // Keys and values in longer buffers: rows past the segment's length are never read.
  const pad = (t: typeof k) => f32([n + 3, h, d], [...t.data, ...new Array(3 * h * d).fill(1e6)]);
  const part = runReference(attentionRowsOp, [qRows, pad(k), pad(v), seg, i32([picks.length], picks)], { scale: 0.5 });
  picks.forEach((r, i) => {
    assertEquals(
      Array.from(part.data.subarray(i * h * d, (i + 1) * h * d)),
      Array.from(whole.data.subarray(r * h * d, (r + 1) * h * d)),
      `row ${r}`,
    );
  });
  assertThrows(
    () => runReference(attentionRowsOp, [qRows, k, v, seg, i32([4], [0, 1, 9, 2])], { scale: 0.5 }),
    RangeError,
    "row 9",
  );
});
