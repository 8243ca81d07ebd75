import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { add } from "../ops/add.ts";
import { matmul } from "../ops/matmul.ts";
import { alignUp, type BackendCaps, makeSegment, storageBytes, storageDType } from "./backend.ts";

const CAPS: BackendCaps = {
  alignment: 64,
  dtypes: ["f32", "i32", "bf16"],
  promote: { f8e4m3: "bf16" },
  memoryBytes: Infinity,
  maxBindingBytes: Infinity,
  activationDType: "f32",
};

Deno.test("backend: storage dtypes and sizes", () => {
  assertEquals(storageDType(CAPS, "bf16"), "bf16");
  assertEquals(storageDType(CAPS, "f8e4m3"), "bf16");
  assertThrows(() => storageDType(CAPS, "nvfp4"), Error, "cannot be stored");
  const T = sym("T", 10);
  assertEquals(storageBytes(CAPS, [T, 3], "f8e4m3"), 60); // at max: 10 × 3 × 2 B
  assertEquals(storageBytes(CAPS, [T, 3], "f32", { T: 2 }), 24);
  assertEquals(alignUp(65, 64), 128);
});

Deno.test("backend: makeSegment finds boundary tensors", () => {
  const g = new GraphBuilder();
  const x = g.input("x", [2, 3], "f32"); // 0
  const w = g.weight("w", [3, 3], "bf16"); // 1
  const a = matmul(g, x, w); // 2
  const b = add(g, a, x); // 3
  const c = matmul(g, b, w); // 4
  const d = add(g, c, a); // 5
  g.output("d", d);
  g.output("b", b);
  const graph = g.build();
  assertEquals(makeSegment(graph, [2, 3]), { graph, nodes: [2, 3], inputs: [0, 1], outputs: [2, 3] });
  assertEquals(makeSegment(graph, [4, 5]), { graph, nodes: [4, 5], inputs: [3, 1, 2], outputs: [5] });
  assertEquals(makeSegment(graph, [2, 3, 4, 5]).outputs, [3, 5]);
  assertThrows(() => makeSegment(graph, [0]), Error, "not nodes");
});
