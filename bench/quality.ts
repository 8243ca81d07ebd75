/**
 * Quality of the quantised dtypes against f32 on the same random weights: mean KL(f32 ‖ dtype) per position and top-1
 * agreement over a prompt's positions, on the wasm backend.
 *
 * ```
 * deno run -A bench/quality.ts --model ms4-mini --seed 5 --tokens 64 --dtypes q8,nvfp4 [--json]
 * ```
 *
 * Random weights give near-flat logits, where KL says little, so the logits are sharpened by a power of two α chosen
 * so that f32's mean top-1 probability lies in 0.1–0.5. Scaling the logits by α is exactly scaling the lm head by α:
 * the head is linear, its f32/bf16 values scale exactly by a power of two, and q8's block scales (amax / 127) scale
 * with it while its int8 values stay the same.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DType } from "../graph/dtype.ts";
import { loadModel } from "../engine/model.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    seed: { type: "string", default: "5" },
    tokens: { type: "string", default: "64" },
    dtypes: { type: "string", default: "q8,nvfp4" },
    threads: { type: "string", default: "2" },
    json: { type: "boolean", default: false },
  },
});
const T = Number(values.tokens);
const ids = Array.from({ length: T }, (_, i) => 1000 + ((i * 7919 + 104729) % 120000));

async function logitsOf(dtype: DType): Promise<{ logits: Float32Array; vocab: number }> {
  const m = await loadModel(values.model!, {
    backend: "wasm",
    dtype,
    seed: Number(values.seed),
    threads: Number(values.threads),
    cacheDtype: "f32",
    maxModelLen: T + 16,
    maxTokens: T,
    quiet: true,
  });
  try {
    return { logits: await m.forward(ids), vocab: m.config.vocab_size };
  } finally {
    m.dispose();
  }
}

/** log-softmax of row t of `l` scaled by α, in f64. */
function logSoftmax(l: Float32Array, t: number, V: number, alpha: number): Float64Array {
  const out = new Float64Array(V);
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, alpha * l[t * V + v]);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(alpha * l[t * V + v] - max);
  const lse = max + Math.log(sum);
  for (let v = 0; v < V; v++) out[v] = alpha * l[t * V + v] - lse;
  return out;
}

const argmax = (a: Float64Array) => a.reduce((b, v, i) => v > a[b] ? i : b, 0);

const ref = await logitsOf("f32");
const V = ref.vocab;
// α: the smallest power of two that brings f32's mean top-1 probability to at least 0.1 (and at most 0.5).
let alpha = 1;
const meanTop1 = (a: number) => {
  let s = 0;
  for (let t = 0; t < T; t++) {
    s += Math.exp(logSoftmax(ref.logits, t, V, a).reduce((m, v) => Math.max(m, v), -Infinity));
  }
  return s / T;
};
while (meanTop1(alpha) < 0.1 && alpha < 2 ** 20) alpha *= 2;
while (meanTop1(alpha) > 0.5 && alpha > 2 ** -20) alpha /= 2;
const top1 = meanTop1(alpha);
const refLog = Array.from({ length: T }, (_, t) => logSoftmax(ref.logits, t, V, alpha));

const rows: { dtype: string; kl: number; klMax: number; top1Agreement: number }[] = [];
for (const dtype of values.dtypes!.split(",") as DType[]) {
  const got = await logitsOf(dtype);
  let kl = 0, klMax = 0, agree = 0;
  for (let t = 0; t < T; t++) {
    const p = refLog[t], q = logSoftmax(got.logits, t, V, alpha);
    let k = 0;
    for (let v = 0; v < V; v++) k += Math.exp(p[v]) * (p[v] - q[v]);
    kl += k;
    klMax = Math.max(klMax, k);
    if (argmax(p) === argmax(q)) agree++;
  }
  rows.push({ dtype, kl: kl / T, klMax, top1Agreement: agree / T });
}
if (values.json) console.log(JSON.stringify({ alpha, meanTop1: top1, rows }, null, 2));
else {
  console.log(
    `${values.model} seed ${values.seed}, ${T} positions, logits × ${alpha} (f32 mean top-1 probability ${
      top1.toFixed(3)
    })`,
  );
  console.log("| dtype | mean KL(f32 ‖ dtype) | max KL | top-1 agreement |");
  console.log("| --- | --- | --- | --- |");
  for (const r of rows) {
    console.log(
      `| ${r.dtype} | ${r.kl.toExponential(2)} | ${r.klMax.toExponential(2)} | ${
        (100 * r.top1Agreement).toFixed(1)
      }% |`,
    );
  }
}
