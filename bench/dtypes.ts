/**
 * Weight dtypes of one model on the CPU backend, loaded side by side in one process and alternated, so the shared
 * machine's swings fall on all alike, each read against the memory roofline for its own bytes per token:
 *
 * ```
 * deno run -A bench/dtypes.ts --model ms4-mini --dtypes q4,q8 --threads 2 --prompt 512 --gen 32 [--rounds 3]
 *   [--head-dtype q4|q8|bf16] [--json]
 * ```
 *
 * Each round runs, for every dtype in turn, one `--prompt`-token prefill (logits of the last token) and `--gen`
 * greedy decode steps at batch 1 (sampled on the backend, as the engine does); round 0 warms up (V8 tiers,
 * first-touch pages) and is not counted; the table gives medians. The memory bandwidth (bench/bandwidth.ts, a
 * STREAM-style add, best of 5) is measured before and after the rounds; the roofline takes the larger. Bytes per
 * token count the weights a decode step reads in their stored dtype (as `deno task bench` does: routed experts at
 * top-k of E, one embedding row).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BITS_PER_ELEMENT, type DType, headDTypeOf, isDType } from "../graph/dtype.ts";
import { activeFraction } from "../graph/inspect.ts";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    dtypes: { type: "string", default: "q4,q8" },
    "head-dtype": { type: "string" },
    threads: { type: "string", default: "2" },
    prompt: { type: "string", default: "512" },
    gen: { type: "string", default: "32" },
    rounds: { type: "string", default: "3" },
    seed: { type: "string", default: "0" },
    json: { type: "boolean", default: false },
  },
});
const dtypes = values.dtypes!.split(",");
for (const d of dtypes) if (!isDType(d)) throw new Error(`--dtypes: ${d} is unknown`);
const headDType = values["head-dtype"] === undefined ? undefined : headDTypeOf(values["head-dtype"], "--head-dtype");
const prompt = Number(values.prompt), gen = Number(values.gen), rounds = Number(values.rounds);
const threads = Number(values.threads);

/** STREAM-style bandwidth in GB/s (bench/bandwidth.ts, in a process of its own). */
async function bandwidth(): Promise<number> {
  const script = new URL("./bandwidth.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", script, "--threads", String(threads)],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("bench/bandwidth.ts failed");
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** Bytes a decode step at batch 1 reads: active weights in their stored dtype (as bench/bench.ts counts them). */
function bytesPerToken(m: Model): number {
  let bytes = 0;
  for (const w of m.graph.weights) {
    const n = (w.shape as number[]).reduce((a, b) => a * b, 1);
    const read = w.name === "embed" ? n / m.config.vocab_size : n * activeFraction(w.name, m.config);
    bytes += (read * BITS_PER_ELEMENT[w.dtype]) / 8;
  }
  return bytes;
}

const bw0 = await bandwidth();
const variants: { dtype: string; model: Model }[] = [];
for (const dtype of dtypes) {
  const model = await loadModel(values.model!, {
    backend: "wasm",
    dtype: dtype as DType,
    headDType,
    threads,
    seed: Number(values.seed),
    maxModelLen: prompt + gen + 16,
    maxTokens: prompt,
    maxSeqs: 1,
    quiet: true,
  });
  variants.push({ dtype, model });
}

const vocab = variants[0].model.config.vocab_size;
const ids = Array.from({ length: prompt }, (_, i) => 1000 + ((i * 7919 + 104729) % (vocab - 1000)));
const range = ids.map((_, i) => i);

/** One prefill (tokens/s), then `gen` greedy decode steps (tokens/s). */
async function round(m: Model): Promise<{ prefill: number; decode: number }> {
  const seq = m.pool.newSequence();
  m.pool.grow(seq, prompt + gen);
  try {
    const t0 = performance.now();
    const logits = await m.step({
      ids,
      pos: range,
      seq: range.map(() => 0),
      blockTables: [seq.blockTable],
      logitRows: [prompt - 1],
    });
    const prefill = prompt / ((performance.now() - t0) / 1000);
    let next = 0;
    for (let v = 1; v < vocab; v++) if (logits[v] > logits[next]) next = v;
    const t1 = performance.now();
    for (let i = 0; i < gen; i++) {
      const input = { ids: [next], pos: [prompt + i], seq: [0], blockTables: [seq.blockTable], logitRows: [0] };
      next = (await m.sampleStep(input, greedySampling(1)))[0];
    }
    return { prefill, decode: gen / ((performance.now() - t1) / 1000) };
  } finally {
    m.pool.release(seq);
  }
}

const runs = variants.map(() => ({ prefill: [] as number[], decode: [] as number[] }));
for (let r = 0; r <= rounds; r++) {
  for (const [i, v] of variants.entries()) {
    const res = await round(v.model);
    if (r > 0) runs[i].prefill.push(res.prefill), runs[i].decode.push(res.decode);
  }
}
const bw = Math.max(bw0, await bandwidth());
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
const rows = variants.map((v, i) => {
  const perToken = bytesPerToken(v.model), roofline = (bw * 1e9) / perToken;
  const decode = median(runs[i].decode);
  return {
    dtype: v.dtype,
    head: v.model.graph.weights.find((w) => w.name === "lm_head")?.dtype ?? "tied",
    prefillTokensPerSecond: median(runs[i].prefill),
    prefillRuns: runs[i].prefill,
    decodeTokensPerSecond: decode,
    decodeRuns: runs[i].decode,
    bytesPerToken: perToken,
    rooflineTokensPerSecond: roofline,
    rooflineFraction: decode / roofline,
  };
});
for (const v of variants) v.model.dispose();

const result = { model: values.model, threads, prompt, gen, rounds, bandwidthGBps: bw, rows };
if (values.json) console.log(JSON.stringify(result));
else {
  const last = rows[rows.length - 1];
  console.log(
    `| ${values.model} | pp${prompt} tok/s | tg${gen} tok/s | MB/token | roofline tok/s | of roofline |` +
      ` decode vs ${last.dtype} | prefill vs ${last.dtype} |`,
  );
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(
      `| ${r.dtype} (head ${r.head}) | ${r.prefillTokensPerSecond.toFixed(1)} | ${
        r.decodeTokensPerSecond.toFixed(2)
      } | ` +
        `${(r.bytesPerToken / 1e6).toFixed(1)} | ${r.rooflineTokensPerSecond.toFixed(1)} | ` +
        `${(100 * r.rooflineFraction).toFixed(0)}% | ${
          (r.decodeTokensPerSecond / last.decodeTokensPerSecond).toFixed(2)
        }× | ` +
        `${(r.prefillTokensPerSecond / last.prefillTokensPerSecond).toFixed(2)}× |`,
    );
  }
  console.log(`\nbandwidth ${bw.toFixed(1)} GB/s (best of before / after the rounds), ${threads} threads`);
}
