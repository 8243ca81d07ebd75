import { assert, assertEquals, assertRejects, assertThrows } from "../../../tests/assert.ts";
import { IN_CI, instrumentedAdapter, WEBGPU_IGNORE, WEBGPU_MISSING } from "../../../tests/webgpu_helpers.ts";
import { GraphBuilder } from "../../../graph/builder.ts";
import { matmul } from "../../../ops/matmul.ts";
import { moeExperts } from "../../../ops/moe_experts.ts";
import { moeGate } from "../../../ops/moe_gate.ts";
import { moeTopK } from "../../../ops/moe_topk.ts";
import { DeviceLostError, OutOfMemoryError } from "../../backend.ts";
import { BACKENDS, BackendUnavailableError, createBackend } from "../../registry.ts";
import { PlanExecutor } from "../../plan_executor.ts";
import { schedule } from "../../schedule.ts";
import { memorySource } from "../../../weights/memory_source.ts";
import { f32ToBytes } from "../../../weights/codecs.ts";
import { wasmBackend } from "../wasm/backend.ts";
import { makeWebgpuFactory, webgpuBackend } from "./backend.ts";

Deno.test({
  name: "webgpu: an adapter is found here (under CI=true, lavapipe must be installed)",
  ignore: WEBGPU_IGNORE,
  async fn() {
    assertEquals(WEBGPU_MISSING, undefined, `no WebGPU adapter${IN_CI ? " under CI=true" : ""}: ${WEBGPU_MISSING}`);
    const adapter = (await navigator.gpu.requestAdapter())!;
    const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    console.log(
      `adapter: ${info.description || info.vendor}, fallback ${info.isFallbackAdapter}, shader-f16 ` +
        `${
          adapter.features.has("shader-f16")
        }, maxStorageBufferBindingSize ${adapter.limits.maxStorageBufferBindingSize}` +
        `, maxBufferSize ${adapter.limits.maxBufferSize}`,
    );
    const score = await webgpuBackend.probe();
    assertEquals(score, info.isFallbackAdapter ? 2 : 5);
    // Below wasm wherever wasm runs, so `auto` never serves on this backend.
    assert(score < await wasmBackend.probe(), "webgpu scores below wasm");
    const auto = await createBackend("auto");
    assert(auto.name !== "webgpu", "auto picked webgpu");
    auto.dispose();
    assert(BACKENDS.includes(webgpuBackend));
  },
});

Deno.test("webgpu: no WebGPU, or no adapter, is an error naming what is missing", async () => {
  const none = makeWebgpuFactory(() => undefined);
  await assertRejects(() => createBackend("webgpu", {}, [none]), BackendUnavailableError, "navigator.gpu is undefined");
  const noAdapter = makeWebgpuFactory(() => ({ requestAdapter: () => Promise.resolve(null) }) as unknown as GPU);
  const e = await assertRejects(() => createBackend("webgpu", {}, [noAdapter]), BackendUnavailableError);
  assert(/found no GPU adapter.*mesa-vulkan-drivers/.test(e.message), e.message);
  assertEquals(await noAdapter.probe().catch(() => 0), 0);
});

Deno.test({
  name: "webgpu: write, read (unaligned too), copy and fill are ordered on the queue",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const b = await webgpuBackend.create();
    try {
      // Quantised weights are held as codes then scales: [4, 64] q8 is 256 B of codes and 8 scales.
      assertEquals(b.weightBytes([4, 64], "q8"), 256 + 4 * 8);
      assertEquals(b.weightBytes([3, 5], "f8e4m3"), 16 + 4 * 3);
      assertEquals(b.weightBytes([3, 5], "bf16"), 30);
      // q4: each K-row's blocks of 16 code bytes, then its f16 scales from a new word (3 blocks: 2 words).
      assertEquals(b.weightBytes([4, 64], "q4"), 4 * (32 + 4));
      assertEquals(b.weightBytes([2, 65], "q4"), 2 * (48 + 8));
      const buf = b.alloc(64), other = b.alloc(30);
      b.write({ buffer: buf, offset: 0 }, Uint8Array.from({ length: 64 }, (_, i) => i));
      assertEquals([...await b.read({ buffer: buf, offset: 6 }, 5)], [6, 7, 8, 9, 10]);
      b.copy({ buffer: buf, offset: 16 }, { buffer: other, offset: 4 }, 8);
      b.fill({ buffer: buf, offset: 16 }, 8, 0);
      b.fill({ buffer: buf, offset: 24 }, 4, 7);
      assertEquals([...await b.read({ buffer: other, offset: 4 }, 8)], [16, 17, 18, 19, 20, 21, 22, 23]);
      assertEquals([...await b.read({ buffer: buf, offset: 14 }, 16)], [
        14,
        15,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        7,
        7,
        7,
        7,
        28,
        29,
      ]);
      assertThrows(() => b.copy({ buffer: buf, offset: 0 }, { buffer: buf, offset: 4 }, 8), RangeError, "overlaps");
      assertThrows(() => b.write({ buffer: other, offset: 28 }, new Uint8Array(4)), RangeError, "overflows");
      await b.sync();
      b.free(other);
      assertThrows(() => b.fill({ buffer: other, offset: 0 }, 4, 0), Error, "not a live webgpu buffer");
    } finally {
      b.dispose();
    }
  },
});

Deno.test({
  name: "webgpu: out of memory names the tensor; a buffer over maxBufferSize is refused at once",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const g = new GraphBuilder();
    g.output("y", matmul(g, g.input("x", [2, 16], "f32"), g.weight("proj.weight", [40, 16], "f32")));
    const graph = g.build();
    const roomy = await webgpuBackend.create();
    // The plan is made for a backend with room; the one running it holds 2 KiB, less than the 2,560 B weight.
    const small = await webgpuBackend.create({ memoryBytes: 2048 });
    try {
      const big = (await navigator.gpu.requestAdapter())!.limits.maxBufferSize + 4;
      const e = assertThrows(() => roomy.alloc(big), OutOfMemoryError);
      assert(e.message.includes("maxBufferSize"), e.message);
      const plan = schedule(graph, [roomy]);
      const data = f32ToBytes(new Float32Array(640), "f32");
      const weights = () => memorySource({ name: "proj.weight", shape: [40, 16], dtype: "f32", data }, "f32");
      const oom = await assertRejects(() => PlanExecutor.create(graph, plan, [small], { weights }), OutOfMemoryError);
      assert(oom.message.includes("proj.weight"), oom.message);
    } finally {
      roomy.dispose();
      small.dispose();
    }
  },
});

Deno.test({
  name: "webgpu: a bf16 weight whose chunks end inside 32-bit words uploads bit-exactly",
  ignore: WEBGPU_IGNORE,
  async fn() {
    // 7 values (14 B) a row: 4 MiB chunks of 299,593 rows end halfway through a word, which waits for the next.
    const shape = [400_000, 7], n = shape[0] * shape[1];
    const data = new Uint8Array(2 * n);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
    const b = await webgpuBackend.create();
    try {
      const buffer = b.alloc(b.weightBytes(shape, "bf16"));
      const decl = { id: 0, name: "w", shape, dtype: "bf16" as const };
      const source = memorySource({ name: "w", shape, dtype: "bf16", data }, "bf16");
      await b.uploadWeight(
        { decl, storage: "bf16", parts: [{ view: { buffer, offset: 0 }, row0: 0, rows: shape[0] }] },
        source,
        [],
      );
      const back = await b.read({ buffer, offset: 0 }, data.length);
      assertEquals(back.findIndex((v, i) => v !== data[i]), -1);
    } finally {
      b.dispose();
    }
  },
});

Deno.test({
  name: "webgpu: a lost device is a DeviceLostError naming the call; a read waiting on it rejects instead of hanging",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const { adapter, devices } = await instrumentedAdapter();
    const b = await webgpuBackend.create({ adapter } as never);
    try {
      const buf = b.alloc(16);
      b.write({ buffer: buf, offset: 0 }, new Uint8Array(16));
      const reading = b.read({ buffer: buf, offset: 0 }, 16);
      devices[0].destroy(); // as a driver reset or a GPU process crash would; its reason is "destroyed" all the same
      // Destroyed before the event loop could settle the map: the read rejects with the loss (it never hangs).
      await assertRejects(() => reading, DeviceLostError, "seen by read");
      await devices[0].lost;
      const lost = await assertRejects(() => b.sync(), DeviceLostError, "the GPU device was lost");
      assertEquals([lost.backend, lost.call], ["webgpu", "sync"]);
      assert(lost.reason.startsWith("destroyed"), lost.reason);
      assertThrows(() => b.write({ buffer: buf, offset: 0 }, new Uint8Array(4)), DeviceLostError, "seen by write");
      await assertRejects(() => b.read({ buffer: buf, offset: 0 }, 4), DeviceLostError, "seen by read");
      assertThrows(() => b.alloc(4), DeviceLostError, "seen by alloc");
      assertEquals((await b.lost!).call, "device.lost", "the watcher resolves");
    } finally {
      b.dispose();
    }
  },
});

Deno.test({
  name:
    "webgpu: the device out of memory names the tensor: a weight, a kernel's scratch (asked again next run), an arena",
  ignore: WEBGPU_IGNORE,
  async fn() {
    // x → h = x·W1ᵀ → routed experts of h: the expert kernels' scratch is the segment's own, made at the first run.
    const g = new GraphBuilder();
    const h = matmul(g, g.input("x", [2, 16], "f32"), g.weight("w1", [8, 16], "f32"));
    const logits = g.input("logits", [2, 4], "f32");
    const ids = moeTopK(g, logits, { topK: 2 });
    const experts = moeExperts(
      g,
      h,
      ids,
      moeGate(g, logits, ids),
      g.weight("gate_up", [4, 6, 8], "f32"),
      g.weight("down", [4, 8, 3], "f32"),
      { name: "experts" },
    );
    g.output("y", experts);
    const graph = g.build();
    let inject: "weight" | "own" | "first alloc" | undefined;
    const { adapter } = await instrumentedAdapter((d) => {
      const allocated = (d.usage & GPUBufferUsage.COPY_SRC) !== 0; // alloc()'s buffers; a segment's own are not
      if (inject === "first alloc" && allocated) return (inject = undefined, true);
      return inject === "weight" ? d.size === 512 : inject === "own" && !allocated;
    });
    const b = await webgpuBackend.create({ adapter } as never);
    try {
      const plan = schedule(graph, [b]);
      const data = (n: number) => f32ToBytes(Float32Array.from({ length: n }, (_, i) => (i % 7) - 3), "f32");
      const weights = (w: { name: string; shape: readonly (number | unknown)[] }) => {
        const shape = w.shape as number[];
        return memorySource({ name: w.name, shape, dtype: "f32", data: data(shape.reduce((a, b) => a * b)) }, "f32");
      };
      inject = "weight"; // w1: 8 × 16 f32 = 512 B
      const e = await assertRejects(() => PlanExecutor.create(graph, plan, [b], { weights }), OutOfMemoryError);
      assert(e.message.includes("w1"), e.message);
      inject = undefined;
      const ex = await PlanExecutor.create(graph, plan, [b], { weights });
      const x = Float32Array.from({ length: 32 }, (_, i) => i / 8), logits = Float32Array.of(1, 2, 3, 4, 4, 3, 2, 1);
      inject = "own";
      const run = await assertRejects(() => ex.run({ inputs: { x, logits } }), OutOfMemoryError);
      assert(run.message.includes('of moe_experts "experts"'), run.message);
      inject = undefined;
      const y = (await ex.run({ inputs: { x, logits } })).y as Float32Array;
      assert(y.length === 16 && y.some((v) => v !== 0), `the next run makes the buffers again: ${y}`);
      ex.dispose();
      // The executor's first buffer (an arena): the device says so at the first run's read, by the tensors bound in it.
      inject = "first alloc";
      const arena = await PlanExecutor.create(graph, plan, [b], { weights });
      const late = await assertRejects(() => arena.run({ inputs: { x, logits } }), OutOfMemoryError);
      assert(/the buffer of \S/.test(late.message), late.message);
      arena.dispose();
    } finally {
      b.dispose();
    }
  },
});
