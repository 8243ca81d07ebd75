import { assert, assertEquals } from "../tests/assert.ts";
import { chiSquare, chiSquarePValue } from "../tests/stats.ts";
import { Rng, Sampler, SamplingState } from "./sampler.ts";
import type { SamplingParams } from "./types.ts";

const V = 16;

function logits(seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: V }, () => 3 * (rng.uniform() - 0.5));
}

const CASES: Record<string, Partial<SamplingParams>> = {
  "temperature": { temperature: 0.8 },
  "top-k": { temperature: 1.3, topK: 5 },
  "top-p": { temperature: 1, topP: 0.7 },
  "min-p": { temperature: 0.9, minP: 0.2 },
  "all, with penalties": {
    temperature: 1.1,
    topK: 9,
    topP: 0.9,
    minP: 0.05,
    presencePenalty: 0.8,
    frequencyPenalty: 0.3,
  },
};

const base: SamplingParams = { temperature: 1, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0 };

Deno.test("Sampler.distribution is what Sampler.sample draws from (chi-square over 4e4 draws per setting)", () => {
  const sampler = new Sampler(V), row = logits(1);
  for (const [name, params] of Object.entries(CASES)) {
    const p = { ...base, ...params };
    // Penalties see earlier ids: every draw starts from the same history.
    const fresh = () => {
      const s = new SamplingState({ ...p, seed: 5 }, [1, 2]);
      for (const id of [3, 3, 7]) s.observe(id);
      return s;
    };
    const s0 = fresh();
    const dist = sampler.distribution(row, s0);
    assert(Math.abs(dist.reduce((a, b) => a + b, 0) - 1) < 1e-12, name);
    const counts = new Float64Array(V);
    for (let t = 0; t < 40_000; t++) {
      const s = new SamplingState({ ...p, seed: t }, [1, 2]);
      for (const id of [3, 3, 7]) s.observe(id);
      counts[sampler.sample(row, s).id]++;
    }
    const { stat, dof } = chiSquare(counts, dist);
    assert(chiSquarePValue(stat, dof) > 1e-3, `${name}: chi-square ${stat} (dof ${dof})`);
    assertEquals([...s0.counts], [[3, 2], [7, 1]]); // distribution records nothing
  }
  const greedy = sampler.distribution(row, new SamplingState({ ...base, temperature: 0 }, []));
  assertEquals(greedy.filter((x) => x === 1).length, 1);
  assertEquals(greedy.indexOf(1), row.indexOf(Math.max(...row)));
});

Deno.test("Sampler.record takes a given id as sample would: same logprobs, same state afterwards", () => {
  const sampler = new Sampler(V), row = logits(2);
  for (const temperature of [0, 0.7]) {
    const p = { ...base, temperature, logprobs: 3, presencePenalty: 0.5, seed: 11 };
    const a = new SamplingState(p, [1]), b = new SamplingState(p, [1]);
    const drawn = sampler.sample(row, a);
    const taken = sampler.record(row, b, drawn.id);
    assertEquals(taken, drawn);
    assertEquals([...b.counts], [...a.counts]);
  }
});
