/**
 * `tiny` on the `webgpu` backend (Mesa's lavapipe on CI) against the reference: logits, 32 greedy ids, the paged
 * cache's consistency and a batch of two, with every text op on the device; the vision encoder; then mixed plans
 * with `wasm`, where what the device refuses runs on the CPU, and the plan says what ran where. Software Vulkan is slow: the cases are
 * small (tiny, 11-token prompts, an f32 cache or a bf16 one).
 */
import { assert, assertEquals } from "./assert.ts";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";
import { assertClose, checkBatch, checkCacheConsistency, greedy, PROMPT } from "./model_helpers.ts";
import { normalisedError } from "./op_helpers.ts";
import { WEBGPU_IGNORE } from "./webgpu_helpers.ts";

const SMALL = { seed: 3, maxModelLen: 64, maxTokens: 16, maxSeqs: 2, threads: 2, quiet: true };

async function onModel<T>(opts: Parameters<typeof loadModel>[1], fn: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel("tiny", { ...SMALL, ...opts });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

/** `backend:op,op…` per segment of the step graph's plan. */
function placement(m: Model): string[] {
  const op = (id: number) => m.graph.nodes.find((n) => n.id === id)!.op;
  return m.plan.segments.map((s) => `${s.backend}:${[...new Set(s.nodes.map(op))].sort().join(",")}`);
}

Deno.test({
  name: "model (webgpu): tiny on webgpu alone ≡ reference: logits, 32 greedy ids, prefill(N−1) + decode(1), batch",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    // bf16 weights (dequantised exactly on both), an f32 cache, then a bf16 one (both round what they store).
    for (const cacheDtype of ["f32", "bf16"] as const) {
      await t.step(`bf16 weights, ${cacheDtype} cache`, async () => {
        const opts = { dtype: "bf16" as const, cacheDtype };
        const want = await onModel({ ...opts, backend: "reference" }, async (m) => ({
          logits: await m.forward(PROMPT),
          ids: cacheDtype === "f32" ? await greedy(m, PROMPT, 32) : [],
        }));
        await onModel({ ...opts, backend: "webgpu" }, async (m) => {
          assertEquals(m.backends.map((b) => b.name), ["webgpu"]);
          assert(placement(m).every((p) => p.startsWith("webgpu:")), placement(m).join("; "));
          const logits = await m.forward(PROMPT);
          assert(logits.every(Number.isFinite), "finite");
          assertClose(logits, want.logits, 1e-5, `logits, ${cacheDtype} cache`);
          if (cacheDtype === "f32") {
            assert(new Set(want.ids).size > 8, "the continuation is not degenerate");
            assertEquals(await greedy(m, PROMPT, 32), want.ids, "greedy ids");
          }
          await checkCacheConsistency(m, 1e-5);
          await checkBatch(m, 1e-5);
        });
      });
    }
  },
});

Deno.test({
  name: "model (webgpu): mixed plans with wasm: refused ops fall back, logits ≡ reference, the plan reports it",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    const opts = { dtype: "bf16" as const, cacheDtype: "f32" as const };
    const want = await onModel({ ...opts, backend: "reference" }, (m) => m.forward(PROMPT));
    await t.step("webgpu refusing mla_attention (a test-only limit)", async () => {
      const info: string[] = [];
      const backendOptions = { refuseOps: { webgpu: ["mla_attention"] } };
      await onModel({ ...opts, backend: "webgpu,wasm", backendOptions, log: (l) => info.push(l) }, async (m) => {
        assertEquals(m.backends.map((b) => b.name), ["webgpu", "wasm"]);
        assertClose(await m.forward(PROMPT), want, 1e-5, "logits");
        const fallbacks = info.filter((l) => l.startsWith("fallback:"));
        assertEquals(fallbacks.length, 2, info.join("\n")); // one per layer
        for (const f of fallbacks) assert(/^fallback: mla_attention ".*" webgpu → wasm/.test(f), f);
        // Only the attention itself ran on the CPU; its query, cache and result crossed by copies.
        const onWasm = placement(m).filter((p) => p.startsWith("wasm:"));
        assertEquals(onWasm, ["wasm:mla_attention", "wasm:mla_attention"]);
        assert(
          info.some((l) => /^copy: .* webgpu → wasm/.test(l)) && info.some((l) => /^copy: .* wasm → webgpu/.test(l)),
        );
      });
    });
    await t.step("webgpu,wasm: nothing falls back (the step and the vision tower on webgpu)", async () => {
      const info: string[] = [];
      await onModel({ ...opts, backend: "webgpu,wasm", log: (l) => info.push(l) }, async (m) => {
        assertClose(await m.forward(PROMPT), want, 1e-5, "logits");
        assert(m.limits.imageStoreRows > 0, "images are on");
        assertEquals(placement(m).filter((p) => !p.startsWith("webgpu:")), [], "every step op on webgpu");
        assertEquals(info.filter((l) => l.includes("fallback:")), []);
      });
    });
  },
});

/** Counts what the backend asks of its device: submits, read-back maps, pipelines and bind groups made. */
type Counts = { submit: number; mapAsync: number; pipelines: number; bindGroups: number };

/** An adapter whose devices count their calls into `counts` (the real adapter underneath). */
async function countingAdapter(counts: Counts): Promise<GPUAdapter> {
  const adapter = (await navigator.gpu.requestAdapter())!;
  const requestDevice = adapter.requestDevice.bind(adapter);
  const counted = <F extends (...args: any[]) => any>(f: F, key: keyof Counts): F =>
    ((...args: Parameters<F>) => (counts[key]++, f(...args))) as F;
  const wrapped = Object.create(adapter);
  wrapped.requestDevice = async (descriptor?: GPUDeviceDescriptor) => {
    const device = await requestDevice(descriptor);
    const queue = device.queue;
    queue.submit = counted(queue.submit.bind(queue), "submit");
    device.createComputePipeline = counted(device.createComputePipeline.bind(device), "pipelines");
    device.createBindGroup = counted(device.createBindGroup.bind(device), "bindGroups");
    const createBuffer = device.createBuffer.bind(device);
    device.createBuffer = (d: GPUBufferDescriptor) => {
      const buffer = createBuffer(d);
      buffer.mapAsync = counted(buffer.mapAsync.bind(buffer), "mapAsync");
      return buffer;
    };
    return device;
  };
  for (const k of ["info", "features", "limits"] as const) Object.defineProperty(wrapped, k, { value: adapter[k] });
  return wrapped;
}

Deno.test({
  name:
    "model (webgpu): a decode step is 1 submit and 1 mapAsync (logits or sampled ids); no pipeline or bind group after the first",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const counts: Counts = { submit: 0, mapAsync: 0, pipelines: 0, bindGroups: 0 };
    const adapter = await countingAdapter(counts);
    await onModel({ backend: "webgpu", dtype: "bf16", backendOptions: { adapter } as never }, async (m) => {
      const seq = m.pool.newSequence();
      assert(m.pool.grow(seq, PROMPT.length + 5));
      const step = (ids: number[], p0: number) =>
        m.step({
          ids,
          pos: ids.map((_, i) => p0 + i),
          seq: ids.map(() => 0),
          blockTables: [seq.blockTable],
          logitRows: [ids.length - 1],
        });
      assert(counts.pipelines > 0, "pipelines are built at prepare");
      const prepared = counts.pipelines;
      await step(PROMPT, 0); // prefill
      await step([PROMPT[1]], PROMPT.length); // the bucket's first decode step
      for (let i = 1; i <= 3; i++) {
        const before = { ...counts };
        await step([PROMPT[i + 1]], PROMPT.length + i);
        assertEquals(counts.submit - before.submit, 1, `decode step ${i}: submits`);
        assertEquals(counts.mapAsync - before.mapAsync, 1, `decode step ${i}: maps`);
        assertEquals(counts.bindGroups - before.bindGroups, 0, `decode step ${i}: bind groups`);
        assertEquals(counts.pipelines - before.pipelines, 0, `decode step ${i}: pipelines`);
      }
      // Sampling on the device: only the ids come back, one submit and one read-back still.
      assert(m.samplesOnBackend, "webgpu runs the sampler");
      const input = (id: number, p: number) => ({
        ids: [id],
        pos: [p],
        seq: [0],
        blockTables: [seq.blockTable],
        logitRows: [0],
      });
      const at = PROMPT.length + 4;
      const logits = await step([PROMPT[5]], at);
      const argmax = logits.reduce((best, v, i) => v > logits[best] ? i : best, 0);
      const before = { ...counts };
      const [greedyId] = await m.sampleStep(input(PROMPT[5], at), greedySampling(1));
      assertEquals(greedyId, argmax, "the device's greedy id is the logits' argmax");
      const sampling = {
        temperature: Float32Array.of(0.8),
        topK: Int32Array.of(40),
        topP: Float32Array.of(0.9),
        uniform: Float32Array.of(0.37),
      };
      const [id] = await m.sampleStep(input(PROMPT[5], at), sampling);
      assert(id >= 0 && id < m.config.vocab_size, `sampled id ${id}`);
      assertEquals(counts.submit - before.submit, 2, "sampled steps: submits");
      assertEquals(counts.mapAsync - before.mapAsync, 2, "sampled steps: maps");
      assertEquals(counts.pipelines, prepared, "no pipeline after prepare");
      console.log(`after loading, a prefill, 5 decode steps and 2 sampled ones: ${JSON.stringify(counts)}`);
      m.pool.release(seq);
    });
  },
});

Deno.test({
  name: "model (webgpu): tiny's vision encoder runs on webgpu itself and ≡ the reference",
  ignore: WEBGPU_IGNORE,
  async fn() {
    // Two images of 2×3 and 1×1 patches of 28 px (random pixels), as tests/vision_test.ts encodes them on wasm.
    let s = 31;
    const rand = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
    const image = (rows: number, cols: number) => ({
      pixels: new Float32Array(3 * 28 * rows * 28 * cols).map(() => 4 * rand() - 2),
      grid: { rows, cols },
    });
    const images = [image(2, 3), image(1, 1)];
    const opts = { dtype: "f32" as const, seed: 5, vision: true };
    const want = await onModel({ ...opts, backend: "reference" }, (m) => m.encodeImages(images));
    await onModel({ ...opts, backend: "webgpu" }, async (m) => {
      const got = await m.encodeImages(images);
      assertEquals(m.visionBackend, "webgpu", "the vision graph fell back to another backend");
      // f32 sums against the reference's f64 through 2 layers and the projector (measured 4.5e-7).
      for (let i = 0; i < images.length; i++) {
        const err = normalisedError(got[i], want[i]);
        assert(err < 1e-5, `image ${i}: normalised error ${err}`);
      }
    });
  },
});

Deno.test({
  name: "model (webgpu): tiny with FP8, q8, NVFP4 and q4 weights, held quantised on the device, ≡ reference",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    const bf16 = await onModel(
      { backend: "webgpu", dtype: "bf16", vision: false },
      (m) => Promise.resolve(m.plannedMemory.weights),
    );
    for (const dtype of ["f8e4m3", "q8", "nvfp4", "q4"] as const) {
      await t.step(dtype, async () => {
        // Both decode the same codes and scales exactly; only f32 sums differ from the reference's.
        const opts = { dtype, cacheDtype: "f32" as const, vision: false };
        const want = await onModel({ ...opts, backend: "reference" }, (m) => m.forward(PROMPT));
        await onModel({ ...opts, backend: "webgpu" }, async (m) => {
          assertClose(await m.forward(PROMPT), want, 1e-5, `${dtype} logits`);
          // At most about one byte a quantised value against bf16's two (the embedding, the norms and more stay bf16);
          // q4 at most about 5 bits (4-bit codes, an f16 scale per 32, a K-row's scales from a new word).
          const quantised = m.graph.weights.filter((w) => w.dtype === dtype)
            .reduce((n, w) => n + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
          const w = m.plannedMemory.weights;
          const saved = dtype === "q4" ? 1.3 : 0.85;
          assert(quantised > 0 && w <= bf16 - saved * quantised, `${dtype}: ${w} B on the device, bf16 ${bf16} B`);
        });
      });
    }
  },
});

Deno.test({
  name:
    "model (webgpu): split-context MLA decode ≡ reference (prefill(N−1) + decode(1)); switching paths makes no bind group",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const counts: Counts = { submit: 0, mapAsync: 0, pipelines: 0, bindGroups: 0 };
    const adapter = await countingAdapter(counts);
    // Chunks of 4 positions for steps of 1 token: the 10-token prefill is one-pass, every decode step splits
    // (its context of 11 in 3 chunks, then more).
    const webgpuTuning = { splitChunk: 4, splitTokens: 1 };
    const opts = { dtype: "bf16" as const, cacheDtype: "f32" as const };
    const want = await onModel({ ...opts, backend: "reference" }, (m) => m.forward(PROMPT));
    await onModel({ ...opts, backend: "webgpu", backendOptions: { adapter, webgpuTuning } as never }, async (m) => {
      assertClose(await m.forward(PROMPT), want, 1e-5, "logits (one-pass prefill)");
      await checkCacheConsistency(m, 1e-5);
    });
    // Chunks of 12: decode steps at contexts 12 (one-pass), then 13 and on (split), in one bucket.
    await onModel(
      { ...opts, backend: "webgpu", backendOptions: { adapter, webgpuTuning: { splitChunk: 12 } } as never },
      async (m) => {
        const seq = m.pool.newSequence();
        assert(m.pool.grow(seq, PROMPT.length + 4));
        const step = (ids: number[], p0: number) =>
          m.step({
            ids,
            pos: ids.map((_, i) => p0 + i),
            seq: ids.map(() => 0),
            blockTables: [seq.blockTable],
            logitRows: [ids.length - 1],
          });
        await step(PROMPT, 0);
        await step([PROMPT[1]], PROMPT.length); // context 12: one-pass
        for (let i = 1; i <= 2; i++) {
          const before = { ...counts };
          await step([PROMPT[i + 1]], PROMPT.length + i); // contexts 13, 14: split
          assertEquals(counts.submit - before.submit, 1, `decode step ${i}: submits`);
          assertEquals(counts.bindGroups - before.bindGroups, 0, `decode step ${i}: bind groups`);
          assertEquals(counts.pipelines - before.pipelines, 0, `decode step ${i}: pipelines`);
        }
        m.pool.release(seq);
      },
    );
  },
});
