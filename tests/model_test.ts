/**
 * Model-level properties on the `tiny` preset (random weights seeded from tensor names): finite logits, the paged
 * cache is consistent (prefill(N) ≡ prefill(N−1) + decode(1), chunked ≡ whole), a batch of two sequences ≡ two
 * single runs, absorbed ≡ naive MLA. Backends are compared with `reference` here as they arrive (wasm: below).
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import type { DType } from "../graph/dtype.ts";
import { wasmBackend } from "../runtime/backends/wasm/backend.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { storageDType, weightBytes } from "../runtime/backend.ts";
import { assertClose, checkBatch, checkCacheConsistency, greedy, PROMPT, relErr, row, VOCAB } from "./model_helpers.ts";

async function withModel<T>(opts: Parameters<typeof loadModel>[1], fn: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel("tiny", { backend: "reference", seed: 3, maxModelLen: 64, quiet: true, ...opts });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

Deno.test("model: tiny forward gives finite, non-degenerate logits at every position", async () => {
  await withModel({}, async (m) => {
    const logits = await m.forward(PROMPT);
    assertEquals(logits.length, PROMPT.length * VOCAB);
    assert(logits.every(Number.isFinite), "finite");
    for (let r = 0; r < PROMPT.length; r++) {
      const x = row(logits, r);
      let mean = 0;
      for (const v of x) mean += v / x.length;
      let variance = 0;
      for (const v of x) variance += (v - mean) ** 2 / x.length;
      assert(Math.sqrt(variance) > 1e-3, `row ${r} has spread`);
    }
    // Different positions see different contexts.
    assert(relErr(row(logits, 3), row(logits, 4)) > 1e-3);
    assertEquals(m.pool.usedBlocks, 0, "forward releases its cache blocks");
  });
});

Deno.test("model: prefill(N) ≡ prefill(N−1) + decode(1) through the paged cache", async () => {
  await withModel({}, (m) => checkCacheConsistency(m, 1e-5));
});

Deno.test("model: chunked prefill equals a single pass", async () => {
  const whole = await withModel({}, (m) => m.forward(PROMPT));
  const chunked = await withModel({ maxTokens: 4 }, (m) => m.forward(PROMPT));
  assertClose(chunked, whole, 1e-5, "chunks of 4");
});

Deno.test("model: a batch of two sequences equals two single runs", async () => {
  await withModel({}, (m) => checkBatch(m, 1e-5));
});

Deno.test("model: absorbed MLA ≡ naive MLA on the whole model", async () => {
  const absorbed = await withModel({ attention: "absorbed" }, (m) => m.forward(PROMPT));
  const naive = await withModel({ attention: "naive" }, (m) => m.forward(PROMPT));
  assertClose(absorbed, naive, 1e-5, "absorbed vs naive");
});

Deno.test("model: the seed changes the weights, the same seed reproduces them", async () => {
  const a = await withModel({ seed: 1 }, (m) => m.forward(PROMPT.slice(0, 3)));
  const b = await withModel({ seed: 1 }, (m) => m.forward(PROMPT.slice(0, 3)));
  const c = await withModel({ seed: 2 }, (m) => m.forward(PROMPT.slice(0, 3)));
  assertEquals(a, b);
  assert(relErr(a, c) > 0.1);
});

Deno.test("model: a make-checkpoint directory loads to the same model as the preset (HF fp8, Mistral bf16)", async () => {
  const { makeCheckpoint } = await import("../weights/make_checkpoint.ts");
  const { presetConfig } = await import("../graph/models/mistral4.ts");
  const ids = PROMPT.slice(0, 4);
  for (const [layout, dtype] of [["hf", "f8e4m3"], ["mistral", "bf16"]] as const) {
    const dir = await Deno.makeTempDir();
    try {
      await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype, seed: 5, layout });
      const fromPreset = await withModel({ seed: 5, dtype }, (m) => m.forward(ids));
      const model = await loadModel(dir, { backend: "reference", maxModelLen: 64, quiet: true });
      try {
        assertEquals(await model.forward(ids), fromPreset, `${layout} ${dtype}`);
      } finally {
        model.dispose();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

// ---------------------------------------------------------------------------------------------- wasm ≡ reference
// The CPU backend against the oracle on whole models. Bounds are relative L2 errors of the logits. Weights are
// the same values on both (the reference decodes each dtype exactly), so with an f32 cache f32/bf16/f8e4m3 differ
// only by accumulation order (measured ≲ 5e-7). q8 differs by the int8 activations of steps with ≤ 8 rows
// (measured: tiny 8e-3, demo 4e-2 over 4 layers), q4 by those of every step (its own weights are exact on both). A bf16 cache, the default, is held in bf16 by wasm and in f32
// by the reference (measured 2e-3).

const WASM = await wasmBackend.probe().then((s) => s > 0, () => false);

async function onBackend<T>(
  preset: string,
  backend: string,
  opts: Parameters<typeof loadModel>[1],
  fn: (m: Model) => Promise<T>,
): Promise<T> {
  const model = await loadModel(preset, { backend, seed: 3, maxModelLen: 96, threads: 2, quiet: true, ...opts });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

Deno.test({
  name: "model (wasm): tiny and demo logits match the reference for every weight dtype",
  ignore: !WASM,
  async fn(t) {
    const cases: [string, DType, DType, number][] = [
      ["tiny", "f32", "f32", 1e-5],
      ["tiny", "bf16", "f32", 1e-5],
      ["tiny", "f8e4m3", "f32", 1e-5],
      ["tiny", "q8", "f32", 2e-2],
      ["tiny", "nvfp4", "f32", 2e-2],
      ["tiny", "q4", "f32", 2e-2],
      ["tiny", "bf16", "bf16", 1e-2],
      ["demo", "bf16", "f32", 1e-5],
      ["demo", "q8", "f32", 6e-2],
    ];
    for (const [preset, dtype, cacheDtype, tol] of cases) {
      await t.step(`${preset} ${dtype}, cache ${cacheDtype}`, async () => {
        const ids = preset === "demo" ? PROMPT.slice(0, 6) : PROMPT; // the reference is slow on demo
        const opts = { dtype, cacheDtype };
        const want = await onBackend(preset, "reference", opts, (m) => m.forward(ids));
        const got = await onBackend(preset, "wasm", opts, (m) => m.forward(ids));
        assert(got.every(Number.isFinite), "finite");
        assertClose(got, want, tol, `${preset} ${dtype} cache ${cacheDtype}`);
      });
    }
  },
});

/**
 * `m` (on wasm) holds its routed experts packed as released: 0.5625 bytes per value (E2M1 codes and one f8 block
 * scale per 16) plus each expert's two global scales; the other linears FP8 under `--dtype nvfp4`, the head bf16.
 */
function assertNvfp4Packed(m: Model, loadedAs?: DType): void {
  const decls = new Map(m.graph.weights.map((w) => [w.name, w]));
  for (const name of ["layers.1.moe.gate_up", "layers.1.moe.down"]) {
    const w = decls.get(name)!, shape = w.shape as number[], E = shape[0];
    assertEquals([w.dtype, storageDType(m.backend.caps, w.dtype)], ["nvfp4", "nvfp4"], name);
    const perValue = (weightBytes(m.backend, shape, w.dtype) - 8 * E) / shape.reduce((a, b) => a * b, 1);
    assertEquals(perValue, 0.5625, name);
  }
  assertEquals(decls.get("lm_head")!.dtype, "bf16");
  // --dtype nvfp4 re-encodes the other linears to FP8 (a checkpoint's own NVFP4 ones stay NVFP4).
  if (loadedAs === "nvfp4") assertEquals(decls.get("layers.0.attn.wq_a")!.dtype, "f8e4m3");
}

Deno.test({
  name: "model (wasm): make-checkpoint directories load on wasm in every weight dtype and match the reference",
  ignore: !WASM,
  async fn(t) {
    const { makeCheckpoint } = await import("../weights/make_checkpoint.ts");
    const { LINEAR_GROUPS, presetConfig } = await import("../graph/models/mistral4.ts");
    // [checkpoint dtype, layout, the dtype loadModel is asked for (q8 re-encodes at load), tolerance]
    const cases = [
      ["f32", "mistral", undefined, 1e-5],
      ["bf16", "hf", undefined, 1e-5],
      ["f8e4m3", "hf", undefined, 1e-5],
      ["bf16", "hf", "q8", 2e-2],
      // NVFP4 as released (Mistral-native, experts per expert), kept packed; and quantised at load by --dtype nvfp4.
      ["nvfp4", "mistral", undefined, 2e-2],
      ["bf16", "hf", "nvfp4", 2e-2],
      // Every text linear NVFP4 (weight-only HF checkpoints can be): W_kvb too, in the MLA kernels.
      ["nvfp4", "hf", undefined, 2e-2, "every linear"],
      ["f8e4m3", "hf", "q4", 2e-2],
    ] as const;
    for (const [dtype, layout, load, tol, every] of cases) {
      await t.step(`${layout} ${dtype}${every ? ` (${every})` : ""}${load ? ` loaded as ${load}` : ""}`, async () => {
        const dir = await Deno.makeTempDir();
        try {
          const tiny = presetConfig("tiny");
          const all = {
            weight_dtype: "nvfp4" as const,
            activation_scheme: "dynamic" as const,
            linears: [...LINEAR_GROUPS],
          };
          const config = every ? { ...tiny, quantization: all } : tiny;
          await makeCheckpoint({ config, out: dir, dtype, seed: 7, layout });
          const run = async (backend: string) => {
            const opts = { backend, dtype: load, cacheDtype: "f32" as const, maxModelLen: 64, threads: 2 };
            const m = await loadModel(dir, { ...opts, quiet: true });
            try {
              assertEquals(m.backend.name, backend);
              if (backend === "wasm" && (dtype === "nvfp4" || load === "nvfp4")) assertNvfp4Packed(m, load);
              const wkvb = m.graph.weights.find((w) => w.name === "layers.0.attn.wkv_b")!;
              if (every) assertEquals(wkvb.dtype, "nvfp4");
              return await m.forward(PROMPT);
            } finally {
              m.dispose();
            }
          };
          const got = await run("wasm");
          assert(got.every(Number.isFinite), "finite");
          assertClose(got, await run("reference"), tol, `${layout} ${dtype} → ${load ?? dtype}`);
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      });
    }
  },
});

Deno.test({
  name: "model (wasm): q4 stores every text linear in 4 bits but the head (q8, or --head-dtype) and W_kvb (q8)",
  ignore: !WASM,
  async fn() {
    const dtypes = (m: Model) => Promise.resolve(new Map(m.graph.weights.map((w) => [w.name, w.dtype])));
    const stored = await onBackend("tiny", "wasm", { dtype: "q4", cacheDtype: "f32" }, (m) => dtypes(m));
    assertEquals(stored.get("lm_head"), "q8");
    assertEquals(stored.get("layers.0.attn.wkv_b"), "q8");
    for (const name of ["layers.0.attn.wq_a", "layers.0.attn.wo", "layers.1.moe.gate_up", "layers.1.moe.down"]) {
      assertEquals(stored.get(name), "q4", name);
    }
    for (const head of ["q4", "bf16"] as const) {
      const opts = { dtype: "q4" as const, headDType: head };
      assertEquals(await onBackend("tiny", "wasm", opts, async (m) => (await dtypes(m)).get("lm_head")), head);
    }
    await assertRejects(
      () => onBackend("tiny", "wasm", { dtype: "q4", headDType: "f32" }, () => Promise.resolve()),
      RangeError,
      'headDType must be one of q4, q8, bf16, got "f32"',
    );
  },
});

Deno.test({
  name: "model (wasm): greedy decoding of 64 tokens gives the reference's ids (f32, bf16)",
  ignore: !WASM,
  async fn() {
    for (const dtype of ["f32", "bf16"] as const) {
      const opts = { dtype, cacheDtype: "f32" as const };
      const want = await onBackend("tiny", "reference", opts, (m) => greedy(m, PROMPT, 64));
      const got = await onBackend("tiny", "wasm", opts, (m) => greedy(m, PROMPT, 64));
      assert(new Set(want).size > 8, "the continuation is not degenerate");
      assertEquals(got, want, dtype);
    }
  },
});

Deno.test({
  name: "model (wasm): prefill(N) ≡ prefill(N−1) + decode(1), and a batch of two ≡ two single runs",
  ignore: !WASM,
  async fn() {
    // Paths differ in accumulation order (an expert's token count picks its matmul path), ~1e-7 per op (measured
    // ≤ 9e-7 on the logits). An f32 cache keeps that; a bf16 cache (the default) may round a latent the other way.
    for (
      const [preset, dtype, cacheDtype, tol] of [
        ["tiny", "bf16", "f32", 1e-5],
        ["demo", "f8e4m3", "f32", 1e-5],
        ["demo", "f8e4m3", "bf16", 1e-3], // measured 2.5e-5
      ] as const
    ) {
      await onBackend(preset, "wasm", { dtype, cacheDtype }, async (m) => {
        await checkCacheConsistency(m, tol);
        await checkBatch(m, tol);
      });
    }
  },
});
