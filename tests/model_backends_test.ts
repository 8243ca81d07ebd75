/**
 * The runtime's placements at model level, on `tiny`: a mixed plan (`wasm` refusing one op family, the reference
 * taking it) ≡ the reference alone and reported at load; a model split over wasm instances ≡ one instance; the
 * memory64 build with every buffer above 4 GiB ≡ the reference; backend list errors.
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { loadModel } from "../engine/model.ts";
import { normalisedError } from "./op_helpers.ts";
import { wasmBackend } from "../runtime/backends/wasm/backend.ts";
import { BackendUnavailableError } from "../runtime/registry.ts";

const PROMPT = [1, 3, 1500, 2201, 77_000, 4, 1100, 1200, 9000, 1042, 1043];
const wasm = await wasmBackend.probe().then((s) => s > 0, () => false);
// Small limits keep the step's buffers small (the logits rows above all).
const SMALL = { seed: 3, maxModelLen: 64, maxTokens: 16, maxSeqs: 2, cacheDtype: "f32" as const, threads: 2 };

async function logits(options: Parameters<typeof loadModel>[1]): Promise<{ logits: Float32Array; info: string[] }> {
  const info: string[] = [];
  const m = await loadModel("tiny", { ...SMALL, log: (l) => info.push(l), ...options });
  try {
    const segments = m.plan.segments.map((s) =>
      `${s.backend}:${s.nodes.map((n) => m.graph.nodes.find((x) => x.id === n)!.op).join(",")}`
    );
    return { logits: await m.forward(PROMPT), info: [m.backends.map((b) => b.name).join(","), ...info, ...segments] };
  } finally {
    m.dispose();
  }
}

Deno.test({
  name: "model backends: wasm refusing moe_experts, the reference taking it: logits ≡ reference, reported",
  ignore: !wasm,
  async fn() {
    const want = await logits({ backend: "reference" });
    const got = await logits({
      backend: ["wasm", "reference"],
      backendOptions: { refuseOps: { wasm: ["moe_experts"] } },
    });
    const e = normalisedError(got.logits, want.logits);
    assert(e <= 1e-5, `normalised error ${e}`);
    const [backends, ...rest] = got.info;
    assertEquals(backends, "wasm,reference");
    const fallbacks = rest.filter((l) => l.startsWith("fallback:")), copies = rest.filter((l) => l.startsWith("copy:"));
    assertEquals(fallbacks.length, 2); // one per layer
    for (const f of fallbacks) {
      assert(/^fallback: moe_experts ".*" wasm → reference \(wasm does not support/.test(f), f);
    }
    // Its inputs go to the reference and its result comes back, per layer.
    for (const name of ["moe.routed", "moe.gate", "ffn_in"]) assert(copies.some((c) => c.includes(name)), name);
    assert(copies.every((c) => /^copy: \S+ (wasm → reference|reference → wasm) \(\d+ B per step at most\)$/.test(c)));
    // Every other op on wasm: the reference's segments hold moe_experts only.
    const onReference = rest.filter((l) => l.startsWith("reference:"));
    assertEquals(onReference, ["reference:moe_experts", "reference:moe_experts"]);
  },
});

Deno.test({
  name: "model backends: a model split over wasm instances by a per-instance limit ≡ one instance",
  ignore: !wasm,
  async fn() {
    const one = await logits({ backend: "wasm", vision: false });
    // 40 MiB instances (less their scratch, stack and an 8.6 MiB reserve for the step's logits and cache): the
    // 16 MiB embedding and the layers on one, the 16 MiB head on the other.
    const split = await logits({ backend: "wasm", vision: false, backendOptions: { memoryBytes: 40 * 2 ** 20 } });
    assertEquals(split.info[0], "wasm:0,wasm:1");
    assert(split.info.some((l) => /split by layer over 2 instances/.test(l)), split.info.join("\n"));
    assert(split.info.some((l) => /^copy: last_hidden wasm:0 → wasm:1/.test(l)), "the hidden state crosses by a copy");
    assert(!split.info.some((l) => l.startsWith("fallback")), "instances are not fallbacks");
    assertEquals(normalisedError(split.logits, one.logits), 0); // the same kernels on the same data
  },
});

Deno.test({
  name: "model backends: the memory64 build with every buffer above 4 GiB ≡ reference",
  ignore: !wasm,
  async fn() {
    const want = await logits({ backend: "reference" });
    const high = await logits({ backend: "wasm", backendOptions: { memory64: true, reserveBelow: 4 * 2 ** 30 } });
    const e = normalisedError(high.logits, want.logits);
    assert(e <= 1e-5, `normalised error ${e}`);
  },
});

Deno.test({
  name: "model backends: decode-sized steps of q8, q4 and NVFP4 weights on memory64 above 4 GiB ≡ the wasm32 build",
  ignore: !wasm,
  async fn() {
    // Up to 8 rows take the once-quantised activations (q8_/q4_/nvfp4_quantize, matmul_*_act): pointers past 4 GiB
    // cross into them as i64; the same kernels on the same data give the same numbers.
    for (const dtype of ["q8", "q4", "nvfp4"] as const) {
      const one = async (backendOptions: Record<string, unknown>) => {
        const m = await loadModel("tiny", { ...SMALL, dtype, backend: "wasm", backendOptions });
        try {
          return await m.forward(PROMPT.slice(0, 3));
        } finally {
          m.dispose();
        }
      };
      const low = await one({}), high = await one({ memory64: true, reserveBelow: 4 * 2 ** 30 });
      assertEquals(normalisedError(high, low), 0, dtype);
    }
  },
});

Deno.test("model backends: an unknown name in the list is an error naming the known backends", async () => {
  await assertRejects(
    () => loadModel("tiny", { ...SMALL, backend: ["wasm", "tpu"] }),
    BackendUnavailableError,
    'unknown backend "tpu" (known: reference, wasm',
  );
});

Deno.test({
  name: "model backends: the vision graph is planned at load: strict refuses its fallbacks, which are reported",
  ignore: !wasm,
  async fn() {
    const refuse = { refuseOps: { wasm: ["patch_merge"] } };
    await assertRejects(
      () => loadModel("tiny", { ...SMALL, backend: ["wasm", "reference"], strict: true, backendOptions: refuse }),
      Error,
      "strict: 1 op(s) would not run where asked: patch_merge",
    );
    const info: string[] = [];
    const m = await loadModel("tiny", {
      ...SMALL,
      backend: ["wasm", "reference"],
      backendOptions: refuse,
      log: (l) => info.push(l),
    });
    try {
      assert(info.some((l) => /^vision project fallback: patch_merge ".*" wasm → reference/.test(l)), info.join("\n"));
      assertEquals(m.visionBackend, "wasm,reference");
    } finally {
      m.dispose();
    }
  },
});

Deno.test({
  name: "model backends: with vision, a split over instances plans the encoder's stages too; images encode alike",
  ignore: !wasm,
  async fn() {
    const image = {
      pixels: Float32Array.from({ length: 3 * 56 * 84 }, (_, i) => Math.sin(i)),
      grid: { rows: 2, cols: 3 },
    };
    const one = await loadModel("tiny", { ...SMALL, backend: "wasm", quiet: true });
    const [want] = await one.encodeImages([image]).finally(() => one.dispose());
    const info: string[] = [];
    const m = await loadModel("tiny", {
      ...SMALL,
      backend: "wasm",
      backendOptions: { memoryBytes: 48 * 2 ** 20 },
      log: (l) => info.push(l),
    });
    try {
      assert(m.backends.length >= 3, m.backends.map((b) => b.name).join(","));
      // The stages span instances (copies), and every stage finds the encoder's state where the others left it.
      assert(info.some((l) => /^vision (keys|layer) \d copy: /.test(l)), info.join("\n"));
      await m.storeImages([image], [0]); // planned at load: no memory surprise at the first image
      const [features] = await m.encodeImages([image]);
      assertEquals(Array.from(features), Array.from(want));
    } finally {
      m.dispose();
    }
  },
});
