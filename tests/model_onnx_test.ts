/**
 * `tiny` on `--backend onnx,wasm` (matmuls, norms, SwiGLU, the embedding and the routed experts on onnxruntime,
 * attention, RoPE and routing on wasm) ≡ the reference: logits of a prompt (same bounds as wasm alone), greedy ids
 * identical, every matmul and moe_experts node placed on onnx, and the load report's `segments:` lines. Small steps
 * (decode) run a plan of their own on wasm alone (`smallStepTokens`), sharing its weights and the latent cache.
 */
import { assert, assertEquals } from "./assert.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { normalisedError } from "./op_helpers.ts";
import { greedy } from "./model_helpers.ts";
import { onnxBackend } from "../runtime/backends/onnx/backend.ts";
import { wasmBackend } from "../runtime/backends/wasm/backend.ts";
import type { DType } from "../graph/dtype.ts";

const PROMPT = [1, 3, 1500, 2201, 77_000, 4, 1100, 1200, 9000, 1042, 1043];
const available = (await onnxBackend.probe().then((s) => s > 0, () => false)) &&
  (await wasmBackend.probe().then((s) => s > 0, () => false));
const BASE = { seed: 3, maxModelLen: 64, maxTokens: 16, maxSeqs: 2, cacheDtype: "f32" as const, threads: 2 };

async function withModel<T>(opts: Parameters<typeof loadModel>[1], fn: (m: Model, log: string[]) => Promise<T>) {
  const log: string[] = [];
  const m = await loadModel("tiny", { ...BASE, vision: false, log: (l) => log.push(l), ...opts });
  try {
    return await fn(m, log);
  } finally {
    m.dispose();
  }
}

Deno.test({
  name: "model (onnx,wasm): tiny ≡ reference, greedy ids identical, matmul and moe_experts on onnx, reported",
  ignore: !available,
  async fn(t) {
    // Bounds as wasm alone (tests/model_test.ts): f32 and bf16 weights decode exactly on both sides; with q8, the
    // q8 W_kvb inside mla_attention (on wasm) takes int8 activations on steps of ≤ 8 rows, as it does alone (the
    // matmuls on onnx take the q8 weights dequantised exactly, at upload).
    const cases: [DType, number][] = [["f32", 1e-5], ["bf16", 1e-5], ["q8", 2e-2]];
    for (const [dtype, tol] of cases) {
      await t.step(`${dtype} weights`, async () => {
        const want = await withModel({ backend: "reference", dtype }, async (m) => ({
          logits: await m.forward(PROMPT),
          ids: await greedy(m, PROMPT, 6),
        }));
        // q8 decode steps run on wasm, whose int8 activations (≤ 8 rows) round otherwise than the reference: the
        // ids to match are then wasm's alone.
        if (dtype === "q8") want.ids = await withModel({ backend: "wasm", dtype }, (m) => greedy(m, PROMPT, 6));
        // Steps over 4 tokens (the 11-token prefill) on onnx,wasm; smaller ones (decode) on wasm alone.
        await withModel({ backend: ["onnx", "wasm"], dtype, smallStepTokens: 4 }, async (m, log) => {
          assertEquals(m.backends.map((b) => b.name), ["onnx", "wasm"]);
          const small = m.smallStepPlan!;
          assertEquals(small.tokens, 4);
          assertEquals([...new Set(small.plan.segments.map((s) => s.backend))], ["wasm"]);
          assert(
            log.includes("steps of more than 4 tokens run on onnx,wasm, steps of at most 4 on wasm (smallStepTokens)"),
          );
          const op = new Map(m.graph.nodes.map((n) => [n.id, n.op]));
          for (const s of m.plan.segments) {
            for (const n of s.nodes) {
              if (op.get(n) === "matmul" || op.get(n) === "moe_experts") assertEquals(s.backend, "onnx", op.get(n));
              if (op.get(n) === "mla_attention") assertEquals(s.backend, "wasm");
            }
          }
          const segments = log.filter((l) => l.startsWith("segments: "));
          assertEquals(segments.length, 2, log.join("\n")); // the small steps' plan has one backend: no lines
          assert(/^segments: onnx runs \d+ segment\(s\): .*matmul ×\d+.*moe_experts ×2/.test(segments[0]), segments[0]);
          assert(/^segments: wasm runs \d+ segment\(s\): .*mla_attention ×2/.test(segments[1]), segments[1]);
          const logits = await m.forward(PROMPT);
          const e = normalisedError(logits, want.logits);
          assert(e <= tol, `${dtype}: normalised error ${e} > ${tol}`);
          assertEquals(await greedy(m, PROMPT, 6), want.ids);
        });
        if (dtype !== "f32") return;
        // smallStepTokens 0: one plan for every step, decode on onnx too.
        await withModel({ backend: ["onnx", "wasm"], dtype, smallStepTokens: 0 }, async (m) => {
          assertEquals(m.smallStepPlan, null);
          assertEquals(await greedy(m, PROMPT, 6), want.ids);
        });
      });
    }
  },
});
