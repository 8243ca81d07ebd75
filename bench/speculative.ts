/**
 * `deno task bench:speculative` — decode speed with and without an EAGLE draft head, through the engine:
 *
 * ```
 * deno task bench:speculative --model demo [--speculative-model demo-eagle|DIR] --num-speculative-tokens 1,3,5
 *   [--batch 1,4] [--gen 48] [--dtype f32] [--threads 2] [--json]
 * ```
 *
 * Without `--speculative-model` it builds the full-acceptance pair of the tests (`tests/speculative_helpers.ts`:
 * a target whose layer outputs are zero and a draft that predicts exactly what it predicts) for the `--model`
 * preset, in f32, in a temporary directory: every proposal is accepted, which shows the mechanics' best case. A
 * preset draft (`demo-eagle`) has random weights: its proposals are almost never accepted, which shows the worst.
 * Neither shows a real acceptance rate: that needs the released draft and weights.
 *
 * Per batch size B and K: greedy generation of `--gen` tokens for B sequences (prompt 16 tokens), tokens per second
 * counted from the moment every sequence has its first token (so prefill is out), with the engine speculating
 * (`speculative: true`) and not (the same loaded model, `speculative: false`); the acceptance rate and tokens per
 * target forward from the engine's counters; and the cost ratio c = one draft step / one target decode step, both
 * timed at batch B (one token per sequence, logits read back as the engine does). A speed-up is possible only where
 * (K + 1) / (1 + K·c) > 1 (every proposal accepted, a verifying forward costing a decode step).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DType } from "../graph/dtype.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { ModelEngine } from "../engine/engine.ts";
import { GREEDY } from "../engine/sampler.ts";
import { writeSpeculativePair } from "../tests/speculative_helpers.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "demo" },
    "speculative-model": { type: "string" },
    "num-speculative-tokens": { type: "string", default: "1,3,5" },
    batch: { type: "string", default: "1,4" },
    gen: { type: "string", default: "48" },
    dtype: { type: "string" },
    backend: { type: "string", default: "auto" },
    threads: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
const ks = values["num-speculative-tokens"]!.split(",").map(Number);
const batches = values.batch!.split(",").map(Number);
const gen = Number(values.gen);
const threads = values.threads ? Number(values.threads) : navigator.hardwareConcurrency;
const PROMPT = 16;

/** The target and the draft: as given, or the full-acceptance pair built for the preset (temporary directory). */
async function pair(): Promise<{ target: string; draft: string; what: string; cleanup: () => Promise<void> }> {
  if (values["speculative-model"]) {
    const noop = () => Promise.resolve();
    return { target: values.model!, draft: values["speculative-model"], what: "as given", cleanup: noop };
  }
  const dir = await Deno.makeTempDir({ prefix: "tramontane-spec-" });
  const p = await writeSpeculativePair(dir, { outScale: 0, preset: values.model });
  const cleanup = () => Deno.remove(dir, { recursive: true });
  return { ...p, what: "full-acceptance construction", cleanup };
}

function prompt(b: number): number[] {
  return [1, ...Array.from({ length: PROMPT - 1 }, (_, i) => 1000 + ((i * 7919 + b * 104729) % 120000))];
}

/** Decode tokens/s of B greedy generations through the engine, after every sequence has its first token. */
async function engineDecode(model: Model, speculative: boolean, batch: number) {
  const engine = await ModelEngine.create(model, { eosId: 2, speculative });
  try {
    const firsts: number[] = [], ends: number[] = [];
    let tokens = 0;
    await Promise.all(Array.from({ length: batch }, async (_, b) => {
      let n = 0;
      for await (const _t of engine.generate({ promptIds: prompt(b), sampling: GREEDY, maxTokens: gen })) {
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
async function stepCosts(model: Model, batch: number): Promise<{ target: number; draft: number }> {
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

const { target, draft, what, cleanup } = await pair();
const results = [];
try {
  for (const K of ks) {
    const model = await loadModel(target, {
      backend: values.backend,
      dtype: values.dtype as DType | undefined,
      threads,
      maxModelLen: PROMPT + gen + 32,
      maxSeqs: Math.max(...batches),
      maxTokens: Math.max(...batches) * (K + 1) + PROMPT * Math.max(...batches),
      speculative: { model: draft, numTokens: K },
      quiet: true,
    });
    try {
      for (const batch of batches) {
        const plain = await engineDecode(model, false, batch);
        const spec = await engineDecode(model, true, batch);
        const cost = await stepCosts(model, batch);
        const s = spec.stats.speculative!;
        const c = cost.draft / cost.target;
        results.push({
          model: values.model,
          draft: `${draft} (${what})`,
          backend: model.backend.name,
          threads,
          batch,
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
        });
      }
    } finally {
      model.dispose();
    }
  }
} finally {
  await cleanup();
}

if (values.json) console.log(JSON.stringify(results));
else {
  const f = (x: number, d = 2) => x.toFixed(d);
  console.log(
    `target ${values.model}, draft ${draft} (${what}), ${results[0]?.backend}, ${threads} threads, gen ${gen}`,
  );
  console.log(
    "| batch | K | accepted | tokens/forward | target step ms | draft step ms | c | (K+1)/(1+Kc) | plain tok/s | " +
      "spec tok/s | speed-up |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.batch} | ${r.K} | ${f(100 * r.acceptanceRate, 0)}% | ${f(r.tokensPerTargetForward)} | ` +
        `${f(r.targetStepMs)} | ${f(r.draftStepMs)} | ${f(r.c)} | ${f(r.bound)} | ${f(r.plainTokensPerSecond, 1)} | ` +
        `${f(r.specTokensPerSecond, 1)} | ${f(r.speedup)}× |`,
    );
  }
}
