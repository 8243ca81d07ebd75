/**
 * Two placements of one model on the CPU backend, loaded side by side in one process and alternated, so the shared
 * machine's swings fall on both alike:
 *
 * ```
 * deno run -A bench/placement.ts --model ms4-mini --dtype q8 --compare memory64 [--rounds 3] [--json]
 * deno run -A bench/placement.ts --model ms4-mini --dtype q8 --compare instances --instance-mib 256 [--json]
 * ```
 *
 * `memory64`: the wasm32 module against the memory64 one (same kernels, 64-bit addresses). `instances`: one wasm
 * instance against the model split by layer over instances of `--instance-mib` MiB each (the residual stream
 * copied between them). Each round runs a `--prompt`-token prefill (logits of the last token) and `--gen` greedy
 * decode steps on each; the table gives medians. Both see the same prompt, and the script checks they agree: the
 * prompt's logits (normalised error; 0 expected, the kernels being the same) and the greedy ids.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, isDType } from "../graph/dtype.ts";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    dtype: { type: "string", default: "q8" },
    threads: { type: "string", default: "2" },
    prompt: { type: "string", default: "512" },
    gen: { type: "string", default: "32" },
    rounds: { type: "string", default: "3" },
    compare: { type: "string", default: "memory64" },
    "instance-mib": { type: "string", default: "256" },
    json: { type: "boolean", default: false },
  },
});
if (!isDType(values.dtype!)) throw new Error(`--dtype ${values.dtype} is unknown`);
if (values.compare !== "memory64" && values.compare !== "instances") {
  throw new Error(`--compare ${values.compare}: memory64 or instances`);
}
const prompt = Number(values.prompt), gen = Number(values.gen), rounds = Number(values.rounds);

const common = {
  backend: "wasm",
  dtype: values.dtype as DType,
  threads: Number(values.threads),
  maxModelLen: prompt + gen * (rounds + 2) + 16,
  maxTokens: prompt,
  maxSeqs: 1,
  cacheDtype: "f32" as const,
  quiet: true,
};
const variants: { name: string; model: Model }[] = [];
if (values.compare === "memory64") {
  variants.push({ name: "wasm32", model: await loadModel(values.model!, common) });
  variants.push({
    name: "memory64",
    model: await loadModel(values.model!, { ...common, backendOptions: { memory64: true } }),
  });
} else {
  const bytes = Number(values["instance-mib"]) * 2 ** 20;
  variants.push({ name: "one instance", model: await loadModel(values.model!, common) });
  const split = await loadModel(values.model!, { ...common, backendOptions: { memoryBytes: bytes } });
  variants.push({ name: `${split.backends.length} instances of ${values["instance-mib"]} MiB`, model: split });
}

const vocab = variants[0].model.config.vocab_size;
const ids = Array.from({ length: prompt }, (_, i) => 1000 + ((i * 7919 + 104729) % (vocab - 1000)));
const range = ids.map((_, i) => i);

/** One prefill (tokens/s) and its last-token logits; then `gen` greedy decode steps (tokens/s, ids). */
async function round(m: Model): Promise<{ prefill: number; decode: number; logits: Float32Array; ids: number[] }> {
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
    const out = [next];
    const t1 = performance.now();
    for (let i = 0; i < gen; i++) {
      const input = { ids: [next], pos: [prompt + i], seq: [0], blockTables: [seq.blockTable], logitRows: [0] };
      next = (await m.sampleStep(input, greedySampling(1)))[0];
      out.push(next);
    }
    return { prefill, decode: gen / ((performance.now() - t1) / 1000), logits: logits.slice(), ids: out };
  } finally {
    m.pool.release(seq);
  }
}

const runs = variants.map(() => ({ prefill: [] as number[], decode: [] as number[] }));
let first: Awaited<ReturnType<typeof round>>[] = [];
for (let r = 0; r <= rounds; r++) { // round 0 warms up (V8 tiers, first-touch pages)
  const results = [];
  for (const [i, v] of variants.entries()) {
    const res = await round(v.model);
    results.push(res);
    if (r > 0) runs[i].prefill.push(res.prefill), runs[i].decode.push(res.decode);
  }
  if (r === 0) first = results;
}
const median = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
let num = 0, den = 0;
for (let v = 0; v < vocab; v++) {
  num = Math.max(num, Math.abs(first[1].logits[v] - first[0].logits[v]));
  den = Math.max(den, Math.abs(first[0].logits[v]));
}
const sameIds = first[1].ids.every((id, i) => id === first[0].ids[i]);
const rows = variants.map((v, i) => ({
  variant: v.name,
  backends: v.model.backends.map((b) => b.name),
  prefillTokensPerSecond: median(runs[i].prefill),
  decodeTokensPerSecond: median(runs[i].decode),
}));
for (const v of variants) v.model.dispose();

const result = { model: values.model, dtype: values.dtype, prompt, gen, rounds, logitsError: num / den, sameIds, rows };
if (values.json) console.log(JSON.stringify(result));
else {
  console.log(`| ${values.model} ${values.dtype} | pp${prompt} tok/s | tg${gen} tok/s |`);
  console.log(`|---|---|---|`);
  for (const r of rows) {
    console.log(`| ${r.variant} | ${r.prefillTokensPerSecond.toFixed(1)} | ${r.decodeTokensPerSecond.toFixed(2)} |`);
  }
  console.log(`\nlogits normalised error ${result.logitsError.toExponential(2)}; greedy ids equal: ${sameIds}`);
}
