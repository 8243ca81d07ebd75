/**
 * The sampler with a constraint: whatever the settings (greedy, temperature, top-k, top-p, min-p, penalties),
 * only ids the mask allows are drawn, log-probabilities are over the allowed ids, and the matcher is told each
 * choice with the budget it was computed for.
 */
import { assert, assertAlmostEquals, assertEquals } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import type { ConstraintMatcher, SamplingParams, TokenConstraint } from "../engine/types.ts";
import { Sampler, SamplingState } from "../engine/sampler.ts";

const VOCAB = 5000;
const ALLOWED = [3, 7, 1234, 4999];

/** Allows a fixed set of ids and records what it was told. */
class FixedConstraint implements TokenConstraint {
  readonly minTokens = 1;
  readonly seen: [number, number][] = [];
  matcher(): ConstraintMatcher {
    const seen = this.seen;
    return {
      fillMask(mask: Uint32Array) {
        mask.fill(0);
        for (const id of ALLOWED) mask[id >>> 5] |= 1 << (id & 31);
      },
      advance(id: number, remaining: number) {
        seen.push([id, remaining]);
      },
      done: false,
    };
  }
}

const BASE: SamplingParams = { temperature: 1, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0 };

Deno.test("sampler: a constraint's mask bounds every draw and the log-probabilities", () => {
  const rand = mulberry32(5);
  // The allowed ids are among the least likely: any leak of the filters would show.
  const row = Float32Array.from({ length: VOCAB }, () => 5 + rand() * 5);
  for (const id of ALLOWED) row[id] = rand();
  const sampler = new Sampler(VOCAB);
  const settings: Partial<SamplingParams>[] = [
    { temperature: 0 },
    { temperature: 0.5, topK: 1 },
    { temperature: 1, topK: 3 },
    { temperature: 2, topP: 0.5 },
    { temperature: 1, minP: 0.2 },
    { temperature: 1.5, presencePenalty: 2, repetitionPenalty: 1.5 },
  ];
  for (const extra of settings) {
    const constraint = new FixedConstraint();
    const state = new SamplingState({ ...BASE, ...extra, seed: 1, logprobs: 5, constraint }, [1, 3]);
    for (let n = 0; n < 100; n++) {
      const t = sampler.sample(row, state, 100 - n);
      assert(ALLOWED.includes(t.id), `${JSON.stringify(extra)} drew ${t.id}`);
      assert(Number.isFinite(t.logprob));
      assert(t.topLogprobs!.every((a) => ALLOWED.includes(a.id)), "alternatives are allowed ids only");
      const mass = t.topLogprobs!.reduce((sum, a) => sum + Math.exp(a.logprob), 0);
      assertAlmostEquals(mass, 1, 1e-9, "the allowed ids carry all the probability");
    }
    assertEquals(constraint.seen.map(([, r]) => r), Array.from({ length: 100 }, (_, n) => 100 - n));
  }
  // Greedy without logprobs: the most likely allowed id.
  const state = new SamplingState({ ...BASE, temperature: 0, constraint: new FixedConstraint() }, [1]);
  const best = ALLOWED.reduce((a, b) => (row[b] > row[a] ? b : a));
  assertEquals(sampler.sample(row, state).id, best);
});
