import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { GraphBuilder } from "../../graph/builder.ts";
import { tensorTable } from "../../graph/ir.ts";
import { matmul } from "../../ops/matmul.ts";
import { rmsNorm } from "../../ops/rms_norm.ts";
import { makeSegment } from "../backend.ts";
import { createNullBackend, nullBackend } from "./null.ts";
import { zeroWeight } from "../../tests/schedule_helpers.ts";

Deno.test("null backend: records every call, checks bindings, computes nothing", async () => {
  assertEquals(await nullBackend.probe(), 0);
  const be = createNullBackend({ name: "fake", ops: ["matmul"], caps: { memoryBytes: 100 } });
  const g = new GraphBuilder();
  const x = g.input("x", [2, 4], "f32");
  const y = matmul(g, x, g.weight("w", [3, 4], "bf16"));
  g.output("y", rmsNorm(g, y, g.weight("n", [3], "bf16"), { eps: 1e-6 }));
  const graph = g.build();
  const table = tensorTable(graph);
  const supported = graph.nodes.map((n) => be.supports(n, n.inputs.map((i) => table[i])));
  assertEquals(supported, [true, false]);

  const buf = be.alloc(64);
  assertThrows(() => be.alloc(64), Error, "out of memory");
  be.write({ buffer: buf, offset: 0 }, new Float32Array(8));
  assertEquals((await be.read({ buffer: buf, offset: 32 }, 32)).length, 32);
  const seg = makeSegment(graph, [2]);
  const prepared = await be.prepare(seg);
  assertThrows(() => be.run(prepared, new Map(), {}, new Map()), Error, "unbound");
  const view = { buffer: buf, offset: 0 };
  be.run(prepared, new Map([[0, view], [1, view], [2, view]]), { T: 1 }, new Map());
  await be.sync();
  be.free(buf);
  assertEquals(be.calls.map((c) => c.method), ["alloc", "write", "read", "prepare", "run", "sync", "free"]);
  const run = be.calls[4];
  assert(run.method === "run");
  assertEquals(run.nodes, [2]);
  assertEquals(run.bindings.map(([id]) => id), [0, 1, 2]);
});

Deno.test("null backend: records copy, fill, transfer and uploadWeight (parts, consumers, chunks read)", async () => {
  const gpu = createNullBackend({ name: "gpu", transfersTo: ["cpu"] });
  const cpu = createNullBackend({ name: "cpu" });
  const a = gpu.alloc(256), b = gpu.alloc(256), c = cpu.alloc(256);
  gpu.copy({ buffer: a, offset: 0 }, { buffer: b, offset: 64 }, 128);
  gpu.fill({ buffer: a, offset: 32 }, 64, 0);
  assertEquals(await gpu.transfer!({ buffer: a, offset: 0 }, cpu, { buffer: c, offset: 0 }, 256), true);
  assertEquals(cpu.transfer, undefined); // no direct path: the executor reads then writes
  assertThrows(() => gpu.copy({ buffer: a, offset: 200 }, { buffer: b, offset: 0 }, 128), RangeError, "overflows");
  assertThrows(() => gpu.fill({ buffer: a, offset: 0 }, 512, 0), RangeError, "overflows");

  const g = new GraphBuilder();
  const w = g.weight("w", [6, 4], "f32");
  g.output("y", matmul(g, g.input("x", [1, 4], "f32"), w));
  const graph = g.build(), decl = graph.weights[0];
  const parts = [
    { view: { buffer: a, offset: 0 }, row0: 0, rows: 4 },
    { view: { buffer: b, offset: 0 }, row0: 4, rows: 2 },
  ];
  await gpu.uploadWeight({ decl, storage: "f32", parts }, zeroWeight(decl), graph.nodes);
  const up = gpu.calls.find((x) => x.method === "uploadWeight");
  assert(up?.method === "uploadWeight");
  assertEquals([up.weight, up.parts, up.consumers, up.chunks, up.bytes], [
    "w",
    [[a.id, 0, 0, 4], [b.id, 0, 4, 2]],
    [
      graph.nodes[0].id,
    ],
    2,
    96,
  ]);
  assertEquals(gpu.calls.map((x) => x.method), ["alloc", "alloc", "copy", "fill", "transfer", "uploadWeight"]);
});
