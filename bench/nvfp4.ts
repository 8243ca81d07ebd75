/**
 * NVFP4 (as released: routed experts in E2M1 + f8 block scales, the other linears FP8, the head bf16) against q8 on
 * the wasm backend, both models loaded in one process and their rounds alternated, so the shared machine's swings
 * fall on both alike:
 *
 * ```
 * deno run -A bench/nvfp4.ts --model ms4-mini --threads 2 --prompt 128 --rounds 8 [--json]
 * ```
 *
 * Each round runs 16 greedy decode steps (batch 1, on the backend) and one `--prompt`-token prefill of every model.
 * Bytes per token are the weights a decoded token reads as the backend stores them (`engine/server_plan.ts`); the
 * roofline is those bytes over the bandwidth measured in the same run (bench/bandwidth.ts, its own process).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DType } from "../graph/dtype.ts";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";
import { decodeTraffic } from "../engine/server_plan.ts";
import { memoryBandwidth } from "./roofline.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    threads: { type: "string", default: "2" },
    prompt: { type: "string", default: "128" },
    rounds: { type: "string", default: "8" },
    json: { type: "boolean", default: false },
  },
});
const threads = Number(values.threads), promptLen = Number(values.prompt), rounds = Number(values.rounds);
const STEPS = 16, dtypes: DType[] = ["q8", "nvfp4"];

const bw = (await memoryBandwidth(threads)) * 1e9;
const models: Model[] = [];
for (const dtype of dtypes) {
  models.push(
    await loadModel(values.model!, {
      backend: "wasm",
      dtype,
      threads,
      seed: 5,
      maxModelLen: promptLen + rounds * STEPS * 2 + 64,
      maxTokens: promptLen,
      maxSeqs: 1,
      quiet: true,
    }),
  );
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % 100000));

/** Seconds of one prefill of `promptLen` tokens. */
async function prefill(m: Model): Promise<number> {
  const seq = m.pool.newSequence(), t = ids(promptLen), pos = t.map((_, i) => i);
  m.pool.grow(seq, t.length);
  const start = performance.now();
  await m.step({ ids: t, pos, seq: pos.map(() => 0), blockTables: [seq.blockTable], logitRows: [t.length - 1] });
  m.pool.release(seq);
  return (performance.now() - start) / 1000;
}

/** Per-step seconds of STEPS greedy decode steps after a one-token prompt. */
async function decode(m: Model): Promise<number[]> {
  const seq = m.pool.newSequence(), greedy = greedySampling(1), out: number[] = [];
  m.pool.grow(seq, STEPS + 1);
  let next = [1234];
  for (let p = 0; p <= STEPS; p++) {
    const start = performance.now();
    next = [
      ...await m.sampleStep({ ids: next, pos: [p], seq: [0], blockTables: [seq.blockTable], logitRows: [0] }, greedy),
    ];
    if (p > 0) out.push((performance.now() - start) / 1000);
  }
  m.pool.release(seq);
  return out;
}

for (const m of models) await prefill(m), await decode(m); // warm-up: V8's optimising tier, first-touch pages
const tg = models.map(() => [] as number[]), pp = models.map(() => [] as number[]);
for (let r = 0; r < rounds; r++) {
  for (const [i, m] of models.entries()) {
    tg[i].push(...(await decode(m)).map((s) => 1 / s));
    pp[i].push(promptLen / await prefill(m));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const rows = models.map((m, i) => {
  const bytes = decodeTraffic(m.graph, m.backend, m.config).weightBytesPerToken;
  const tgMedian = median(tg[i]);
  return {
    dtype: dtypes[i],
    experts: m.graph.weights.find((w) => w.name.endsWith("moe.gate_up"))!.dtype,
    head: m.graph.weights.find((w) => w.name === "lm_head")!.dtype,
    bytesPerToken: bytes,
    tg: { median: tgMedian, min: Math.min(...tg[i]), max: Math.max(...tg[i]) },
    pp: { median: median(pp[i]), min: Math.min(...pp[i]), max: Math.max(...pp[i]) },
    roofline: (tgMedian * bytes) / bw,
  };
});
for (const m of models) m.dispose();
if (values.json) console.log(JSON.stringify({ bandwidth: bw, rows }, null, 2));
else {
  console.log(`${values.model}, wasm, ${threads} threads, bandwidth ${(bw / 1e9).toFixed(1)} GB/s (same run)`);
  console.log("| dtype | experts | head | bytes/token | tg tok/s median (min–max) | vs roofline | pp tok/s median |");
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    console.log(
      `| ${r.dtype} | ${r.experts} | ${r.head} | ${(r.bytesPerToken / 1e6).toFixed(1)} MB | ${
        r.tg.median.toFixed(1)
      } ` +
        `(${r.tg.min.toFixed(1)}–${r.tg.max.toFixed(1)}) | ${(100 * r.roofline).toFixed(0)}% | ${
          r.pp.median.toFixed(1)
        } |`,
    );
  }
}
