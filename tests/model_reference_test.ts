/**
 * The whole text model against an implementation nobody on the project wrote: `../shared/fixtures/model/tiny_rect`
 * is a random `Mistral4ForCausalLM` checkpoint in the transformers layout whose dimensions all differ (a transposed
 * `gate_up_proj` or a mis-split `kv_b_proj` cannot hide behind a square shape), with log-probabilities from an
 * independent float64 forward. Two prompts: 24 ids at positions 0..23, and 8,200 ids whose last 8 positions lie past
 * 8,192, where the llama-4 query temperature is 1 + 0.1·ln 2 (no other model test reaches it); each under both
 * softmax scales (the fixture's `plain` and `mscale` are our `plain` and `deepseek_yarn`, chosen with
 * `loadModel`'s `softmaxScale`, since the checkpoint's own config says plain).
 *
 * Every backend of the registry whose probe is > 0 runs it (a backend joins by being registered; one that lowers only
 * part of the model, `onnx`, runs beside wasm), with an f32
 * latent cache, on the checkpoint as shipped and on the same weights re-exported in the Mistral-native layout by
 * our own writer. At each stored position: log-softmax at the reference's top-16 ids and its 256 fixed ids within
 * {@link TOL}, the logsumexp too (log-softmax alone would hide a shift of every logit), and the same top-1 id.
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { fixture, fixtureJson } from "./fixtures.ts";
import { BACKENDS, probeAll } from "../runtime/registry.ts";
import { WEBGPU_IGNORE } from "./webgpu_helpers.ts";
import { loadModel, type Model } from "../engine/model.ts";
import type { SoftmaxScaleMode } from "../graph/models/mistral4.ts";
import { loadCanonicalWeights } from "../weights/load.ts";
import { makeCheckpoint } from "../weights/make_checkpoint.ts";

/** One position of a case in `reference_logprobs.json`. */
interface RefPosition {
  position: number;
  logsumexp: number;
  top_ids: number[];
  top_logprobs: number[];
  fixed_logprobs: number[];
}

/** `reference_logprobs.json`. */
interface Reference {
  fixed_ids: number[];
  prompts: Record<Prompt, number[]>;
  cases: { prompt: Prompt; softmax_scale: "plain" | "mscale"; positions: RefPosition[] }[];
}

type Prompt = "short" | "past_8192";

const CHECKPOINT = fixture("model/tiny_rect/checkpoint").pathname;
const REF = fixtureJson<Reference>("model/tiny_rect/reference_logprobs.json");
/** The fixture's scale names → ours. */
const SCALES = { plain: "plain", mscale: "deepseek_yarn" } as const satisfies Record<string, SoftmaxScaleMode>;
/**
 * Bound on |Δ log-prob| and |Δ logsumexp|. Measured on `wasm` (f32 activations, f32 cache): 2.3e-6 plain and
 * 1.1e-5 with DeepSeek's scale (the larger scale sharpens the scores, so f32 rounding in them counts more).
 */
const TOL = 1e-4;
const LONGEST = REF.prompts.past_8192.length;

/**
 * What `reference` runs. It computes every op in plain TypeScript: one 8,200-token prompt takes about 22 s there
 * (measured on the project's 2-core machine; `wasm` takes 2 s), so it runs that prompt once, under DeepSeek's scale
 * (where the temperature and the scale multiply the same scores) and in the shipped layout; the short prompt covers
 * both scales and both layouts. Every other backend runs every case.
 */
function runs(backend: string, layout: "hf" | "mistral", prompt: Prompt, scale: SoftmaxScaleMode): boolean {
  if (prompt === "short") return true;
  // Software Vulkan (CI's WebGPU) takes minutes over 8k positions: the long prompt stays with the CPU backends.
  if (backend === "webgpu") return false;
  if (backend !== "reference") return true;
  return layout === "hf" && scale === "deepseek_yarn";
}

/**
 * Logits `[vocab]` at each of `wanted` positions of one fresh sequence `ids`, prefilled in steps of the model's
 * token budget (logits only for the wanted rows, at most `maxRows` per step).
 */
async function logitsAt(
  m: Model,
  ids: readonly number[],
  wanted: ReadonlySet<number>,
): Promise<Map<number, Float32Array>> {
  const vocab = m.config.vocab_size, out = new Map<number, Float32Array>();
  const seq = m.pool.newSequence();
  try {
    assert(m.pool.grow(seq, ids.length), "cache blocks for the whole prompt");
    for (let start = 0; start < ids.length;) {
      let n = Math.min(m.limits.maxTokens, ids.length - start);
      const rows: number[] = [];
      for (let i = 0; i < n; i++) {
        if (!wanted.has(start + i)) continue;
        if (rows.length === m.limits.maxRows) {
          n = i;
          break;
        }
        rows.push(i);
      }
      const logitRows = rows.length ? rows : [n - 1]; // a step computes at least one row
      const logits = await m.step({
        ids: ids.slice(start, start + n),
        pos: Array.from({ length: n }, (_, i) => start + i),
        seq: new Array(n).fill(0),
        blockTables: [seq.blockTable],
        logitRows,
      });
      rows.forEach((r, k) => out.set(start + r, logits.slice(k * vocab, (k + 1) * vocab)));
      start += n;
    }
  } finally {
    m.pool.release(seq);
  }
  return out;
}

/** Compares one prompt's logits with the reference; returns the worst |Δ log-prob| and |Δ logsumexp|. */
function compare(logits: Map<number, Float32Array>, positions: RefPosition[], what: string): [number, number] {
  let worst = 0, worstLse = 0;
  for (const p of positions) {
    const x = logits.get(p.position)!;
    let max = -Infinity, argmax = 0;
    for (let v = 0; v < x.length; v++) if (x[v] > max) [max, argmax] = [x[v], v];
    let sum = 0;
    for (let v = 0; v < x.length; v++) sum += Math.exp(x[v] - max);
    const lse = max + Math.log(sum);
    const at = `${what} position ${p.position}`;
    assertEquals(argmax, p.top_ids[0], `${at}: top-1`);
    worstLse = Math.max(worstLse, Math.abs(lse - p.logsumexp));
    const check = (id: number, want: number) => worst = Math.max(worst, Math.abs(x[id] - lse - want));
    p.top_ids.forEach((id, k) => check(id, p.top_logprobs[k]));
    REF.fixed_ids.forEach((id, k) => check(id, p.fixed_logprobs[k]));
    assert(worst <= TOL, `${at}: |Δ log-prob| ${worst} > ${TOL}`);
    assert(worstLse <= TOL, `${at}: |Δ logsumexp| ${worstLse} > ${TOL}`);
  }
  return [worst, worstLse];
}

/** Runs every case `backend` runs on the checkpoint in `dir` (one model per scale: the scale is in the graph). */
async function checkLayout(t: Deno.TestContext, backend: string, layout: "hf" | "mistral", dir: string) {
  for (const [refScale, scale] of Object.entries(SCALES)) {
    const prompts = (["short", "past_8192"] as const).filter((p) => runs(backend, layout, p, scale));
    await t.step(`${scale}: ${prompts.join(", ")}`, async () => {
      const m = await loadModel(dir, {
        backend,
        softmaxScale: scale,
        cacheDtype: "f32",
        maxSeqs: 1,
        maxModelLen: prompts.includes("past_8192") ? LONGEST : 64,
        quiet: true,
      });
      try {
        assertEquals(m.config.softmax_scale_mode, scale);
        for (const prompt of prompts) {
          const { positions } = REF.cases.find((c) => c.prompt === prompt && c.softmax_scale === refScale)!;
          const logits = await logitsAt(m, REF.prompts[prompt], new Set(positions.map((p) => p.position)));
          const what = `${backend} ${layout} ${scale} ${prompt}`;
          const [lp, lse] = compare(logits, positions, what);
          console.log(`${what}: max |Δ log-prob| ${lp.toExponential(1)}, |Δ logsumexp| ${lse.toExponential(1)}`);
        }
      } finally {
        m.dispose();
      }
    });
  }
}

const probes = await probeAll();
const available = (name: string) => probes.find((p) => p.name === name)!.score > 0;
// Backends that lower only part of the model run it beside wasm (onnx: matmuls, norms, experts; attention on wasm).
const BESIDE: Record<string, string> = { onnx: "wasm" };
for (const factory of BACKENDS) {
  const partner = BESIDE[factory.name];
  const ignore = factory.name === "webgpu"
    ? WEBGPU_IGNORE
    : !available(factory.name) || (partner !== undefined && !available(partner));
  const backend = partner ? `${factory.name},${partner}` : factory.name;
  Deno.test({
    name: `model reference: tiny_rect (HF layout, as shipped) on ${backend} ≡ the float64 forward`,
    ignore,
    fn: (t) => checkLayout(t, backend, "hf", CHECKPOINT),
  });
  Deno.test({
    name: `model reference: tiny_rect re-exported in the Mistral layout on ${backend} ≡ the float64 forward`,
    ignore,
    async fn(t) {
      const dir = await Deno.makeTempDir({ prefix: "tramontane_tiny_rect_" });
      try {
        const hf = await loadCanonicalWeights(CHECKPOINT, { quiet: true, group: "all" });
        await makeCheckpoint({ config: hf.config, out: dir, layout: "mistral", weights: hf.weights, force: true });
        await checkLayout(t, backend, "mistral", dir);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test("loadModel: an unknown softmaxScale is an error naming the option, the value and the accepted values", async () => {
  await assertRejects(
    () => loadModel(CHECKPOINT, { backend: "reference", softmaxScale: "mscale" as SoftmaxScaleMode, quiet: true }),
    RangeError,
    'softmaxScale: unknown value "mscale" (accepted: "plain", "deepseek_yarn")',
  );
});
