/**
 * Speed of the wasm backend's kernel variants, alternated in one process so that the shared machine's swings fall on
 * all of them alike:
 *
 * ```
 * deno run -A bench/variants.ts --model ms4-mini --dtype q8 --prompt 512 --rounds 5 [--json]      # prefill
 * deno run -A bench/variants.ts --model ms4-mini --dtype q8 --decode 8 --rounds 12 [--json]       # decode
 * ```
 *
 * Prefill variants: the q8 matmuls with more than 8 rows on f32 panels or on int8 products (`q8_prefill_int8`; only
 * where the host allows it, and only q8 weights care), and MLA in the absorbed form or, for runs of at least
 * `WasmTuning.naivePrefill` tokens, the naive (expanded) form. Each round runs every variant once (one
 * `--prompt`-token prefill, logits of the last token).
 *
 * Decode variants (`--decode B`: B sequences, one token each per step, greedy on the backend): the q8 products of the
 * decode kernels with the activation's sign moved onto the weight or with the weight as the u8 operand
 * (`q8_decode_u8`, bit-identical results). Each round runs 16 steps of every variant.
 *
 * The table gives median, min and max tok/s (per round for prefill, per step for decode).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, isDType } from "../graph/dtype.ts";
import { greedySampling, loadModel } from "../engine/model.ts";
import { DEFAULT_TUNING, type WasmTuning } from "../runtime/backends/wasm/backend.ts";
import { probeQ8Paths } from "../runtime/backends/wasm/module.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    dtype: { type: "string", default: "q8" },
    threads: { type: "string", default: "2" },
    prompt: { type: "string", default: "512" },
    decode: { type: "string" },
    rounds: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
  },
});
if (!isDType(values.dtype!)) throw new Error(`--dtype ${values.dtype} is unknown`);
const prompt = Number(values.prompt), rounds = Number(values.rounds);
const batch = values.decode === undefined ? 0 : Number(values.decode);
const steps = 16;

// The backend reads this object at every run: each variant changes it before its rounds.
const tuning: Partial<WasmTuning> = {};
const model = await loadModel(values.model!, {
  backendOptions: { tuning },
  backend: "wasm",
  dtype: values.dtype as DType,
  threads: Number(values.threads),
  maxModelLen: batch ? steps * (rounds + 1) * 2 + 16 : prompt + 16,
  maxTokens: batch ? batch : prompt,
  maxSeqs: Math.max(1, batch),
  quiet: true,
});
const defaultNaive = DEFAULT_TUNING.naivePrefill;
const int8 = (await probeQ8Paths()).int8Prefill;

const variants: { name: string; set: () => void }[] = [];
if (batch) {
  for (const u8 of [0, 1]) {
    variants.push({
      name: `${values.dtype} decode b${batch}: q8 products ${u8 ? "with u8 weights" : "by sign transfer"}`,
      set: () => void (tuning.q8DecodeU8 = u8 === 1),
    });
  }
} else {
  for (const gemm of int8 && values.dtype === "q8" ? ["f32", "int8"] : ["f32"]) {
    for (const mla of ["absorbed", "naive"]) {
      variants.push({
        name: `${values.dtype}: matmuls on ${gemm === "int8" ? "int8 products" : "f32 panels"}, MLA ${mla}`,
        set: () => {
          tuning.q8Prefill = gemm === "int8" ? "int8" : "f32";
          tuning.naivePrefill = mla === "naive" ? defaultNaive : Infinity;
        },
      });
    }
  }
}

const ids = Array.from({ length: prompt }, (_, i) => 1000 + ((i * 7919 + 104729) % (model.config.vocab_size - 1000)));
const range = ids.map((_, i) => i);

/** Tokens/s of one prefill. */
async function once(): Promise<number> {
  const seq = model.pool.newSequence();
  model.pool.grow(seq, prompt);
  const start = performance.now();
  await model.step({
    ids,
    pos: range,
    seq: range.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: [prompt - 1],
  });
  const seconds = (performance.now() - start) / 1000;
  model.pool.release(seq);
  return prompt / seconds;
}

// Decode: the sequences of every variant continue from where the last round left them.
const rowsB = Array.from({ length: batch }, (_, b) => b);
const seqs = rowsB.map(() => model.pool.newSequence());
for (const s of seqs) model.pool.grow(s, steps * (rounds + 1) * 2);
const greedy = greedySampling(batch);
let next = rowsB.map((b) => 1000 + 7 * b), pos = 0;

/** Tokens/s of each of `steps` decode steps. */
async function decodeSteps(): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < steps; i++, pos++) {
    const start = performance.now();
    const input = { ids: next, pos: rowsB.map(() => pos), seq: rowsB, blockTables: seqs.map((s) => s.blockTable) };
    next = [...await model.sampleStep({ ...input, logitRows: rowsB }, greedy)];
    out.push(batch / ((performance.now() - start) / 1000));
  }
  return out;
}

const measure = async () => batch ? await decodeSteps() : [await once()];
// Warm-up: V8's optimising tier, first-touch pages.
for (const v of variants) v.set(), await (batch ? decodeSteps() : once());
const runs = variants.map(() => [] as number[]);
for (let r = 0; r < rounds; r++) {
  for (const [i, v] of variants.entries()) {
    v.set();
    runs[i].push(...await measure());
  }
}
model.dispose();

const rows = variants.map((v, i) => {
  const s = runs[i].sort((a, b) => a - b);
  return { variant: v.name, median: s[s.length >> 1], min: s[0], max: s[s.length - 1] };
});
if (values.json) console.log(JSON.stringify({ model: values.model, prompt, batch, rounds, int8Host: int8, rows }));
else {
  const what = batch ? `decode batch ${batch}, ${rounds} rounds of ${steps} steps` : `pp${prompt}, ${rounds} rounds`;
  console.log(`${what} (int8 / u8 products on this host: ${int8 ? "yes" : "no"})\n`);
  console.log(`| variant | median tok/s | min | max |`);
  console.log(`|---|---|---|---|`);
  for (const r of rows) {
    console.log(`| ${r.variant} | ${r.median.toFixed(1)} | ${r.min.toFixed(1)} | ${r.max.toFixed(1)} |`);
  }
}
