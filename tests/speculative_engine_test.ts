/**
 * Speculative decoding in the engine: greedy output with an EAGLE draft is token for token the output without one
 * (several K, batch 1 and 8 on tiny and demo, preemption and prefix reuse in the run), the draft's proposals are
 * really verified (proposed > 0, accepted > 0, and some rejected), at full acceptance by construction every target
 * forward gives K + 1 tokens, and sampled tokens follow the target's distribution.
 */
import { assert, assertEquals } from "./assert.ts";
import { mulberry32 } from "./fixtures.ts";
import { chiSquarePValue, pooledChiSquare } from "./stats.ts";
import { writeSpeculativePair } from "./speculative_helpers.ts";
import { ModelEngine, type ModelEngineStats } from "../engine/engine.ts";
import { loadModel, type LoadModelOptions, type Model } from "../engine/model.ts";
import { GREEDY } from "../engine/sampler.ts";
import type { Generation } from "../engine/types.ts";

const EOS = 2;

/** `<s>`, a prefix shared by every prompt (two cache blocks of 16), then the prompt's own ids. */
function prompt(seed: number, own: number): number[] {
  const shared = mulberry32(99), rand = mulberry32(seed);
  const id = (r: () => number) => 3 + Math.floor(r() * 131000);
  return [1, ...Array.from({ length: 32 }, () => id(shared)), ...Array.from({ length: own }, () => id(rand))];
}

async function collect(gen: Generation): Promise<{ ids: number[]; cached: number }> {
  const ids: number[] = [];
  for (let r = await gen.next();; r = await gen.next()) {
    if (r.done) return { ids, cached: r.value.cachedTokens };
    ids.push(r.value.id);
  }
}

/** Loads `dir` (f32 weights and cache, wasm unless given) with `options`. */
function load(dir: string, options: LoadModelOptions): Promise<Model> {
  return loadModel(dir, {
    backend: "wasm",
    dtype: "f32",
    cacheDtype: "f32",
    maxModelLen: 96,
    maxTokens: 64,
    quiet: true,
    ...options,
  });
}

/**
 * Generates every prompt at once on `model` (greedy, `maxTokens` each; `speculative` false: without its draft) and
 * returns the ids and the engine's counters.
 */
async function run(
  model: Model,
  prompts: number[][],
  maxTokens: number,
  speculative = true,
): Promise<{ outputs: number[][]; cached: number; stats: ModelEngineStats; steps: number }> {
  const engine = await ModelEngine.create(model, { eosId: EOS, speculative });
  try {
    const gens = prompts.map((promptIds) => engine.generate({ promptIds, sampling: GREEDY, maxTokens }));
    const results = await Promise.all(gens.map(collect));
    const cached = results.reduce((n, r) => n + r.cached, 0);
    return { outputs: results.map((r) => r.ids), cached, stats: engine.stats(), steps: engine.stats().steps };
  } finally {
    await engine.close();
  }
}

/**
 * Greedy equivalence on `preset` (f32 weights and cache) on wasm: the verifying forward (K + 1 rows of a sequence in
 * one step) must give each row the logits a one-token decode step gives, which the wasm kernels do (every row is
 * reduced in the same order whatever the step's size), so no tolerance is needed. The baseline runs on the first K's
 * model with its draft off (one load per K).
 */
async function greedyEquivalence(preset: string, batches: number[], ks: number[]): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const pair = await writeSpeculativePair(dir, { outScale: 0.25, preset });
    const prompts = Array.from({ length: 8 }, (_, i) => prompt(i, 3 + i));
    // 8 sequences of up to 40 + 20 tokens share 2 prefix blocks of 16 and need 2 more each: 12 forces preemptions.
    const geometry = { maxSeqs: 8, numBlocks: 12 };
    const plain = new Map<number, Awaited<ReturnType<typeof run>>>();
    for (const K of ks) {
      const model = await load(pair.target, { ...geometry, speculative: { model: pair.draft, numTokens: K } });
      try {
        for (const batch of batches) {
          const ps = prompts.slice(0, batch);
          if (!plain.has(batch)) plain.set(batch, await run(model, ps, 20, false));
          const base = plain.get(batch)!, spec = await run(model, ps, 20);
          assertEquals(base.stats.speculative, undefined);
          for (let i = 0; i < batch; i++) {
            assertEquals(spec.outputs[i], base.outputs[i], `K ${K}, batch ${batch}, #${i}`);
          }
          const s = spec.stats.speculative!;
          assert(s.proposed > 0 && s.accepted > 0, `K ${K} batch ${batch}: ${JSON.stringify(s)}`);
          assert(s.accepted < s.proposed, `some proposals must be rejected: ${JSON.stringify(s)}`);
          // Fewer target forwards than tokens: the accepted proposals came out of the verifying steps.
          assert(spec.steps < base.steps, `K ${K} batch ${batch}: ${spec.steps} steps vs ${base.steps} plain`);
          if (batch === 8) {
            assert(spec.stats.preemptions > 0, `no preemption: ${JSON.stringify(spec.stats)}`);
            assert(spec.cached > 0, "no prompt was served from the prefix cache");
          }
        }
      } finally {
        model.dispose();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// The reference backend is left out: its kernels are exact the same way, and it is slow.
Deno.test({
  name: "speculative: greedy with an EAGLE draft ≡ without on tiny (wasm), K 1 and 3, batch 1 and 8, preemption and " +
    "prefix reuse",
  sanitizeResources: false,
  fn: () => greedyEquivalence("tiny", [1, 8], [1, 3]),
});

Deno.test({
  name: "speculative: greedy with an EAGLE draft ≡ without on demo (wasm), K 2 and 5, batch 1 and 8",
  sanitizeResources: false,
  fn: () => greedyEquivalence("demo", [1, 8], [2, 5]),
});

Deno.test({
  name: "speculative: at full acceptance by construction every target forward gives K + 1 tokens",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const pair = await writeSpeculativePair(dir, { outScale: 0 });
      for (const K of [1, 4]) {
        const rounds = 3, maxTokens = 1 + rounds * (K + 1); // the prefill's token, then `rounds` verifications
        const model = await load(pair.target, { maxSeqs: 1, speculative: { model: pair.draft, numTokens: K } });
        let plain, spec;
        try {
          plain = await run(model, [prompt(5, 4)], maxTokens, false);
          spec = await run(model, [prompt(5, 4)], maxTokens);
        } finally {
          model.dispose();
        }
        assertEquals(spec.outputs, plain.outputs);
        const s = spec.stats.speculative!;
        assertEquals(s.accepted, s.proposed, JSON.stringify(s));
        assertEquals(s.verifications, rounds);
        assertEquals((s.accepted + s.verifications) / s.verifications, K + 1);
        assertEquals(spec.steps, 1 + rounds); // one prefill step, then K + 1 tokens per target forward
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * End to end, sampled: `tiny` with its head ×6 (peaked logits: the most likely token has about a third of the mass;
 * ×50 makes this random head one-hot, which no test can tell from greedy) and a draft that proposes from nearly the
 * target's distribution. The second token of each generation (of 3) is the first one speculation decides (the first
 * comes from the prompt's step; the draft then proposes one, the most a 3-token answer can use): for each first token
 * seen often enough, the second must follow the target's distribution after it (temperature 1). Chi-square over the
 * bins expecting ≥ 5 (the rest pooled), summed over those first tokens: p > 1e-3. Later proposals and the bonus
 * token are covered on stub models (`engine/speculative_sampled_test.ts`): 400 generations suffice here.
 */
Deno.test({
  name: "speculative: sampled tokens follow the target's distribution end to end (tiny, head ×6, chi-square)",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const pair = await writeSpeculativePair(dir, { outScale: 0.25, headScale: 6 });
      const options: LoadModelOptions = {
        backend: "wasm",
        dtype: "f32",
        cacheDtype: "f32",
        maxModelLen: 64,
        quiet: true,
      };
      const p = prompt(3, 4);
      const model = await loadModel(pair.target, {
        ...options,
        maxSeqs: 8,
        speculative: { model: pair.draft, numTokens: 2 },
      });
      const seconds = new Map<number, number[]>(); // second tokens by first token
      const trials = 400;
      let stat = 0, dof = 0, tested = 0;
      try {
        const engine = await ModelEngine.create(model, { eosId: EOS });
        try {
          const sampling = { ...GREEDY, temperature: 1 };
          for (let round = 0; round < trials / 8; round++) {
            const gens = Array.from({ length: 8 }, (_, i) =>
              collect(
                engine.generate({ promptIds: p, sampling: { ...sampling, seed: round * 8 + i }, maxTokens: 3 }),
              ));
            for (const { ids } of await Promise.all(gens)) {
              if (ids.length < 2) continue;
              if (!seconds.has(ids[0])) seconds.set(ids[0], []);
              seconds.get(ids[0])!.push(ids[1]);
            }
          }
          const s = engine.stats().speculative!;
          assert(s.accepted > 0 && s.accepted < s.proposed, JSON.stringify(s));
        } finally {
          await engine.close();
        }
        // The target's distribution after each first token (the same model: forward runs the target alone).
        const vocab = model.config.vocab_size;
        for (const [t1, list] of seconds) {
          if (list.length < 50) continue;
          const ids = [...p, t1];
          const row = (await model.forward(ids)).subarray((ids.length - 1) * vocab);
          let max = -Infinity;
          for (const x of row) max = Math.max(max, x);
          const e = Float64Array.from(row, (x) => Math.exp(x - max)), z = e.reduce((a, b) => a + b, 0);
          const expected = e.map((x) => x / z);
          const counts = new Float64Array(vocab);
          for (const id of list) counts[id]++;
          const c = pooledChiSquare(counts, expected); // bins expecting < 5 pooled
          stat += c.stat;
          dof += c.dof;
          tested += list.length;
        }
      } finally {
        model.dispose();
      }
      assert(tested >= trials / 2 && dof >= 4, `only ${tested} tokens in ${dof} degrees of freedom to test`);
      const pValue = chiSquarePValue(stat, dof);
      assert(pValue > 1e-3, `chi-square ${stat.toFixed(1)} (dof ${dof}) over ${tested} tokens: p ${pValue}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
