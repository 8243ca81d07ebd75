/**
 * Weight dtypes of one model on the CPU backend, loaded side by side in one process and alternated, so the shared
 * machine's swings fall on all alike, each read against the memory roofline for its own bytes per token:
 *
 * ```
 * deno run -A bench/dtypes.ts --model ms4-mini --dtypes q4,q4:q4,q8 --threads 2 --prompt 512 --gen 32 [--rounds 3]
 *   [--json]
 * ```
 *
 * Each entry of `--dtypes` is a `--dtype`, with `:HEAD` for a `--head-dtype` (`q4:q4`: the lm head in q4 too).
 *
 * Each round runs, for every dtype in turn, one `--prompt`-token prefill (logits of the last token), then `--gen`
 * greedy decode steps at batch 1 (sampled on the backend, as the engine does) on every dtype interleaved step by step;
 * round 0 warms up (V8 tiers, first-touch pages) and is not counted. The table gives the median prefill and the
 * decode speed of the median step (and of the fastest tenth of the steps). The memory bandwidth (bench/bandwidth.ts, a
 * STREAM-style add, best of 5) is measured before and after the rounds; the roofline takes the larger. Bytes per
 * token count the weights a decode step reads in their stored dtype (as `deno task bench` does: routed experts at
 * top-k of E, one embedding row).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, headDTypeOf, isDType } from "../graph/dtype.ts";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";
import { bytesPerToken, memoryBandwidth } from "./roofline.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    dtypes: { type: "string", default: "q4,q8" },
    threads: { type: "string", default: "2" },
    prompt: { type: "string", default: "512" },
    gen: { type: "string", default: "32" },
    rounds: { type: "string", default: "3" },
    seed: { type: "string", default: "0" },
    json: { type: "boolean", default: false },
  },
});
const dtypes = values.dtypes!.split(",").map((entry) => {
  const [dtype, head] = entry.split(":");
  if (!isDType(dtype)) throw new Error(`--dtypes: ${dtype} is unknown`);
  return { entry, dtype, head: head === undefined ? undefined : headDTypeOf(head, `--dtypes ${entry}`) };
});
const prompt = Number(values.prompt), gen = Number(values.gen), rounds = Number(values.rounds);
const threads = Number(values.threads);

const bw0 = await memoryBandwidth(threads);
const variants: { dtype: string; model: Model }[] = [];
for (const { entry, dtype, head } of dtypes) {
  const model = await loadModel(values.model!, {
    backend: "wasm",
    dtype: dtype as DType,
    headDType: head,
    threads,
    seed: Number(values.seed),
    maxModelLen: prompt + gen + 16,
    maxTokens: prompt,
    maxSeqs: 1,
    quiet: true,
  });
  variants.push({ dtype: entry, model });
}

const vocab = variants[0].model.config.vocab_size;
const ids = Array.from({ length: prompt }, (_, i) => 1000 + ((i * 7919 + 104729) % (vocab - 1000)));
const range = ids.map((_, i) => i);

/** One prefill of the prompt: tokens/s. */
async function prefill(m: Model): Promise<number> {
  const seq = m.pool.newSequence();
  m.pool.grow(seq, prompt);
  try {
    const t0 = performance.now();
    await m.step({ ids, pos: range, seq: range.map(() => 0), blockTables: [seq.blockTable], logitRows: [prompt - 1] });
    return prompt / ((performance.now() - t0) / 1000);
  } finally {
    m.pool.release(seq);
  }
}

/**
 * `gen` greedy decode steps on every model, interleaved step by step (one step of each in turn, from one prompt
 * token), so a slow spell of the shared machine falls on every dtype alike: each step's seconds, per model.
 */
async function decodeInterleaved(): Promise<number[][]> {
  const seqs = variants.map((v) => v.model.pool.newSequence());
  const times = variants.map(() => [] as number[]), next = variants.map(() => ids[0]);
  try {
    variants.forEach((v, i) => v.model.pool.grow(seqs[i], gen + 1));
    for (let p = 0; p <= gen; p++) {
      for (const [i, v] of variants.entries()) {
        const input = { ids: [next[i]], pos: [p], seq: [0], blockTables: [seqs[i].blockTable], logitRows: [0] };
        const t0 = performance.now();
        next[i] = (await v.model.sampleStep(input, greedySampling(1)))[0];
        if (p > 0) times[i].push((performance.now() - t0) / 1000); // step 0 is the 1-token prefill
      }
    }
  } finally {
    variants.forEach((v, i) => v.model.pool.release(seqs[i]));
  }
  return times;
}

const runs = variants.map(() => ({ prefill: [] as number[], steps: [] as number[] }));
for (let r = 0; r <= rounds; r++) { // round 0 warms up (V8 tiers, first-touch pages)
  for (const [i, v] of variants.entries()) {
    const tps = await prefill(v.model);
    if (r > 0) runs[i].prefill.push(tps);
  }
  const steps = await decodeInterleaved();
  if (r > 0) steps.forEach((t, i) => runs[i].steps.push(...t));
}
const bw = Math.max(bw0, await memoryBandwidth(threads));
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
const quantile = (a: number[], q: number) => [...a].sort((x, y) => x - y)[Math.floor(q * (a.length - 1))];
const rows = variants.map((v, i) => {
  const perToken = bytesPerToken(v.model), roofline = (bw * 1e9) / perToken;
  const decode = 1 / median(runs[i].steps);
  return {
    dtype: v.dtype,
    head: v.model.graph.weights.find((w) => w.name === "lm_head")?.dtype ?? "tied",
    prefillTokensPerSecond: median(runs[i].prefill),
    prefillRuns: runs[i].prefill,
    decodeTokensPerSecond: decode,
    // The fastest tenth of the steps: what the kernels do in the machine's quiet moments.
    decodeP10TokensPerSecond: 1 / quantile(runs[i].steps, 0.1),
    bytesPerToken: perToken,
    rooflineTokensPerSecond: roofline,
    rooflineFraction: decode / roofline,
  };
});
for (const v of variants) v.model.dispose();

const result = { model: values.model, threads, prompt, gen, rounds, bandwidthGBps: bw, rows };
if (values.json) console.log(JSON.stringify(result));
else {
  const last = rows[rows.length - 1], f = (x: number, d = 1) => x.toFixed(d);
  console.log(
    `| ${values.model} | pp${prompt} tok/s | tg tok/s: median step; fastest 10% | MB/token | roofline tok/s |` +
      ` of roofline | decode vs ${last.dtype} | prefill vs ${last.dtype} |`,
  );
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    const cells = [
      `${r.dtype} (head ${r.head})`,
      f(r.prefillTokensPerSecond),
      `${f(r.decodeTokensPerSecond, 2)}; ${f(r.decodeP10TokensPerSecond, 2)}`,
      f(r.bytesPerToken / 1e6),
      f(r.rooflineTokensPerSecond),
      `${f(100 * r.rooflineFraction, 0)}%`,
      `${f(r.decodeTokensPerSecond / last.decodeTokensPerSecond, 2)}×`,
      `${f(r.prefillTokensPerSecond / last.prefillTokensPerSecond, 2)}×`,
    ];
    console.log(`| ${cells.join(" | ")} |`);
  }
  console.log(`\nbandwidth ${bw.toFixed(1)} GB/s (best of before / after the rounds), ${threads} threads`);
}
