/**
 * Sampled speculative decoding through the engine, on stub models (a Markov chain: the next token's distribution
 * depends on the current token only): the target's P[t] and a draft's Q[t] near it. Every emitted token, whether an
 * accepted first or later proposal, a residual draw after a rejection, or the bonus token after K acceptances, must
 * follow P[previous token]: chi-square per previous token, bins expecting < 5 pooled.
 */
import { assert } from "../tests/assert.ts";
import { chiSquarePValue, pooledChiSquare } from "../tests/stats.ts";
import { ModelEngine } from "./engine.ts";
import { BlockPool } from "./kv_cache.ts";
import type { DraftStepInput, Model, StepInput } from "./model.ts";
import { GREEDY, Rng } from "./sampler.ts";

const V = 6, K = 3;

function distribution(rng: Rng): Float64Array {
  const p = Float64Array.from({ length: V }, () => Math.log(1 - rng.uniform()) ** 2 + 0.02);
  const s = p.reduce((a, b) => a + b, 0);
  return p.map((x) => x / s);
}

/** Logits rows `log dist[id]` for the ids at `logitRows`. */
function rows(dists: Float64Array[], input: StepInput): Float32Array {
  const out = new Float32Array(input.logitRows.length * V);
  input.logitRows.forEach((r, i) => out.set(dists[input.ids[r]].map(Math.log), i * V));
  return out;
}

Deno.test("engine, sampled with a draft (stub models): accepted later proposals, residual draws and bonus tokens follow the target", async () => {
  const rng = new Rng(11);
  const P = Array.from({ length: V }, () => distribution(rng));
  // The draft: near the target, not it, so some proposals are rejected at every depth.
  const Q = P.map((p) => {
    const noise = distribution(rng);
    return p.map((x, v) => 0.6 * x + 0.4 * noise[v]);
  });
  let afterTarget = false, catchUps = 0, bonuses = 0;
  const limits = {
    maxModelLen: 64,
    maxTokens: 64,
    maxSeqs: 8,
    maxRows: 64,
    blockSize: 16,
    numBlocks: 64,
    maxBlocksPerSeq: 4,
    imageStoreRows: 0,
  };
  const draft = {
    numTokens: K,
    step(input: DraftStepInput): Promise<Float32Array> {
      if (afterTarget) {
        // The catch-up after a step: per sequence, the tokens the step made final (1 + accepted for a verification).
        afterTarget = false;
        catchUps++;
        const per = new Map<number, number>();
        for (const s of input.seq) per.set(s, (per.get(s) ?? 0) + 1);
        for (const n of per.values()) if (n === K + 1) bonuses++; // all K accepted: the bonus token was drawn
      }
      return Promise.resolve(rows(Q, input));
    },
  };
  const model = {
    name: "stub",
    config: { vocab_size: V, hidden_size: 1, max_position_embeddings: 64, vision_config: null },
    limits,
    pool: new BlockPool({ numBlocks: limits.numBlocks, blockSize: limits.blockSize }),
    vision: null,
    samplesOnBackend: false,
    decodeFlops: 0,
    draft,
    backends: [],
    step(input: StepInput): Promise<Float32Array> {
      afterTarget = true;
      return Promise.resolve(rows(P, input));
    },
    dispose() {},
  } as unknown as Model;
  const engine = await ModelEngine.create(model, { eosId: -1 });
  const counts = P.map(() => new Float64Array(V));
  try {
    const trials = 4000, length = 9;
    for (let round = 0; round < trials / 8; round++) {
      const gens = Array.from({ length: 8 }, (_, i) =>
        engine.generate({
          promptIds: [0, 1],
          sampling: { ...GREEDY, temperature: 1, seed: round * 8 + i },
          maxTokens: length,
        }));
      for (const gen of gens) {
        let prev = 1;
        for (let r = await gen.next(); !r.done; r = await gen.next()) {
          counts[prev][r.value.id]++;
          prev = r.value.id;
        }
      }
    }
    const s = engine.stats().speculative!;
    // Later proposals are accepted (more than one per verification on average), some are rejected.
    assert(s.accepted > 1.2 * s.verifications && s.accepted < s.proposed, JSON.stringify(s));
    assert(catchUps > 0 && bonuses > 0.1 * s.verifications, `${bonuses} bonus tokens in ${s.verifications}`);
  } finally {
    await engine.close();
  }
  for (let t = 0; t < V; t++) {
    const n = counts[t].reduce((a, b) => a + b, 0);
    assert(n > 300, `after ${t}: only ${n} tokens`);
    const { stat, dof } = pooledChiSquare(counts[t], P[t]);
    const p = chiSquarePValue(stat, dof);
    assert(p > 1e-3, `after ${t}: chi-square ${stat.toFixed(1)} (dof ${dof}) over ${n}: p ${p}`);
  }
});
