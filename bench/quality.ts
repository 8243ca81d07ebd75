/**
 * Logit quality of quantised weight dtypes against the same model with exact weights: mean KL divergence per
 * position and top-1 agreement, on the decode path (one token per step, as generation runs).
 *
 * ```
 * deno run -A bench/quality.ts --model ms4-mini --seed 5 --dtypes q4,q8 [--prompts 4 --len 64] [--threads 2]
 *   [--softmax-scale deepseek_yarn] [--ids-out ids.json] [--peer NAME=logprobs.npy ...]
 * ```
 *
 * The reference is the preset's own bf16 weights (exactly what every dtype is quantised from) with f32 activations
 * and an f32 latent cache on the wasm backend; each dtype runs with an f32 cache too, so only the weights (and the
 * int8 activations of the quantised matmuls) differ. Random weights give near-flat logits, where KL says little, so
 * the lm head is scaled by α = 2^k, chosen so the reference's mean top-1 probability is closest to 0.3 (within
 * 0.1–0.5): applied to the logits, which is exact — every quantiser here (q8, q4, llama.cpp's Q8_0 and Q4_0) scales
 * its block scales by a power of two exactly, so a head scaled by α quantises to α times the unscaled one's values.
 *
 * `--ids-out` writes the token ids, one prompt after another, for a peer (llama.cpp's llama_logits.mjs evaluates
 * each prompt as a sequence: run it per prompt and concatenate). `--peer NAME=FILE.npy` adds rows for log-prob
 * arrays `[positions, vocab]` in the same order, scaled by the same α (log-softmax(α · log p) = log-softmax(α · z)).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, isDType } from "../graph/dtype.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { softmaxScaleMode } from "../graph/models/mistral4.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    seed: { type: "string", default: "5" },
    dtypes: { type: "string", default: "q4,q8" },
    threads: { type: "string", default: "2" },
    prompts: { type: "string", default: "4" },
    len: { type: "string", default: "64" },
    "softmax-scale": { type: "string", default: "deepseek_yarn" },
    "ids-out": { type: "string" },
    peer: { type: "string", multiple: true },
    json: { type: "boolean", default: false },
  },
});
const dtypes = values.dtypes!.split(",").filter(Boolean);
for (const d of dtypes) if (!isDType(d)) throw new Error(`--dtypes: ${d} is unknown`);
const prompts = Number(values.prompts), len = Number(values.len), seed = Number(values.seed);
const softmaxScale = softmaxScaleMode(values["softmax-scale"]!, "--softmax-scale");

/** Prompt `p`'s ids: spread over the text range, different per prompt. */
function promptIds(p: number, vocab: number): number[] {
  return Array.from({ length: len }, (_, i) => 1000 + ((i * 7919 + (p + 1) * 104729 + i * i * 31) % (vocab - 1000)));
}

/** Logits `[prompts · len, vocab]`: every prompt decoded one token per step from position 0. */
async function decodeLogits(dtype: DType): Promise<{ logits: Float32Array; vocab: number; ids: number[] }> {
  const m: Model = await loadModel(values.model!, {
    backend: "wasm",
    dtype,
    seed,
    threads: Number(values.threads),
    cacheDtype: "f32",
    softmaxScale,
    maxModelLen: len + 16,
    maxTokens: 8,
    maxSeqs: 1,
    quiet: true,
  });
  try {
    const vocab = m.config.vocab_size, logits = new Float32Array(prompts * len * vocab), all: number[] = [];
    for (let p = 0; p < prompts; p++) {
      const ids = promptIds(p, vocab), seq = m.pool.newSequence();
      all.push(...ids);
      m.pool.grow(seq, len);
      for (let i = 0; i < len; i++) {
        const row = await m.step({ ids: [ids[i]], pos: [i], seq: [0], blockTables: [seq.blockTable], logitRows: [0] });
        logits.set(row.subarray(0, vocab), (p * len + i) * vocab);
      }
      m.pool.release(seq);
    }
    return { logits, vocab, ids: all };
  } finally {
    m.dispose();
  }
}

/** log-softmax of α · row, in f64. */
function logSoftmax(row: ArrayLike<number>, alpha: number): Float64Array {
  const out = new Float64Array(row.length);
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) max = Math.max(max, alpha * row[v]);
  let sum = 0;
  for (let v = 0; v < row.length; v++) sum += Math.exp(alpha * row[v] - max);
  const lse = max + Math.log(sum);
  for (let v = 0; v < row.length; v++) out[v] = alpha * row[v] - lse;
  return out;
}

function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** Reads a float32 .npy array (C order). */
function readNpy(path: string): Float32Array {
  const bytes = Deno.readFileSync(path), view = new DataView(bytes.buffer);
  const headerLen = view.getUint16(8, true), header = new TextDecoder().decode(bytes.subarray(10, 10 + headerLen));
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`${path}: not <f4 C`);
  const data = bytes.slice(10 + headerLen);
  return new Float32Array(data.buffer, 0, data.byteLength / 4);
}

const ref = await decodeLogits("bf16");
const { vocab } = ref, positions = prompts * len;
if (values["ids-out"]) {
  const perPrompt = Array.from({ length: prompts }, (_, p) => ref.ids.slice(p * len, (p + 1) * len));
  Deno.writeTextFileSync(values["ids-out"], JSON.stringify(perPrompt));
}

// α = 2^k: the reference's mean top-1 probability closest to 0.3.
const row = (a: Float32Array, i: number) => a.subarray(i * vocab, (i + 1) * vocab);
let alpha = 1, bestGap = Infinity, top1 = 0;
for (let k = -2; k <= 10; k++) {
  let t = 0;
  for (let i = 0; i < positions; i++) {
    const l = logSoftmax(row(ref.logits, i), 2 ** k);
    t += Math.exp(l[argmax(l)]);
  }
  t /= positions;
  if (Math.abs(t - 0.3) < bestGap) [alpha, bestGap, top1] = [2 ** k, Math.abs(t - 0.3), t];
}
const refLog = Array.from({ length: positions }, (_, i) => logSoftmax(row(ref.logits, i), alpha));

function compare(name: string, rowOf: (i: number) => ArrayLike<number>) {
  let kl = 0, maxKl = 0, agree = 0;
  for (let i = 0; i < positions; i++) {
    const p = refLog[i], q = logSoftmax(rowOf(i), alpha);
    let d = 0;
    for (let v = 0; v < vocab; v++) if (p[v] > -700) d += Math.exp(p[v]) * (p[v] - q[v]);
    kl += d, maxKl = Math.max(maxKl, d);
    if (argmax(p) === argmax(q)) agree++;
  }
  return { name, meanKl: kl / positions, maxKl, top1Agreement: agree / positions };
}

const rows = [];
for (const d of dtypes) {
  const got = await decodeLogits(d as DType);
  rows.push(compare(d, (i) => row(got.logits, i)));
}
for (const spec of values.peer ?? []) {
  const [name, file] = spec.split("=");
  const lp = readNpy(file);
  if (lp.length !== positions * vocab) throw new Error(`${file}: ${lp.length} values, want ${positions}×${vocab}`);
  rows.push(compare(name, (i) => row(lp, i)));
}

const result = { model: values.model, seed, positions, alpha, referenceTop1: top1, softmaxScale, rows };
if (values.json) console.log(JSON.stringify(result));
else {
  console.log(`| ${values.model} seed ${seed}, head ×${alpha} | mean KL / position | max KL | top-1 agreement |`);
  console.log(`|---|---|---|---|`);
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.meanKl.toExponential(2)} | ${r.maxKl.toExponential(2)} | ` +
        `${(100 * r.top1Agreement).toFixed(1)}% |`,
    );
  }
  console.log(
    `\n${positions} positions (${prompts} prompts × ${len}, decoded one token per step); reference: ` +
      `bf16 weights, f32 activations and cache; its mean top-1 probability ${top1.toFixed(3)} at α = ${alpha}`,
  );
}
