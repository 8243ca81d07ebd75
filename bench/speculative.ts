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
import { loadModel } from "../engine/model.ts";
import { speculativeRow } from "./speculative_run.ts";
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
        const row = await speculativeRow(model, { batch, gen, prompt: PROMPT });
        results.push({
          model: values.model,
          draft: `${draft} (${what})`,
          backend: model.backend.name,
          threads,
          ...row,
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
