import { assert, assertEquals, assertRejects, assertThrows } from "../../../tests/assert.ts";
import { GraphBuilder } from "../../../graph/builder.ts";
import { embedding, matmul, rmsNorm, swiglu } from "../../../ops/mod.ts";
import { weightBytes } from "../../backend.ts";
import { runGraph } from "../../execute.ts";
import { maxShape, tensorTable, type WeightDecl } from "../../../graph/ir.ts";
import { memorySource } from "../../../weights/memory_source.ts";
import { f32ToBytes } from "../../../weights/codecs.ts";
import { onnxBackend } from "./backend.ts";

const probe = await onnxBackend.probe().then((s) => ({ score: s, error: "" }), (e) => ({ score: 0, error: `${e}` }));
const available = probe.score > 0;

Deno.test("onnx backend: loads under CI (its absence elsewhere is a skipped test, not a pass)", () => {
  // CI installs it from the npm registry through Deno's npm client: not loading there is a failure.
  if (Deno.env.get("CI") === "true") assert(available, `onnx probe failed under CI: ${probe.error}`);
  if (available) assert(probe.score < 10, "onnx must rank below wasm (10) so that auto stays wasm");
  else assert(probe.error.includes("onnxruntime-node"), probe.error);
});

Deno.test("onnx backend: the library's module graph does not include onnxruntime-node", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    // As a user outside this repository sees it: no deno.json (whose import map names the package for benches).
    args: ["info", "--json", "--no-config", "--no-lock", new URL("../../../mod.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const graph = new TextDecoder().decode(out.stdout);
  assert(graph.includes("runtime/backends/onnx/backend.ts"), "mod.ts reaches the onnx backend (through the registry)");
  assert(!graph.includes("onnxruntime"), "mod.ts's module graph pulls in onnxruntime-node");
});

Deno.test({
  name: "onnx backend: buffers queue behind runs, weight sizes, support, errors name the segment",
  ignore: !available,
  async fn() {
    const backend = await onnxBackend.create({ threads: 1 });
    try {
      const buf = backend.alloc(16);
      backend.write({ buffer: buf, offset: 4 }, new Float32Array([1, 2]));
      assertEquals([...new Float32Array((await backend.read({ buffer: buf, offset: 4 }, 8)).buffer)], [1, 2]);
      assertThrows(() => backend.write({ buffer: buf, offset: 12 }, new Float32Array(2)), RangeError);
      backend.fill({ buffer: buf, offset: 0 }, 4, 0xff);
      backend.copy({ buffer: buf, offset: 0 }, { buffer: buf, offset: 12 }, 4);
      assertEquals([...new Uint8Array(await backend.read({ buffer: buf, offset: 12 }, 4))], [255, 255, 255, 255]);
      assertEquals(weightBytes(backend, [8, 64], "q8"), 512 + 4 * 16); // codes, then a scale per 32
      assertEquals(weightBytes(backend, [8, 32], "bf16"), 8 * 32 * 4); // dequantised to f32 at upload

      const g = new GraphBuilder();
      const ids = g.input("ids", [3], "i32");
      const h = embedding(g, ids, g.weight("table", [4, 32], "bf16"), { name: "embed" });
      const n = rmsNorm(g, h, g.weight("norm", [32], "f32"), { eps: 1e-5 });
      const up = matmul(g, n, g.weight("gate_up", [16, 32], "q8"));
      const y = matmul(g, swiglu(g, up), g.weight("down", [5, 8], "f8e4m3"));
      g.output("y", y);
      const graph = g.build();
      const weights = new Map<string, Float32Array>();
      for (const w of graph.weights) {
        weights.set(
          w.name,
          Float32Array.from({ length: (w.shape as number[]).reduce((a, b) => a * b) }, (_, i) => Math.sin(i)),
        );
      }
      const sources = (d: WeightDecl) =>
        memorySource({
          name: d.name,
          shape: maxShape(d.shape),
          dtype: "f32",
          data: f32ToBytes(weights.get(d.name)!, "f32"),
        }, d.dtype);
      const table = tensorTable(graph);
      for (const node of graph.nodes) assert(backend.supports(node, node.inputs.map((i) => table[i])), node.op);
      // A q8 weight whose K is not a multiple of 32 does not lower to MatMulNBits.
      const odd = matmul(g, g.input("x", [2, 40], "f32"), g.weight("odd", [3, 40], "q8"));
      const oddNode = g.build().nodes.find((x) => x.id === odd.id)!;
      assert(!backend.supports(oddNode, oddNode.inputs.map((i) => tensorTable(g.build())[i])));
      const out = await runGraph(graph, backend, { weights: sources, inputs: { ids: new Int32Array([3, 0, 1]) } });
      assertEquals((out.y as Float32Array).length, 15);
      assert((out.y as Float32Array).every(Number.isFinite));
      // An id outside the table: ORT's Gather refuses it, and the error names the segment's first node.
      await assertRejects(
        () => runGraph(graph, backend, { weights: sources, inputs: { ids: new Int32Array([3, 9, 1]) } }),
        Error,
        `embedding "embed"`,
      );
    } finally {
      backend.dispose();
    }
  },
});
