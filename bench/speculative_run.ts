/**
 * The measurements of a speculative-decoding bench row (shared by `bench/speculative.ts` and `bench/bench.ts`):
 * engine decode with and without the draft on one loaded model, the engine's acceptance counters, and the cost
 * ratio c of a draft step to a target decode step.
 *
 * @module
 */

import type { Model } from "../engine/model.ts";
import { ModelEngine } from "../engine/engine.ts";
import { GREEDY } from "../engine/sampler.ts";

/** One row: batch, K, acceptance, step costs, the (K+1)/(1+Kc) bound, and tokens/s plain and speculative. */
export interface SpeculativeRow {
  batch: number;
  K: number;
  acceptanceRate: number;
  tokensPerTargetForward: number;
  targetStepMs: number;
  draftStepMs: number;
  c: number;
  bound: number;
  plainTokensPerSecond: number;
  specTokensPerSecond: number;
  speedup: number;
}

/** Measures one row on `model` (loaded with a draft) at batch `batch`: `gen` greedy tokens after `prompt`-token prompts. */
export async function speculativeRow(
  model: Model,
  o: { batch: number; gen: number; prompt: number },
): Promise<SpeculativeRow> {
  const K = model.draft!.numTokens;
  const plain = await engineDecode(model, false, o);
  const spec = await engineDecode(model, true, o);
  const cost = await stepCosts(model, o);
  const s = spec.stats.speculative!;
  const c = cost.draft / cost.target;
  return {
    batch: o.batch,
    K,
    acceptanceRate: s.proposed > 0 ? s.accepted / s.proposed : 0,
    tokensPerTargetForward: s.verifications > 0 ? 1 + s.accepted / s.verifications : 1,
    targetStepMs: cost.target,
    draftStepMs: cost.draft,
    c,
    bound: (K + 1) / (1 + K * c),
    plainTokensPerSecond: plain.tps,
    specTokensPerSecond: spec.tps,
    speedup: spec.tps / plain.tps,
  };
}

function prompt(b: number, n: number): number[] {
  return [1, ...Array.from({ length: n - 1 }, (_, i) => 1000 + ((i * 7919 + b * 104729) % 120000))];
}

/** Decode tokens/s of B greedy generations through the engine, after every sequence has its first token. */
async function engineDecode(model: Model, speculative: boolean, o: { batch: number; gen: number; prompt: number }) {
  const { batch, gen } = o;
  const engine = await ModelEngine.create(model, { eosId: 2, speculative });
  try {
    const firsts: number[] = [], ends: number[] = [];
    let tokens = 0;
    await Promise.all(Array.from({ length: batch }, async (_, b) => {
      let n = 0;
      for await (const _t of engine.generate({ promptIds: prompt(b, o.prompt), sampling: GREEDY, maxTokens: gen })) {
        if (n++ === 0) firsts.push(performance.now());
        else tokens++;
      }
      ends.push(performance.now());
    }));
    const seconds = (Math.max(...ends) - Math.max(...firsts)) / 1000;
    return { tps: tokens / seconds, stats: engine.stats() };
  } finally {
    await engine.close();
  }
}

/** Median ms of one target decode step and one draft step at batch B (one token per sequence, logits read back). */
async function stepCosts(
  model: Model,
  o: { batch: number; gen: number },
): Promise<{ target: number; draft: number }> {
  const { batch, gen } = o;
  const seqs = Array.from({ length: batch }, () => model.pool.newSequence());
  for (const s of seqs) model.pool.grow(s, gen + 1);
  const rows = seqs.map((_, b) => b), blockTables = seqs.map((s) => s.blockTable);
  const ids = rows.map((b) => 1000 + b);
  const time = async (run: (p: number) => Promise<unknown>) => {
    const ms: number[] = [];
    for (let p = 0; p < Math.min(gen, 24); p++) {
      const t = performance.now();
      await run(p);
      ms.push(performance.now() - t);
    }
    return ms.sort((a, b) => a - b)[ms.length >> 1];
  };
  const input = (p: number) => ({ ids, pos: rows.map(() => p), seq: rows, blockTables, logitRows: rows });
  const target = await time((p) => model.step(input(p)));
  const draft = await time((p) => model.draft!.step({ ...input(p), hiddenRows: rows, hiddenOut: rows }));
  for (const s of seqs) model.pool.release(s);
  return { target, draft };
}
