/**
 * Sampling on the backend inside the engine (`tiny`, random weights): plain and constrained requests take the
 * backend path (only ids come back), greedy tokens equal the host path's exactly, a constrained request still
 * yields valid JSON, a seed reproduces its tokens, and a request the backend sampler cannot serve (logprobs) sends
 * its step to the host.
 */
import { Tokenizer } from "../chat/tokenizer.ts";
import { assert, assertEquals } from "../tests/assert.ts";
import { fixture } from "../tests/fixtures.ts";
import { ModelEngine, type ModelEngineStats } from "./engine.ts";
import type { GenerateRequest, Generation, SamplingParams } from "./types.ts";
import { buildConstraint } from "../grammar/constraint.ts";
import { SCHEMAS, validate } from "../tests/grammar_helpers.ts";
import { loadModel, type Model } from "./model.ts";
import { samplesOnBackend } from "./backend_sampling.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0 };

async function ids(gen: Generation): Promise<number[]> {
  const out: number[] = [];
  for await (const t of gen) out.push(t.id);
  return out;
}

/** Runs `reqs` together on a fresh engine over `model`; returns each one's ids and the engine's counters. */
async function run(
  model: Model,
  reqs: GenerateRequest[],
  backendSampling: boolean,
): Promise<{ out: number[][]; stats: ModelEngineStats }> {
  const engine = await ModelEngine.create(model, { eosId: tok.eosId, backendSampling, prefixCaching: false });
  try {
    const out = await Promise.all(reqs.map((r) => ids(engine.generate(r))));
    return { out, stats: engine.stats() };
  } finally {
    await engine.close();
  }
}

function jsonRequest(schema: Record<string, unknown>, sampling: SamplingParams): GenerateRequest {
  const constraint = buildConstraint(tok, { json: { schema }, tools: null, parallelCalls: true, reasoning: false });
  return {
    promptIds: [1, 3000, 4000, 5000],
    sampling: { ...sampling, constraint },
    maxTokens: Math.max(constraint.minTokens + 4, 24),
  };
}

Deno.test("samplesOnBackend: temperature, top-k/p and constraints yes; penalties, min-p, logprobs no", () => {
  assert(samplesOnBackend({ ...GREEDY, temperature: 0.7, topK: 5, topP: 0.9, seed: 1 }));
  for (
    const p of [{ minP: 0.1 }, { presencePenalty: 1 }, { frequencyPenalty: 1 }, { repetitionPenalty: 1.1 }, {
      logprobs: 0,
    }]
  ) assert(!samplesOnBackend({ ...GREEDY, ...p }), JSON.stringify(p));
  assert(samplesOnBackend({ ...GREEDY, repetitionPenalty: 1 }));
});

for (const backend of ["reference", "wasm"]) {
  Deno.test(`engine (${backend}): greedy plain and constrained requests sample on the backend, as the host would`, async () => {
    const model = await loadModel("tiny", {
      backend,
      maxModelLen: 128,
      maxSeqs: 4,
      maxTokens: 16,
      quiet: true,
      sampling: true,
    });
    try {
      assert(model.samplesOnBackend);
      const reqs: GenerateRequest[] = [
        { promptIds: [1, 22, 333, 4444], sampling: GREEDY, maxTokens: 12 },
        { promptIds: [1, 55, 66], sampling: GREEDY, maxTokens: 7 },
        jsonRequest(SCHEMAS.person as Record<string, unknown>, GREEDY),
        jsonRequest(SCHEMAS.enums as Record<string, unknown>, GREEDY),
      ];
      const device = await run(model, reqs, true);
      const host = await run(model, reqs, false);
      assertEquals(device.stats.hostSampled, 0);
      assertEquals(device.stats.backendSampled, device.out.reduce((n, o) => n + o.length, 0));
      assertEquals(host.stats.backendSampled, 0);
      assertEquals(device.out, host.out);
      for (const [i, schema] of [[2, SCHEMAS.person], [3, SCHEMAS.enums]] as const) {
        assertEquals(validate(JSON.parse(tok.decode(device.out[i])), schema), []);
      }
      // One request the backend cannot serve (logprobs) sends the whole step to the host; tokens are unchanged.
      const mixed = await run(model, [...reqs, { ...reqs[0], sampling: { ...GREEDY, logprobs: 0 } }], true);
      assert(mixed.stats.hostSampled > 0);
      assertEquals(mixed.out.slice(0, 4), host.out);
      assertEquals(mixed.out[4], host.out[0]);
    } finally {
      model.dispose();
    }
  });
}

Deno.test("engine: a seed reproduces sampled (and constrained) tokens on the backend path", async () => {
  const model = await loadModel("tiny", { backend: "wasm", maxModelLen: 128, maxSeqs: 4, maxTokens: 16, quiet: true });
  try {
    const hot: SamplingParams = { ...GREEDY, temperature: 1.5, topK: 0, topP: 0.95, seed: 7 };
    const reqs: GenerateRequest[] = [
      { promptIds: [1, 22, 333, 4444], sampling: hot, maxTokens: 12 },
      { promptIds: [1, 22, 333, 4444], sampling: { ...hot, topK: 40, seed: 8 }, maxTokens: 12 },
      jsonRequest(SCHEMAS.person as Record<string, unknown>, hot),
    ];
    const a = await run(model, reqs, true), b = await run(model, reqs, true);
    assertEquals(a.stats.hostSampled, 0);
    assertEquals(a.out, b.out);
    assert(a.out[0].join() !== a.out[1].join(), "different seeds and settings, different tokens");
    assertEquals(validate(JSON.parse(tok.decode(a.out[2])), SCHEMAS.person), []);
  } finally {
    model.dispose();
  }
});
