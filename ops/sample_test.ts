import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { f32, i32, runReference } from "./op.ts";
import { sample, sampleOp, sampleRow } from "./sample.ts";

Deno.test("sample: one i32 per row; per-row params must match rows", () => {
  const g = new GraphBuilder();
  const R = sym("R", 4);
  const inputs = {
    logits: g.input("logits", [R, 10], "f32"),
    temperature: g.input("temperature", [R], "f32"),
    topK: g.input("top_k", [R], "i32"),
    topP: g.input("top_p", [R], "f32"),
    uniform: g.input("uniform", [R], "f32"),
    maskRow: g.input("mask_row", [R], "i32"),
    mask: g.input("mask", [sym("C", 4), 1], "i32"),
  };
  const ids = sample(g, inputs);
  assertEquals(ids.shape, [R]);
  assertEquals(ids.dtype, "i32");
  assertThrows(() => sample(g, { ...inputs, topK: g.input("k_f", [R], "f32") }), Error, "topK must be i32");
  assertThrows(() => sample(g, { ...inputs, mask: g.input("m2", [2, 2], "i32") }), Error, "mask words");
});

Deno.test("sample: greedy at temperature 0, lowest index on ties", () => {
  assertEquals(sampleRow([1, 3, 2], 0, 0, 1, 0.5), 1);
  assertEquals(sampleRow([5, 1, 5], 0, 0, 1, 0.9), 0);
});

Deno.test("sample: inverse CDF over the sorted, filtered distribution", () => {
  // logits [0, ln 3] at T = 1 → p = [.25, .75]; order [1, 0].
  const l = [0, Math.log(3)];
  assertEquals(sampleRow(l, 1, 0, 1, 0.5), 1); // cum .75 > .5
  assertEquals(sampleRow(l, 1, 0, 1, 0.8), 0); // .75 ≤ .8 < 1
  assertEquals(sampleRow(l, 1, 1, 1, 0.99), 1); // top-k 1
  assertEquals(sampleRow(l, 1, 0, 0.7, 0.99), 1); // top-p .7: .75 already reaches it
  assertEquals(sampleRow(l, 1, 0, 0.8, 0.99), 0); // top-p .8 keeps both
  assertEquals(sampleRow([0, Math.log(9)], 2, 0, 1, 0.8), 0); // T = 2 halves the logits → same .25/.75
});

Deno.test("sample: the op applies per-row parameters", () => {
  const y = runReference(sampleOp, [
    f32([2, 3], [1, 3, 2, 0, Math.log(3), -50]),
    f32([2], [0, 1]),
    i32([2], [0, 0]),
    f32([2], [1, 1]),
    f32([2], [0.3, 0.8]),
    i32([2], [-1, -1]),
    i32([0, 1], []),
  ]);
  assertEquals(Array.from(y.data), [1, 0]);
});

Deno.test("sample: masked ids are dropped before argmax, top-k and top-p; bits past V are ignored", () => {
  const l = [5, 4, 3, 2, 1];
  const only = (...ids: number[]) => [ids.reduce((w, id) => w | (1 << id), 0)];
  assertEquals(sampleRow(l, 0, 0, 1, 0, only(2, 4)), 2); // greedy: the best allowed
  assertEquals(sampleRow(l, 1, 1, 1, 0.99, only(3, 4)), 3); // top-k 1 among the allowed
  assertEquals(sampleRow(l, 1, 0, 1, 0.99, only(1)), 1); // a single allowed id, whatever u
  assertEquals(sampleRow(l, 1, 0, 1, 0.5, only(7, 31)), -1); // bits past V only: nothing allowed
  assertEquals(sampleRow(l, 0, 0, 1, 0.5, [0]), -1);
  // Row 0 obeys mask 1, row 1 none, row 2 mask 0.
  const y = runReference(sampleOp, [
    f32([3, 5], [...l, ...l, ...l]),
    f32([3], [0, 0, 0]),
    i32([3], [0, 0, 0]),
    f32([3], [1, 1, 1]),
    f32([3], [0, 0, 0]),
    i32([3], [1, -1, 0]),
    i32([2, 1], [...only(3), ...only(4)]),
  ]);
  assertEquals(Array.from(y.data), [4, 0, 3]);
});
