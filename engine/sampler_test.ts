import { assert, assertAlmostEquals, assertEquals, assertNotEquals } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { sampleRow } from "../ops/sample.ts";
import type { SamplingParams } from "./types.ts";
import { Rng, Sampler, SamplingState, selectPrefix } from "./sampler.ts";

const BASE: SamplingParams = {
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

function params(p: Partial<SamplingParams>): SamplingParams {
  return { ...BASE, ...p };
}

/** Logits whose softmax is exactly `probs`. */
function logitsOf(probs: number[]): Float32Array {
  return Float32Array.from(probs, Math.log);
}

/** Ids drawn `n` times from one state (so the generator advances), counted. */
function histogram(row: Float32Array, p: SamplingParams, n: number): Map<number, number> {
  const sampler = new Sampler(row.length);
  const state = new SamplingState({ seed: 7, ...p }, []);
  const counts = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const { id } = sampler.sample(row, state);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

function logSoftmax(x: number[]): number[] {
  const m = Math.max(...x);
  const lse = m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
  return x.map((v) => v - lse);
}

Deno.test("sampler: Rng is deterministic per seed, distinct across seeds, uniform in [0, 1)", () => {
  const draw = (seed: number | undefined, n = 8) => {
    const r = new Rng(seed);
    return Array.from({ length: n }, () => r.uniform());
  };
  assertEquals(draw(42), draw(42));
  assertNotEquals(draw(42), draw(43));
  // Both halves of a safe integer matter, and negative seeds are fine.
  assertNotEquals(draw(1), draw(2 ** 32 + 1));
  assertNotEquals(draw(-1), draw(2 ** 32 - 1));
  assertEquals(draw(Number.MAX_SAFE_INTEGER), draw(Number.MAX_SAFE_INTEGER));
  assertNotEquals(draw(undefined), draw(undefined));
  const xs = draw(5, 20000);
  assert(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assertAlmostEquals(mean, 0.5, 0.01);
});

Deno.test("sampler: temperature 0 is argmax with the lowest id on ties, and records the token", () => {
  const sampler = new Sampler(5);
  const state = new SamplingState(params({ temperature: 0 }), []);
  assertEquals(sampler.sample(Float32Array.of(0, 3, 1, 3, -2), state), { id: 1 });
  assertEquals(state.counts.get(1), 1);
});

Deno.test("sampler: same choice as the reference sample op for the same uniform (top-k, top-p, temperature)", () => {
  const rand = mulberry32(11);
  const v = 64;
  const sampler = new Sampler(v);
  for (let trial = 0; trial < 600; trial++) {
    const row = Float32Array.from({ length: v }, () => (rand() - 0.5) * 8);
    const temperature = [0.3, 1, 2.5][trial % 3];
    const topK = [0, 1, 5, 40, 100][trial % 5];
    const topP = [1, 0.9, 0.5, 0.05][trial % 4];
    const seed = trial * 7919;
    const state = new SamplingState(params({ temperature, topK, topP, seed }), []);
    const u = new Rng(seed).uniform();
    assertEquals(sampler.sample(row, state).id, sampleRow(row, temperature, topK, topP, u), `trial ${trial}`);
  }
  // LM-like rows (a bulk far below a few peaks) on a larger vocabulary take the shortlist paths.
  const big = 5000;
  const bigSampler = new Sampler(big);
  for (let trial = 0; trial < 60; trial++) {
    const row = Float32Array.from({ length: big }, () => (rand() + rand() - 1) * 6);
    for (let j = 0; j < 8; j++) row[Math.floor(rand() * big)] += 8 + rand() * 6;
    const temperature = [0.15, 0.7, 1, 1.5][trial % 4];
    const topK = [0, 0, 3, 200, 5000][trial % 5];
    const topP = [1, 0.95, 0.8][trial % 3];
    const seed = 1 + trial;
    const state = new SamplingState(params({ temperature, topK, topP, seed }), []);
    const u = new Rng(seed).uniform();
    assertEquals(bigSampler.sample(row, state).id, sampleRow(row, temperature, topK, topP, u), `big trial ${trial}`);
  }
});

Deno.test("sampler: top-k keeps the k most likely, in proportion", () => {
  const row = logitsOf([0.1, 0.4, 0.2, 0.3]);
  const counts = histogram(row, params({ topK: 2 }), 4000);
  assertEquals([...counts.keys()].sort(), [1, 3]);
  assertAlmostEquals(counts.get(1)! / 4000, 0.4 / 0.7, 0.03);
});

Deno.test("sampler: top-p keeps the smallest most-likely set reaching p", () => {
  const row = logitsOf([0.05, 0.5, 0.15, 0.3]);
  assertEquals([...histogram(row, params({ topP: 0.75 }), 2000).keys()].sort(), [1, 3]);
  assertEquals([...histogram(row, params({ topP: 0.85 }), 2000).keys()].sort(), [1, 2, 3]);
  assertEquals([...histogram(row, params({ topP: 0.01 }), 200).keys()], [1]);
  // Relative to the top-k set: within the top 2 (mass 0.8), 0.5 / 0.8 ≥ 0.6 already.
  assertEquals([...histogram(row, params({ topK: 2, topP: 0.6 }), 500).keys()], [1]);
});

Deno.test("sampler: min-p drops tokens below min-p × the top probability", () => {
  const row = logitsOf([0.05, 0.5, 0.15, 0.3]);
  assertEquals([...histogram(row, params({ minP: 0.2 }), 2000).keys()].sort(), [1, 2, 3]);
  assertEquals([...histogram(row, params({ minP: 0.5 }), 2000).keys()].sort(), [1, 3]);
  assertEquals([...histogram(row, params({ minP: 1 }), 200).keys()], [1]);
});

Deno.test("sampler: temperature flattens and sharpens", () => {
  const row = logitsOf([0.2, 0.8]);
  const hot = histogram(row, params({ temperature: 100 }), 4000).get(1)! / 4000;
  const cold = histogram(row, params({ temperature: 0.1 }), 4000).get(1)! / 4000;
  assertAlmostEquals(hot, 0.5, 0.04);
  assert(cold > 0.99, `cold ${cold}`);
});

Deno.test("sampler: repetition penalty over prompt and output (CTRL: divide positive, multiply negative)", () => {
  const sampler = new Sampler(3);
  const state = new SamplingState(params({ temperature: 0, repetitionPenalty: 2, logprobs: 0 }), [0, 1]);
  const token = sampler.sample(Float32Array.of(2, -1, 1.5), state);
  // Penalised logits [1, −2, 1.5]: id 2 wins; logprobs are of the penalised distribution (at temperature 1).
  assertEquals(token.id, 2);
  assertAlmostEquals(token.logprob!, logSoftmax([1, -2, 1.5])[2], 1e-9);
  // The output counts too: now id 2 is penalised as well.
  const again = sampler.sample(Float32Array.of(2, -1, 1.5), state);
  assertEquals(again.id, 0);
  assertAlmostEquals(again.logprob!, logSoftmax([1, -2, 0.75])[0], 1e-9);
});

Deno.test("sampler: presence and frequency penalties (OpenAI) count generated tokens only", () => {
  const sampler = new Sampler(3);
  const row = Float32Array.of(2, 1.9, 0);
  // The prompt does not count: id 0 still wins.
  const freq = new SamplingState(params({ temperature: 0, frequencyPenalty: 0.06, logprobs: 0 }), [0, 0, 0]);
  assertEquals(sampler.sample(row, freq).id, 0); // x0 = 2
  assertEquals(sampler.sample(row, freq).id, 0); // x0 = 2 − 0.06 = 1.94 > 1.9
  const third = sampler.sample(row, freq); // x0 = 2 − 0.12 = 1.88 < 1.9: the penalty grows with the count
  assertEquals(third.id, 1);
  assertAlmostEquals(third.logprob!, logSoftmax([1.88, 1.9, 0])[1], 1e-6);
  const presence = new SamplingState(params({ temperature: 0, presencePenalty: 0.5, logprobs: 0 }), []);
  assertEquals(sampler.sample(row, presence).id, 0);
  const second = sampler.sample(row, presence); // x0 = 1.5
  assertEquals(second.id, 1);
  assertAlmostEquals(second.logprob!, logSoftmax([1.5, 1.9, 0])[1], 1e-6);
  const third2 = sampler.sample(row, presence); // x0 = 1.5, x1 = 1.4: presence does not grow with the count
  assertEquals(third2.id, 0);
});

Deno.test("sampler: logprobs are after temperature, before truncation, and sum to 1 over the vocabulary", () => {
  const x = [0.5, -1, 2, 0.25, 1, -3];
  const sampler = new Sampler(x.length);
  const state = new SamplingState(params({ temperature: 2, topK: 2, seed: 3, logprobs: 20 }), []);
  const token = sampler.sample(Float32Array.from(x), state);
  const expected = logSoftmax(x.map((v) => v / 2));
  assert(token.id === 2 || token.id === 4, "drawn from the top 2");
  assertAlmostEquals(token.logprob!, expected[token.id], 1e-6);
  const top = token.topLogprobs!;
  assertEquals(top.length, x.length, "min(logprobs, 20, vocab) alternatives");
  assertEquals(top.map((t) => t.id), [2, 4, 0, 3, 1, 5], "most likely first");
  for (const t of top) assertAlmostEquals(t.logprob, expected[t.id], 1e-6);
  assertAlmostEquals(top.reduce((s, t) => s + Math.exp(t.logprob), 0), 1, 1e-9);
  // logprobs: 0 → the chosen token only; absent → none.
  const only = sampler.sample(Float32Array.from(x), new SamplingState(params({ temperature: 0, logprobs: 0 }), []));
  assertEquals(only.topLogprobs, []);
  assertAlmostEquals(only.logprob!, logSoftmax(x)[2], 1e-6);
  assertEquals(sampler.sample(Float32Array.from(x), new SamplingState(params({}), [])).logprob, undefined);
});

Deno.test("sampler: top logprobs are capped at 20 and ordered", () => {
  const rand = mulberry32(5);
  const row = Float32Array.from({ length: 1000 }, () => rand() * 10);
  const token = new Sampler(1000).sample(row, new SamplingState(params({ temperature: 0, logprobs: 50 }), []));
  const top = token.topLogprobs!;
  assertEquals(top.length, 20);
  const order = [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, 20);
  assertEquals(top.map((t) => t.id), order);
  assertEquals(top[0].id, token.id);
});

Deno.test("sampler: the same seed gives the same tokens; different seeds differ", () => {
  const rand = mulberry32(9);
  const rows = Array.from({ length: 30 }, () => Float32Array.from({ length: 500 }, () => rand() * 2));
  const run = (seed?: number) => {
    const sampler = new Sampler(500);
    const state = new SamplingState(params({ temperature: 1, topP: 0.95, seed }), []);
    return rows.map((r) => sampler.sample(r, state).id);
  };
  assertEquals(run(1234), run(1234));
  assertNotEquals(run(1234), run(1235));
  assertNotEquals(run(), run());
});

Deno.test("sampler: selectPrefix finds the first c in (key desc, id asc) order, ties included", () => {
  const rand = mulberry32(21);
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rand() * 60);
    const key = Float64Array.from({ length: n }, () => Math.floor(rand() * 6)); // many ties
    const weight = Float64Array.from({ length: n }, () => rand());
    const order = [...key.keys()].sort((a, b) => key[b] - key[a] || a - b);
    const idx = Int32Array.from(key.keys());
    if (trial % 2 === 0) {
      const k = 1 + Math.floor(rand() * n);
      assertEquals(selectPrefix(idx, n, key, null, k, false), k);
      assertEquals([...idx.subarray(0, k)].sort((a, b) => a - b), order.slice(0, k).sort((a, b) => a - b));
      assertEquals(idx[k - 1], order[k - 1]);
    } else {
      const total = weight.reduce((s, w) => s + w, 0);
      const target = rand() * total;
      let c = 0, cum = 0;
      while (c < n && !(cum > target)) cum += weight[order[c++]];
      assertEquals(selectPrefix(idx, n, key, weight, target, true), c);
      assertEquals(idx[c - 1], order[c - 1]);
    }
  }
});

Deno.test("sampler: a 131072-token row samples in a few milliseconds (no full sort)", () => {
  const rand = mulberry32(3);
  const v = 131072;
  const row = Float32Array.from({ length: v }, () => (rand() - 0.5) * 20);
  const sampler = new Sampler(v);
  const cases = [
    params({ temperature: 0.7, topP: 0.95, seed: 1, logprobs: 5 }),
    params({ temperature: 1, seed: 2, topK: 50, topP: 0.9, minP: 0.05 }),
    params({ temperature: 1, seed: 3 }),
    params({ temperature: 0, repetitionPenalty: 1.1 }),
  ];
  for (const p of cases) {
    const state = new SamplingState(p, [1, 2, 3]);
    sampler.sample(row, state); // warm up
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) sampler.sample(row, state);
    const ms = (performance.now() - t0) / 10;
    assert(ms < 40, `${JSON.stringify(p)}: ${ms.toFixed(2)} ms per row`);
  }
});
