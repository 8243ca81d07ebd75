import { assert, assertEquals, assertRejects, assertThrows } from "../../../tests/assert.ts";
import { IN_CI, WEBGPU_IGNORE, WEBGPU_MISSING } from "../../../tests/webgpu_helpers.ts";
import { GraphBuilder } from "../../../graph/builder.ts";
import { matmul } from "../../../ops/matmul.ts";
import { OutOfMemoryError } from "../../backend.ts";
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
  name: "webgpu: a lost device is reported: the next call names it instead of hanging",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const adapter = (await navigator.gpu.requestAdapter())!;
    let device: GPUDevice | undefined;
    const wrapped = Object.create(adapter);
    wrapped.requestDevice = async (d?: GPUDeviceDescriptor) => (device = await adapter.requestDevice(d));
    for (const k of ["info", "features", "limits"] as const) Object.defineProperty(wrapped, k, { value: adapter[k] });
    const b = await webgpuBackend.create({ adapter: wrapped } as never);
    try {
      const buf = b.alloc(16);
      device!.destroy(); // as a driver reset or a GPU process crash would
      await device!.lost;
      await new Promise((r) => setTimeout(r, 0));
      await assertRejects(() => b.sync(), Error, "the GPU device was lost");
      assertThrows(() => b.write({ buffer: buf, offset: 0 }, new Uint8Array(4)), Error, "the GPU device was lost");
    } finally {
      b.dispose();
    }
  },
});
