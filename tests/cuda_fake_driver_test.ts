/**
 * The cuda backend's host code against a fake driver (tests/fake_libcuda.c, built by clang-19 at test time and
 * loaded through the same `Deno.dlopen` path as libcuda.so.1): probe reasons, error mapping, uploads staged through
 * pinned memory, stream ordering, and the launches of whole ops and a whole `tiny` forward step (kernel, grid and
 * block per op and shape, and the argument block each launch packs). The fake's device memory is host memory, so
 * copies really move bytes; kernels do not run (their results are checked on a GPU by bench/cuda_check.sh).
 *
 * @module
 */

import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { type FakeCall, fakeLibcuda, launchOf, withFake } from "./cuda_helpers.ts";
import { makeCudaFactory, probeCuda } from "../runtime/backends/cuda/backend.ts";
import { CudaError } from "../runtime/backends/cuda/ffi.ts";
import { matvecGroup, mmaGemm } from "../runtime/backends/cuda/ops.ts";
import { deviceLost, DeviceLostError, makeSegment, OutOfMemoryError } from "../runtime/backend.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import * as ops from "../ops/mod.ts";
import { RandomTensorSource } from "../weights/random_source.ts";
import { greedySampling, loadModel } from "../engine/model.ts";
import { PROMPT } from "./model_helpers.ts";

const lib = await fakeLibcuda();
const ignore = lib === undefined;

Deno.test({
  name: "cuda fake driver: probe reasons (no library, cuInit failing, old driver, no device) and a usable device",
  ignore,
  async fn() {
    const missing = probeCuda({ libcuda: "/nonexistent/libcuda.so.1" });
    assert(!missing.ok && missing.reason.startsWith("no NVIDIA driver (/nonexistent/libcuda.so.1 not found): "));
    await withFake({ fail: "cuInit:100" }, () => {
      const r = probeCuda({ libcuda: lib });
      assert(!r.ok && r.reason.startsWith("cuInit failed: CUDA_ERROR_NO_DEVICE (100): no NVIDIA GPU is visible"));
      return Promise.resolve();
    });
    await withFake({ version: 12080 }, () => {
      const r = probeCuda({ libcuda: lib });
      assert(
        !r.ok && r.reason.includes("supports CUDA 12.8") && r.reason.includes("need CUDA 13.0"),
        JSON.stringify(r),
      );
      return Promise.resolve();
    });
    await withFake({ devices: 0 }, () => {
      const r = probeCuda({ libcuda: lib });
      assert(!r.ok && r.reason.includes("found no CUDA device"), JSON.stringify(r));
      return Promise.resolve();
    });
    await withFake({}, async () => {
      const r = probeCuda({ libcuda: lib });
      assert(r.ok);
      assertEquals(r.device.name, "Fake GPU 0");
      assertEquals(r.device.capability, [9, 0]);
      assertEquals(await makeCudaFactory({ libcuda: lib }).probe(), 5);
    });
  },
});

Deno.test({
  name: "cuda fake driver: writes are staged through pinned slots on the one stream; read-back returns the bytes",
  ignore,
  async fn() {
    await withFake({}, async (log) => {
      const b = await makeCudaFactory({ libcuda: lib, stagingBytes: 1 << 16, stagingSlots: 2 } as never).create();
      try {
        const n = 5 * (1 << 16) + 123;
        const data = new Uint8Array(n).map((_, i) => (i * 7 + 3) & 255);
        const view = { buffer: b.alloc(n + 512), offset: 256 };
        b.write(view, data);
        b.fill({ buffer: view.buffer, offset: 0 }, 256, 9);
        const back = await b.read(view, n);
        assertEquals(back, data);
        assertEquals(await b.read({ buffer: view.buffer, offset: 0 }, 4), new Uint8Array([9, 9, 9, 9]));
        // A read is queued when it is called: work queued after it does not change what it returns.
        const early = b.read({ buffer: view.buffer, offset: 0 }, 4);
        b.fill({ buffer: view.buffer, offset: 0 }, 4, 5);
        const late = b.read({ buffer: view.buffer, offset: 0 }, 4);
        assertEquals([...await early, ...await late], [9, 9, 9, 9, 5, 5, 5, 5]);
        const calls = log();
        const stream = calls.find((c) => c.call === "cuStreamCreate")!.args.stream;
        const pinned = calls.filter((c) => c.call === "cuMemAllocHost_v2").map((c) => c.args.host);
        // Two staging slots of 64 KiB, then the read buffer.
        assertEquals(calls.filter((c) => c.call === "cuMemAllocHost_v2").map((c) => c.args.bytes).slice(0, 2), [
          "65536",
          "65536",
        ]);
        const copies = calls.filter((c) => c.call === "cuMemcpyHtoDAsync_v2");
        assertEquals(copies.reduce((s, c) => s + Number(c.args.bytes), 0), n);
        assert(copies.every((c) => Number(c.args.bytes) <= 1 << 16));
        // Every copy reads one of the slots (at its start or inside it).
        const inSlot = (src: string) =>
          pinned.slice(0, 2).some((p) => BigInt(src) >= BigInt(p) && BigInt(src) < BigInt(p) + (1n << 16n));
        assert(copies.every((c) => inSlot(c.args.src)), "an upload did not come from pinned memory");
        // A slot is reused only after the event recorded behind its copies completed.
        const order = calls.map((c) => c.call);
        const firstSync = order.indexOf("cuEventSynchronize");
        assert(firstSync > order.indexOf("cuEventRecord") && order.indexOf("cuEventRecord") > 0);
        assert(order.filter((c) => c === "cuEventSynchronize").length >= 3, "three slot reuses for six pieces");
        // One stream for everything queued.
        const queued = calls.filter((c) => c.args.stream !== undefined && c.call !== "cuStreamCreate");
        assert(queued.length > 0 && queued.every((c) => c.args.stream === stream), "work queued on another stream");
      } finally {
        b.dispose();
      }
    });
  },
});

Deno.test({
  name: "cuda fake driver: driver errors name the call and the code; OOM is typed; a fatal error sticks",
  ignore,
  async fn() {
    const factory = makeCudaFactory({ libcuda: lib });
    await withFake({ fail: "cuMemAlloc_v2:2" }, async () => {
      const b = await factory.create();
      try {
        const e = assertThrows(() => b.alloc(1 << 20), OutOfMemoryError);
        assert(e.message.includes("cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY"), e.message);
        assertEquals(e.backend, "cuda");
      } finally {
        b.dispose();
      }
    });
    // The memory the device reports bounds what the backend allocates.
    await withFake({ mem: 1 << 20 }, async () => {
      const b = await factory.create();
      try {
        assertEquals(b.caps.memoryBytes, 1 << 20);
        assertThrows(() => b.alloc(2 << 20), OutOfMemoryError, "out of memory on cuda");
      } finally {
        b.dispose();
      }
    });
    // Names from cuGetErrorName, else the built-in table (the fake names only a few), else the number.
    for (
      const [code, name] of [[700, "CUDA_ERROR_ILLEGAL_ADDRESS"], [719, "CUDA_ERROR_LAUNCH_FAILED"], [
        4242,
        "CUDA_ERROR_4242",
      ]]
    ) {
      await withFake({ fail: `cuStreamSynchronize:${code}` }, async () => {
        const b = await factory.create();
        try {
          const thrown = await assertRejects(() => b.sync());
          // 700..799 leave the context unusable: the device is lost (a DeviceLostError, the server's 503
          // device_lost, caused by the driver's error), and every later call says so.
          const lost = deviceLost(thrown);
          const e = (lost ? lost.cause : thrown) as CudaError;
          assert(e instanceof CudaError, String(thrown));
          assertEquals(e.message, `cuStreamSynchronize failed: ${name} (${code})`);
          assertEquals([e.call, e.code, e.codeName], ["cuStreamSynchronize", code, name]);
          assertEquals(lost !== undefined, e.fatal, "fatal errors are a lost device");
          if (e.fatal) {
            assertEquals([lost!.backend, lost!.call], ["cuda", "cuStreamSynchronize"]);
            const later = assertThrows(() => b.alloc(16), DeviceLostError, `${name} (${code})`);
            assertEquals(later.call, "alloc");
          } else {
            b.alloc(16);
          }
        } finally {
          b.dispose();
        }
      });
    }
    await withFake({ fail: "cuModuleLoadData:218" }, async (log) => {
      await assertRejects(() => factory.create(), CudaError, "cuModuleLoadData failed: CUDA_ERROR_INVALID_PTX (218)");
      // What create made before the failure is released.
      const calls = log().map((c) => c.call);
      assert(calls.includes("cuStreamDestroy_v2") && calls.includes("cuDevicePrimaryCtxRelease_v2"), calls.join(" "));
    });
  },
});

/** The kernels the committed PTX defines. */
const ENTRIES = new Set(
  [
    ...Deno.readTextFileSync(new URL("../kernels/cuda/kernels.compute_90.ptx", import.meta.url))
      .matchAll(/\.entry (\w+)\(/g),
  ].map((m) => m[1]),
);

/** The grid and block ops.ts gives each kernel family for the words it packs (the rules the module docs state). */
function expectedShape(fn: string, w: number[]): { grid: number[]; block: number; smem?: number } {
  const family = fn.replace(/_(f32|bf16|f16|f8e4m3|q8|nvfp4|q4)$/, "");
  const blocks = (n: number) => Math.ceil(n / 256);
  switch (family) {
    case "rms_norm":
      return { grid: [w[0], 1, 1], block: 256 };
    case "matvec":
      assert(w[0] <= 8 && w[2] % matvecGroup(fn.slice("matvec_".length)) === 0, `matvec for M ${w[0]} K ${w[2]}`);
      return { grid: [Math.ceil(w[1] / 4), 1, 1], block: 128 };
    case "gemm":
      assert(!mmaGemm(fn.slice("gemm_".length), w[2]), `${fn} where gemm_mma runs: K ${w[2]}`);
      return { grid: [Math.ceil(w[1] / 64), Math.ceil(w[0] / 64), 1], block: 256 };
    case "gemm_mma":
      assert(mmaGemm(fn.slice("gemm_mma_".length), w[2]), `${fn} for K ${w[2]}`);
      return { grid: [Math.ceil(w[1] / 64), Math.ceil(w[0] / 64), 1], block: 128 };
    case "moe_act":
    case "moe_down":
      return { grid: [Math.ceil(w[0] / 4), 1, 1], block: 128 };
    case "moe_group":
      return { grid: [1, 1, 1], block: 1024, smem: 8 * (w[1] + 2) };
    case "moe_act_grouped":
      return { grid: [Math.ceil(w[2] / 64), w[4], 1], block: 256 };
    case "moe_down_grouped":
      return { grid: [Math.ceil(w[3] / 64), w[4], 1], block: 256 };
    case "mla_absorb":
      return { grid: [w[0] * w[1], 1, 1], block: 256, smem: 4 * w[2] };
    case "mla_split":
      return { grid: [w[0] * w[4], w[10], 1], block: 128 };
    case "mla_merge":
      return { grid: [w[0] * w[1], 1, 1], block: 256, smem: 4 * w[4] };
    case "attention":
      return { grid: [w[0] * w[2], 1, 1], block: 128, smem: 4 * (w[3] + 128) };
    case "sample":
      return { grid: [w[0], 1, 1], block: 256 };
    case "random_fill":
    case "random_amax":
    case "random_fp8":
      return { grid: [Math.min(blocks(w[0]), 65536), 1, 1], block: 256 };
    case "random_nvfp4":
      return { grid: [Math.min(blocks(w[0] / 16), 65536), 1, 1], block: 256 };
    default:
      return { grid: [blocks(w[0]), 1, 1], block: 256 };
  }
}

/** Checks every launch of a log: a committed kernel, its grid/block rule, the one stream, addresses inside buffers. */
function checkLaunches(calls: FakeCall[]): ReturnType<typeof launchOf>[] {
  const stream = calls.find((c) => c.call === "cuStreamCreate")!.args.stream;
  const allocs = calls.filter((c) => c.call === "cuMemAlloc_v2" && c.args.ptr)
    .map((c) => [BigInt(c.args.ptr), BigInt(c.args.ptr) + BigInt(c.args.bytes)]);
  const inside = (p: bigint) => allocs.some(([a, b]) => p >= a && p < b);
  const launches = calls.filter((c) => c.call === "cuLaunchKernel").map(launchOf);
  for (const l of launches) {
    assert(ENTRIES.has(l.fn), `${l.fn} is not a kernel of kernels/cuda`);
    const want = expectedShape(l.fn, l.words);
    assertEquals(l.grid, want.grid, `${l.fn} grid for words ${l.words}`);
    assertEquals(l.block, [want.block, 1, 1], `${l.fn} block`);
    if (want.smem !== undefined) assertEquals(l.smem, want.smem, `${l.fn} shared memory`);
    assertEquals(l.stream, stream, `${l.fn} on another stream`);
    for (const p of l.ptrs) assert(p === 0n || inside(p), `${l.fn}: pointer 0x${p.toString(16)} is in no allocation`);
  }
  return launches;
}

Deno.test({
  name: "cuda fake driver: tiny (f8e4m3) loads with device-made weights; prefill and decode queue checked launches " +
    "on one stream, inputs staged through pinned memory; repeated decode steps replay one CUDA graph; a sampled " +
    "step reads back its ids only",
  ignore,
  async fn() {
    await withFake({}, async (log) => {
      Deno.env.set("TRAMONTANE_LIBCUDA", lib!);
      const m = await loadModel("tiny", {
        backend: "cuda",
        dtype: "f8e4m3",
        seed: 3,
        maxModelLen: 64,
        maxTokens: 16,
        maxSeqs: 2,
        cacheDtype: "bf16",
        quiet: true,
      }).finally(() => Deno.env.delete("TRAMONTANE_LIBCUDA"));
      try {
        assertEquals(m.backends.map((b) => b.name), ["cuda"]);
        assertEquals(m.plan.segments.map((s) => s.backend), ["cuda"]);
        const loaded = log();
        // The preset's weights are made on the device (bf16 and FP8 generator kernels); every host → device copy
        // (the step's inputs) comes from a pinned staging slot.
        const made = new Set(loaded.filter((c) => c.call === "cuLaunchKernel").map((c) => c.args.fn));
        assertEquals([...made].sort(), ["random_amax", "random_fill", "random_fp8"]);
        const slots = loaded.filter((c) => c.call === "cuMemAllocHost_v2").map((c) => BigInt(c.args.host));
        const slotBytes = 4n << 20n;
        const inSlot = (c: FakeCall) =>
          slots.some((s) => BigInt(c.args.src) >= s && BigInt(c.args.src) < s + slotBytes);

        const seq = m.pool.newSequence();
        assert(m.pool.grow(seq, PROMPT.length + 6));
        const input = (ids: number[], p0: number) => ({
          ids,
          pos: ids.map((_, i) => p0 + i),
          seq: ids.map(() => 0),
          blockTables: [seq.blockTable],
          logitRows: [ids.length - 1],
        });
        const stepCalls = async (f: () => Promise<unknown>) => {
          const before = log().length;
          await f();
          return log().slice(before);
        };
        const families = (calls: FakeCall[]) =>
          new Set(checkLaunches(log()).filter((l) => calls.some((c) => c.args.fn === l.fn)).map((l) => l.fn));

        const prefill = await stepCalls(() => m.step(input(PROMPT, 0)));
        const inputs = prefill.filter((c) => c.call === "cuMemcpyHtoDAsync_v2");
        assert(inputs.length > 0 && inputs.every(inSlot), "step inputs staged through pinned memory");
        const pf = families(prefill);
        assert(pf.has("gemm_mma_f8e4m3"), `prefill matmuls on the tensor-core GEMM: ${[...pf]}`);
        for (const k of ["moe_group", "moe_act_grouped_f8e4m3", "moe_down_grouped_f8e4m3"]) {
          assert(pf.has(k), `prefill groups its tokens per expert: ${[...pf].sort()}`);
        }
        const decode = await stepCalls(() => m.step(input([PROMPT[1]], PROMPT.length)));
        const dc = families(decode);
        for (const k of ["gather_bf16", "matvec_f8e4m3", "mla_absorb_f8e4m3", "mla_split_bf16", "mla_merge_f8e4m3"]) {
          assert(dc.has(k), `decode launches ${k}: ${[...dc].sort()}`);
        }
        assert(
          !dc.has("gemm_f8e4m3") && !dc.has("gemm_mma_f8e4m3"),
          "a one-token step reads its weights through the matvec",
        );
        assert(dc.has("moe_act_f8e4m3") && !dc.has("moe_group"), "a one-token step's experts: a warp per row");
        // MLA decode splits the context into chunks of 256-position pieces: one chunk here (12 positions).
        const split = decode.filter((c) => c.args.fn === "mla_split_bf16").map(launchOf);
        assert(split.length > 0 && split.every((l) => l.grid[1] === 1 && l.words[10] === 1 && l.words[11] === 256));
        // Logits come back: one device → host copy of the row, after the launches.
        const reads = decode.filter((c) => c.call === "cuMemcpyDtoHAsync_v2");
        assertEquals(reads.length, 1);
        assertEquals(Number(reads[0].args.bytes), 4 * m.config.vocab_size);

        // The next decode steps repeat the first one's launches (only positions and tables change): the second is
        // captured, the third is one graph launch, then the logits' read-back.
        await stepCalls(() => m.step(input([PROMPT[3]], PROMPT.length + 1)));
        const replayed = await stepCalls(() => m.step(input([PROMPT[4]], PROMPT.length + 2)));
        assertEquals(replayed.filter((c) => c.call === "cuLaunchKernel").length, 0);
        assertEquals(replayed.filter((c) => c.call === "cuGraphLaunch").length, 1);
        assertEquals(replayed.filter((c) => c.call === "cuMemcpyDtoHAsync_v2").length, 1);

        const sampled = await stepCalls(() => m.sampleStep(input([PROMPT[2]], PROMPT.length + 3), greedySampling(1)));
        // The same launches as the decode steps (the sampler runs in every step): the graph again.
        assertEquals(sampled.filter((c) => c.call === "cuGraphLaunch").length, 1);
        const sampledReads = sampled.filter((c) => c.call === "cuMemcpyDtoHAsync_v2");
        assertEquals(sampledReads.map((c) => Number(c.args.bytes)), [4], "only the sampled id comes back");
        assertEquals(sampled.filter((c) => c.call === "cuStreamSynchronize").length, 1);
        // The step's graph launch precedes its read-back, on the one stream.
        const order = sampled.map((c) => c.call);
        assert(order.indexOf("cuGraphLaunch") < order.indexOf("cuMemcpyDtoHAsync_v2"));
        m.pool.release(seq);
      } finally {
        m.dispose();
      }
      // dispose released everything it allocated.
      const calls = log();
      const count = (name: string) => calls.filter((c) => c.call === name && !c.args.failed).length;
      assertEquals(count("cuMemFree_v2"), calls.filter((c) => c.call === "cuMemAlloc_v2" && c.args.ptr).length);
      assertEquals(count("cuMemFreeHost"), count("cuMemAllocHost_v2"));
      assertEquals(count("cuStreamDestroy_v2"), count("cuStreamCreate"));
    });
  },
});

Deno.test({
  name: "cuda fake driver: cuLaunchKernel gets one pointer to the Args block: tensor addresses, the scales' address, " +
    "then the words; matvec up to 8 rows, GEMM beyond",
  ignore,
  async fn() {
    await withFake({}, async (log) => {
      const b = await makeCudaFactory({ libcuda: lib }).create();
      try {
        for (const M of [3, 20]) {
          const g = new GraphBuilder();
          const x = g.input("x", [M, 64], "f32");
          const w = g.weight("w", [40, 64], "f8e4m3");
          g.output("y", ops.matmul(g, x, w));
          const graph = g.build();
          const y = graph.outputs[0].id;
          const bufs = [b.alloc(4 * M * 64), b.alloc(40 * 64 + 4 * 40), b.alloc(4 * M * 40 + 256)];
          const prepared = await b.prepare(makeSegment(graph, graph.nodes.map((n) => n.id)));
          const before = log().length;
          b.run(
            prepared,
            new Map([[x.id, { buffer: bufs[0], offset: 0 }], [w.id, { buffer: bufs[1], offset: 0 }], [
              y,
              { buffer: bufs[2], offset: 256 },
            ]]),
            {},
            new Map(),
          );
          const allocs = log().filter((c) => c.call === "cuMemAlloc_v2").slice(-3).map((c) => BigInt(c.args.ptr));
          const launches = log().slice(before).filter((c) => c.call === "cuLaunchKernel").map(launchOf);
          assertEquals(launches.length, 1);
          const l = launches[0];
          // Codes, then the scales after the 40 · 64 codes (one f32 per K-row), then y at its view's offset.
          assertEquals(l.ptrs, [allocs[0], allocs[1], allocs[1] + 2560n, allocs[2] + 256n, 0n, 0n, 0n, 0n]);
          assertEquals(l.words, [M, 40, 64, 40, 0, ...new Array(11).fill(0)]);
          if (M <= 8) {
            assertEquals([l.fn, l.grid, l.block], ["matvec_f8e4m3", [10, 1, 1], [128, 1, 1]]);
          } else {
            assertEquals([l.fn, l.grid, l.block], ["gemm_mma_f8e4m3", [1, 1, 1], [128, 1, 1]]);
          }
          assertEquals(log().slice(before).find((c) => c.call === "cuLaunchKernel")!.args.extra, "(nil)");
          for (const buf of bufs) b.free(buf);
        }
      } finally {
        b.dispose();
      }
    });
  },
});

Deno.test({
  name: "cuda fake driver: the kernels a device loads (sm_90 cubin, compute_80 PTX, none below 8.0); an allocation " +
    "failing at load is an OutOfMemoryError naming the tensor",
  ignore,
  async fn() {
    const factory = makeCudaFactory({ libcuda: lib });
    for (const [cc, target] of [["9.0", "cubin"], ["8.6", "sm_80"], ["10.0", "sm_90"]]) {
      await withFake({ cc }, async (log) => {
        (await factory.create()).dispose();
        assertEquals(log().find((c) => c.call === "cuModuleLoadData")!.args.target, target, `cc ${cc}`);
      });
    }
    await withFake({ cc: "7.5" }, async () => {
      await assertRejects(
        () => factory.create(),
        Error,
        "compute capability 8.0 or newer (Ampere, Hopper…); this one is 7.5",
      );
    });
    await withFake({ fail: "cuMemAlloc_v2:2:6" }, async () => {
      Deno.env.set("TRAMONTANE_LIBCUDA", lib!);
      const e = await assertRejects(
        () => loadModel("tiny", { backend: "cuda", seed: 3, maxModelLen: 64, maxTokens: 16, maxSeqs: 2, quiet: true }),
        OutOfMemoryError,
      ).finally(() => Deno.env.delete("TRAMONTANE_LIBCUDA"));
      assert(e.tensor !== undefined && e.message.startsWith(`${e.tensor}: out of memory on cuda`), e.message);
    });
  },
});

Deno.test({
  name: "cuda fake driver: preset weights made on the device ≡ the host's bytes in the device layout, split parts " +
    "included (the generator run by the fake, then kernels/cuda/random.cu itself on the CPU); an FP8 recipe without " +
    "its block count streams from the host",
  ignore,
  async fn() {
    // The fake's own run of random.cuh, then random.cu's kernels through the CPU shim.
    for (const [driver, run] of [[lib, false], [await fakeLibcuda({ kernels: true }), true]] as const) {
      await withFake({ run }, (log) => deviceWeights(driver!, log));
    }
  },
});

async function deviceWeights(driver: string, log: () => FakeCall[]): Promise<void> {
  const b = await makeCudaFactory({ libcuda: driver }).create();
  try {
    const cases = [
      { shape: [64, 96], dtype: "bf16", runs: undefined, split: 1 },
      { shape: [10, 33], dtype: "f32", runs: undefined, split: 2 },
      { shape: [8, 48, 32], dtype: "f8e4m3", runs: 8, split: 2 },
      { shape: [30, 40], dtype: "f8e4m3", runs: 1, split: 3 },
      { shape: [4, 24, 48], dtype: "nvfp4", runs: 4, split: 2 },
      { shape: [12, 64], dtype: "nvfp4", runs: 2, split: 3 },
    ] as const;
    for (const c of cases) {
      const n = c.shape.reduce((a, x) => a * x, 1), k = c.shape[c.shape.length - 1];
      const random = new RandomTensorSource({
        name: `w${c.dtype}`,
        shape: c.shape,
        dtype: c.dtype,
        recipe: { state: 42 + n, mean: 0.01, std: 0.2 },
        origin: "test",
        bytes: n * 4,
        runs: c.runs,
      });
      const source = random;
      const rows = c.shape[0], per = n / rows, step = Math.ceil(rows / c.split);
      const parts = [];
      for (let r = 0; r < rows; r += step) {
        const partRows = Math.min(step, rows - r), shape = [partRows, ...c.shape.slice(1)];
        const bytes = b.weightBytes(shape, c.dtype);
        parts.push({ view: { buffer: b.alloc(bytes + 256), offset: 256 }, row0: r, rows: partRows, bytes });
      }
      const decl = { id: 0, name: random.name, shape: [...c.shape], dtype: c.dtype };
      const before = log().length;
      await b.uploadWeight({ decl, storage: c.dtype, parts }, source, []);
      const calls = log().slice(before);
      assertEquals(calls.filter((x) => x.call === "cuMemcpyHtoDAsync_v2").length, 0, `${c.dtype}: no host copy`);
      assert(calls.some((x) => x.args.fn?.startsWith("random_")));
      for (const p of parts) {
        const chunk = random.readSync(p.row0, p.rows);
        const got = await b.read(p.view, p.bytes);
        const codes = chunk.data.length;
        assertEquals(got.subarray(0, codes), chunk.data, `${c.dtype} [${c.shape}] rows ${p.row0}+${p.rows}: codes`);
        if (chunk.scales) {
          // f32 scales after the part's codes (padded to a word): one per K-row (FP8), per 16 values (NVFP4).
          const at = 4 * Math.ceil(codes / 4);
          const count = c.dtype === "nvfp4" ? p.rows * per / 16 : p.rows * per / k;
          assertEquals(new Float32Array(got.slice(at, at + 4 * count).buffer), chunk.scales);
        }
        b.free(p.view.buffer);
      }
    }
    // A recipe without a block count (a source other than RandomTensorSource): FP8 streams from the host.
    const host = new RandomTensorSource({
      name: "host",
      shape: [4, 32],
      dtype: "f8e4m3",
      recipe: { state: 1, mean: 0, std: 0.1 },
      origin: "test",
      bytes: 4 * 32 + 16,
      runs: 2,
    });
    const fp8 = {
      name: host.name,
      shape: host.shape,
      dtype: host.dtype,
      bytes: host.bytes,
      origin: host.origin,
      random: { ...host.random, runs: undefined },
      read: (row0: number, rows: number) => host.read(row0, rows),
    };
    const view = { buffer: b.alloc(1024), offset: 0 };
    const before = log().length;
    const decl = { id: 0, name: "host", shape: [4, 32], dtype: "f8e4m3" as const };
    await b.uploadWeight({ decl, storage: "f8e4m3", parts: [{ view, row0: 0, rows: 4 }] }, fp8, []);
    assert(log().slice(before).some((x) => x.call === "cuMemcpyHtoDAsync_v2"));
    assertEquals(await b.read(view, 128), host.readSync(0, 4).data);
  } finally {
    b.dispose();
  }
}

Deno.test({
  name: "cuda fake driver: a run's host tables (rope's cos/sin of every rope node) go in one copy, before its " +
    "launches; a run repeating the last one's launches becomes a CUDA graph, replayed while they repeat",
  ignore,
  async fn() {
    await withFake({}, async (log) => {
      const b = await makeCudaFactory({ libcuda: lib }).create();
      try {
        const g = new GraphBuilder();
        const T = sym("T", 3), x = g.input("x", [T, 2, 8], "f32"), pos = g.input("pos", [T], "i32");
        let y = x;
        for (let l = 0; l < 4; l++) y = ops.rope(g, y, pos, { theta: 10000 });
        g.output("y", y);
        const graph = g.build();
        const buf = b.alloc(4096), view = (offset: number) => ({ buffer: buf, offset });
        const bindings = new Map([[x.id, view(0)], [pos.id, view(256)], [graph.outputs[0].id, view(512)]]);
        const prepared = await b.prepare(makeSegment(graph, graph.nodes.map((n) => n.id)));
        const host = new Map([[pos.id, Int32Array.of(0, 5, 9)]]);
        for (let run = 0; run < 2; run++) {
          const before = log().length;
          b.run(prepared, bindings, { T: 3 }, host);
          // The second run repeats the first one's launches: it is captured into a graph (then launched).
          if (run === 1) {
            const graph = log().slice(before).map((c) => c.call).filter((c) => /Capture|Graph/.test(c));
            assertEquals(graph, [
              "cuStreamBeginCapture_v2",
              "cuStreamEndCapture",
              "cuGraphInstantiateWithFlags",
              "cuGraphLaunch",
            ]);
          }
          const calls = log().slice(before).filter((c) => c.call !== "cuModuleGetFunction");
          const copies = calls.filter((c) => c.call === "cuMemcpyHtoDAsync_v2");
          // 4 rope tables of 2 · 3 · 4 floats, each 256-aligned, in one copy; the first run sizes the arena.
          assertEquals(copies.length, 1, `run ${run}`);
          assertEquals(Number(copies[0].args.bytes), 3 * 256 + 96);
          assertEquals(calls.findIndex((c) => c.call === "cuLaunchKernel"), calls.indexOf(copies[0]) + 1);
          const launches = calls.filter((c) => c.call === "cuLaunchKernel").map(launchOf);
          assertEquals(launches.map((l) => l.fn), ["rope", "rope", "rope", "rope"]);
          // Each rope reads its own table in the arena.
          const arena = BigInt(copies[0].args.dst);
          assertEquals(launches.map((l) => l.ptrs[1] - arena), [0n, 256n, 512n, 768n]);
          // The second run allocates nothing (arena, and the unbound intermediate results, kept).
          if (run === 1) assertEquals(calls.filter((c) => c.call === "cuMemAlloc_v2").length, 0);
        }
        // Later runs with the same launches (other positions: only the tables' contents differ) replay the graph:
        // no kernel launch, no copy of their own; the tables go through the graph's pinned buffer.
        for (const p of [Int32Array.of(1, 2, 3), Int32Array.of(0, 5, 9)]) {
          const before = log().length;
          b.run(prepared, bindings, { T: 3 }, new Map([[pos.id, p]]));
          const calls = log().slice(before).map((c) => c.call);
          assertEquals(calls.filter((c) => /Launch|Memcpy|Capture/.test(c)), ["cuGraphLaunch"]);
        }
        // Other shapes (T = 2): other launches, eager again.
        const before = log().length;
        b.run(prepared, bindings, { T: 2 }, host);
        assert(!log().slice(before).some((c) => c.call === "cuGraphLaunch"));
      } finally {
        b.dispose();
      }
    });
  },
});

Deno.test({
  name: "cuda fake driver: a capture the driver refuses turns graphs off (one warning); runs stay eager and correct",
  ignore,
  async fn() {
    await withFake({ fail: "cuStreamEndCapture:900" }, async (log) => {
      const b = await makeCudaFactory({ libcuda: lib }).create();
      const warn = console.warn, warnings: string[] = [];
      console.warn = (m: string) => warnings.push(m);
      try {
        const g = new GraphBuilder();
        const x = g.input("x", [4], "f32");
        g.output("y", ops.add(g, x, x));
        const graph = g.build();
        const buf = b.alloc(1024),
          bindings = new Map([[x.id, { buffer: buf, offset: 0 }], [graph.outputs[0].id, {
            buffer: buf,
            offset: 256,
          }]]);
        const prepared = await b.prepare(makeSegment(graph, graph.nodes.map((n) => n.id)));
        for (let run = 0; run < 3; run++) b.run(prepared, bindings, {}, new Map());
        const calls = log().map((c) => c.call);
        assertEquals(calls.filter((c) => c === "cuStreamBeginCapture_v2").length, 1);
        assertEquals(calls.filter((c) => c === "cuGraphLaunch").length, 0);
        // Run 1 eager, run 2 captured (refused) then eager, run 3 eager.
        assertEquals(calls.filter((c) => c === "cuLaunchKernel").length, 4);
        assertEquals(warnings.length, 1);
        assert(warnings[0].includes("CUDA graphs off (cuStreamEndCapture failed: CUDA_ERROR_900 (900))"), warnings[0]);
      } finally {
        console.warn = warn;
        b.dispose();
      }
    });
  },
});

Deno.test({
  name: "cuda fake driver: a driver without the graph entry points still loads (they are optional): runs stay eager",
  ignore,
  async fn() {
    const noGraphs = await fakeLibcuda({ noGraphs: true });
    await withFake({}, async (log) => {
      const b = await makeCudaFactory({ libcuda: noGraphs }).create();
      try {
        const g = new GraphBuilder();
        const x = g.input("x", [4], "f32");
        g.output("y", ops.mul(g, x, x));
        const graph = g.build();
        const buf = b.alloc(1024);
        const bindings = new Map([[x.id, { buffer: buf, offset: 0 }], [graph.outputs[0].id, {
          buffer: buf,
          offset: 256,
        }]]);
        const prepared = await b.prepare(makeSegment(graph, graph.nodes.map((n) => n.id)));
        for (let run = 0; run < 3; run++) b.run(prepared, bindings, {}, new Map());
        const calls = log().map((c) => c.call);
        assertEquals(calls.filter((c) => c === "cuLaunchKernel").length, 3);
        assert(!calls.some((c) => /Capture|Graph/.test(c)));
      } finally {
        b.dispose();
      }
    });
  },
});
