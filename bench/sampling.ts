/**
 * Sampling on the backend against sampling on the host, per decode step, in one run:
 *
 * ```sh
 * npx -y deno@2.9.6 run -A bench/sampling.ts --model demo --batch 1,8 --steps 32 [--json]
 * ```
 *
 * For each batch size and setting (greedy; temperature 0.7 with top-p 0.9; greedy under a JSON-schema constraint),
 * two sets of B sequences decode `--steps` tokens, interleaved step by step: one on the host path (`Model.step`
 * reads the logits `[B, vocab]` back, then the host `Sampler` picks each row, masking constrained rows), one on the
 * backend path (`Model.sampleStep`: per-row settings and masks go up, B ids come back). Both paths run the same graph, so the
 * difference is the logits readback plus host sampling, less the mask upload. Constrained rows fill their mask on
 * both paths (`ConstraintMatcher.fillMask`), which the "host sampling" column includes on the host path only.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Tokenizer } from "../chat/tokenizer.ts";
import { BackendSampling } from "../engine/backend_sampling.ts";
import { Sequence } from "../engine/sequence.ts";
import { TokenStream } from "../engine/stream.ts";
import type { SamplingParams } from "../engine/types.ts";
import { buildConstraint } from "../grammar/constraint.ts";
import { SCHEMAS } from "../tests/grammar_helpers.ts";
import { loadModel, type Model, type StepInput } from "../engine/model.ts";
import { Sampler } from "../engine/sampler.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "demo" },
    backend: { type: "string", default: "auto" },
    threads: { type: "string" },
    batch: { type: "string", default: "1,8" },
    steps: { type: "string", default: "32" },
    json: { type: "boolean", default: false },
  },
});
const batches = values.batch!.split(",").map(Number);
const steps = Number(values.steps);

const tok = await Tokenizer.fromFile(
  new URL("../../shared/fixtures/tokenizer/tekken_small4_v15_derived.json", import.meta.url),
);
const model = await loadModel(values.model!, {
  backend: values.backend,
  threads: values.threads ? Number(values.threads) : undefined,
  maxModelLen: steps + 16,
  maxTokens: Math.max(...batches, 16),
  maxSeqs: Math.max(...batches),
  quiet: true,
});
if (!model.samplesOnBackend) throw new Error(`backend ${model.backend.name} has no sampler: nothing to compare`);

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0 };
const constraint = buildConstraint(tok, {
  json: { schema: SCHEMAS.person },
  tools: null,
  parallelCalls: true,
  reasoning: false,
});
const SETTINGS: [string, SamplingParams][] = [
  ["greedy", GREEDY],
  ["T 0.7, top-p 0.9", { ...GREEDY, temperature: 0.7, topP: 0.9, seed: 1 }],
  ["json schema, greedy", { ...GREEDY, constraint }],
];

/** Median of `xs`. */
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** One path's decode state: `batch` sequences with their own cache blocks. */
function start(m: Model, batch: number, sampling: SamplingParams) {
  const seqs = Array.from({ length: batch }, (_, b) => {
    const req = { promptIds: [1, 1000 + b], sampling, maxTokens: steps + 1 };
    return new Sequence(req, new TokenStream(() => {}), { maxModelLen: m.limits.maxModelLen });
  });
  const blocks = seqs.map(() => m.pool.newSequence());
  for (const b of blocks) m.pool.grow(b, steps + 4);
  return { seqs, blocks, stepMs: [] as number[], hostMs: [] as number[] };
}

/** Decodes one token of every sequence at position `p`, on the host path or the backend path. */
async function step(m: Model, d: ReturnType<typeof start>, p: number, onBackend: boolean): Promise<void> {
  const vocab = m.config.vocab_size, rows = d.seqs.map((_, b) => b);
  const input: StepInput = {
    ids: d.seqs.map((s) => s.tokens[p]),
    pos: rows.map(() => p),
    seq: rows,
    blockTables: d.blocks.map((b) => b.blockTable),
    logitRows: rows,
  };
  const t0 = performance.now();
  let ids: number[];
  if (onBackend) {
    const out = await m.sampleStep(input, packer.pack(d.seqs, rows.length));
    ids = d.seqs.map((s, r) => packer.accept(s, out[r]).id);
  } else {
    const logits = await m.step(input);
    const t1 = performance.now();
    ids = d.seqs.map((s, r) => sampler.sample(logits.subarray(r * vocab, (r + 1) * vocab), s.sampling, s.remaining).id);
    d.hostMs.push(performance.now() - t1);
  }
  d.stepMs.push(performance.now() - t0);
  // A completed constrained output then allows only </s>: it keeps decoding, as timing needs.
  d.seqs.forEach((s, r) => s.tokens.push(ids[r]));
}

const packer = new BackendSampling(model.config.vocab_size, model.limits.maxRows);
const sampler = new Sampler(model.config.vocab_size);

/**
 * Both paths over `steps` positions, interleaved step by step (alternating which goes first), so that load from
 * other processes falls on both alike. Medians per step (ms).
 */
async function compare(m: Model, batch: number, sampling: SamplingParams) {
  const host = start(m, batch, sampling), backend = start(m, batch, sampling);
  for (let p = 1; p <= steps; p++) {
    for (const onBackend of p % 2 ? [false, true] : [true, false]) {
      await step(m, onBackend ? backend : host, p, onBackend);
    }
  }
  for (const d of [host, backend]) for (const b of d.blocks) m.pool.release(b);
  return { host: median(host.stepMs), hostSampling: median(host.hostMs), backend: median(backend.stepMs) };
}

const results = [];
await compare(model, batches[0], GREEDY); // warm-up: first-run allocations and compiled code
for (const batch of batches) {
  for (const [name, sampling] of SETTINGS) {
    const r = await compare(model, batch, sampling);
    results.push({
      batch,
      setting: name,
      hostPathMs: r.host,
      hostSamplingMs: r.hostSampling,
      backendPathMs: r.backend,
      savedMs: r.host - r.backend,
    });
  }
}

if (values.json) {
  console.log(JSON.stringify({ model: model.name, backend: model.backend.name, steps, results }));
} else {
  console.log(`${model.name} on ${model.backend.name}, ${steps} decode steps, medians per step (ms)\n`);
  console.log("| batch | setting | host path | of which host sampling | backend path | saved |");
  console.log("|---:|---|---:|---:|---:|---:|");
  for (const r of results) {
    const f = (x: number) => x.toFixed(2);
    console.log(
      `| ${r.batch} | ${r.setting} | ${f(r.hostPathMs)} | ${f(r.hostSamplingMs)} | ${f(r.backendPathMs)} | ${
        f(r.savedMs)
      } |`,
    );
  }
}
model.dispose();
