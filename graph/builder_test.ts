import { assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "./builder.ts";
import { graphSymbols, resolveShape, sym, tensorTable } from "./ir.ts";
import { embedding } from "../ops/embedding.ts";
import { matmul, matmulOp } from "../ops/matmul.ts";
import { rmsNorm } from "../ops/rms_norm.ts";

function small() {
  const g = new GraphBuilder();
  const T = sym("T", 32);
  const ids = g.input("ids", [T], "i32");
  const table = g.weight("embed", [10, 4], "bf16");
  g.layer = 0;
  const h = g.name(embedding(g, ids, table), "embed");
  const n = rmsNorm(g, h, g.weight("layers.0.norm", [4], "bf16"), { eps: 1e-6, name: "norm" });
  g.layer = undefined;
  const y = g.name(matmul(g, n, g.weight("head", [3, 4], "f8e4m3")), "head");
  g.output("logits", y);
  return g.build();
}

Deno.test("builder: one id space over inputs, weights and nodes; shapes inferred", () => {
  const graph = small();
  assertEquals(graph.inputs.map((i) => i.id), [0]);
  assertEquals(graph.weights.map((w) => [w.id, w.name, w.dtype]), [
    [1, "embed", "bf16"],
    [3, "layers.0.norm", "bf16"],
    [5, "head", "f8e4m3"],
  ]);
  assertEquals(graph.nodes.map((n) => [n.id, n.op, n.name, n.layer, n.inputs]), [
    [2, "embedding", "embed", 0, [0, 1]],
    [4, "rms_norm", "norm", 0, [2, 3]],
    [6, "matmul", "head", undefined, [4, 5]],
  ]);
  assertEquals("layer" in graph.nodes[2], false); // absent, not undefined: JSON stays exact
  assertEquals(graph.nodes[2].shape, [{ sym: "T", max: 32 }, 3]);
  assertEquals(graph.outputs, [{ name: "logits", id: 6 }]);
  assertEquals(tensorTable(graph).map((t) => t.kind), ["input", "weight", "node", "weight", "node", "weight", "node"]);
  assertEquals(graphSymbols(graph), { T: 32 });
  assertEquals(resolveShape(graph.nodes[2].shape, { T: 7 }), [7, 3]);
});

Deno.test("builder: graphs round-trip through JSON", () => {
  const graph = small();
  assertEquals(JSON.parse(JSON.stringify(graph)), graph);
});

Deno.test("builder: shape errors name the node, its inputs and layer", () => {
  const g = new GraphBuilder();
  g.layer = 3;
  const x = g.input("x", [2, 4], "f32");
  assertThrows(
    () => matmul(g, x, g.weight("w", [5, 3], "bf16"), { name: "q_a_proj" }),
    Error,
    'matmul #2 "q_a_proj" (layer 3): K (last dim of x vs w[1]): 4 ≠ 3 (inputs: x=[2, 4] f32, w=[5, 3] bf16)',
  );
  assertThrows(() => g.op(matmulOp, [x]), Error, "expects inputs (x, w)");
});

Deno.test("builder: declarations are checked", () => {
  const g = new GraphBuilder();
  const a = g.input("a", [sym("T", 8), 2], "f32");
  assertThrows(() => g.input("a", [2], "f32"), Error, "declared twice");
  assertThrows(() => g.input("b", [sym("T", 16)], "f32"), Error, "symbol T has max 16, elsewhere 8");
  assertThrows(() => g.state("cache", [sym("T", 8), 4], "f32"), Error, "must be concrete");
  const w = g.weight("w", [2, 2], "bf16");
  assertEquals(g.weight("w", [2, 2], "bf16"), w);
  assertThrows(() => g.weight("w", [2, 3], "bf16"), Error, "redeclared");
  const other = new GraphBuilder().input("z", [2, 2], "f32");
  assertThrows(() => matmul(g, other, w), Error, "does not belong");
  assertThrows(() => g.name(a, "x"), Error, "only op results");
  assertThrows(() => g.build(), Error, "no outputs");
  g.output("a", a);
  assertThrows(() => g.output("a", a), Error, "twice");
  assertEquals(g.build().inputs[0].state, false);
});
