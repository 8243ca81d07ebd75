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
import { launchOf, fakeLibcuda, type FakeCall, withFake } from "./cuda_helpers.ts";
import { makeCudaFactory, probeCuda } from "../runtime/backends/cuda/backend.ts";
import { CudaError } from "../runtime/backends/cuda/ffi.ts";
import { OutOfMemoryError } from "../runtime/backend.ts";

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
      assert(!r.ok && r.reason.includes("supports CUDA 12.8") && r.reason.includes("need CUDA 13.0"), JSON.stringify(r));
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
        assertEquals((await b.read({ buffer: view.buffer, offset: 0 }, 4)), new Uint8Array([9, 9, 9, 9]));
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
