/**
 * The `wasm` backend against the `reference` backend on a model too heavy for every CI run (`ms4-mini` by default):
 * logits of a prompt at every position, and greedy decoding from it, per weight dtype. `tests/model_test.ts` does the
 * same on `tiny` and `demo` in CI. Exit status 1 when the logits differ by more than the dtype's bound (normalised
 * max error; f32/bf16/f8 1e-4: accumulation order only; q8 2e-1: the wasm kernels multiply int8-quantised activations,
 * as llama.cpp's Q8_0 does, in decode and — on hosts with the int8 prefill path — in every prefill matmul, while the
 * reference multiplies f32 activations by the dequantised weights; measured 1.4e-1 on ms4-mini, and 6.3e-2 with
 * `--q8-prefill f32`, which keeps f32 activations wherever a matmul has more than 8 rows). Greedy ids are compared
 * too; on random weights the logits are nearly flat, so in q8 they part at once.
 *
 *   npx -y deno@2.9.6 run -A bench/equivalence.ts --model ms4-mini --dtype f32,q8 --prompt 16 --gen 32
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, isDType } from "../graph/dtype.ts";
import { normalisedError } from "../tests/op_helpers.ts";
import { loadModel, type Model } from "../engine/model.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    dtype: { type: "string", default: "f32,q8" },
    prompt: { type: "string", default: "16" },
    gen: { type: "string", default: "32" },
    threads: { type: "string", default: "2" },
    // q8 matmuls of more than 8 rows on wasm: int8 products where the host allows (default) or f32 activations.
    "q8-prefill": { type: "string", default: "int8" },
  },
});
const dtypes = values.dtype!.split(",");
for (const d of dtypes) if (!isDType(d)) throw new Error(`--dtype ${d} is unknown`);
const promptLen = Number(values.prompt), gen = Number(values.gen);
const BOUND: Partial<Record<DType, number>> = { f32: 1e-4, bf16: 1e-4, f8e4m3: 1e-4, q8: 2e-1 };
if (!["int8", "f32"].includes(values["q8-prefill"]!)) throw new Error("--q8-prefill is int8 or f32");
// Text ids away from the control range, fixed so every run compares the same prompt.
const prompt = Array.from({ length: promptLen }, (_, i) => 1000 + (i * 7919) % 100000);

/** Logits of the prompt at every position, then `gen` greedy ids (prefill, one decode step per token). */
async function run(backend: string, dtype: DType): Promise<{ logits: Float32Array; ids: number[]; seconds: number }> {
  const t0 = performance.now();
  const m: Model = await loadModel(values.model!, {
    backend,
    dtype,
    cacheDtype: "f32",
    threads: Number(values.threads),
    maxModelLen: promptLen + gen + 16,
    quiet: true,
    backendOptions: { tuning: { q8Prefill: values["q8-prefill"] === "int8" ? "int8" : "f32" } },
  });
  try {
    const logits = await m.forward(prompt);
    const vocab = m.config.vocab_size;
    const argmax = (x: Float32Array, off: number) => {
      let best = 0;
      for (let j = 1; j < vocab; j++) if (x[off + j] > x[off + best]) best = j;
      return best;
    };
    const seq = m.pool.newSequence();
    m.pool.grow(seq, promptLen + gen);
    const ids: number[] = [];
    let last = await m.step({
      ids: prompt,
      pos: prompt.map((_, i) => i),
      seq: prompt.map(() => 0),
      blockTables: [seq.blockTable],
      logitRows: [promptLen - 1],
    });
    for (let i = 0; i < gen; i++) {
      ids.push(argmax(last, 0));
      if (i === gen - 1) break;
      last = await m.step({
        ids: [ids[i]],
        pos: [promptLen + i],
        seq: [0],
        blockTables: [seq.blockTable],
        logitRows: [0],
      });
    }
    m.pool.release(seq);
    return { logits, ids, seconds: (performance.now() - t0) / 1000 };
  } finally {
    m.dispose();
  }
}

console.log(`${values.model}: prompt ${promptLen} tokens, ${gen} greedy tokens, wasm vs reference\n`);
console.log("| dtype | logits error | bound | greedy ids equal | first difference | reference s | wasm s |");
console.log("|---|---:|---:|---:|---:|---:|---:|");
let failed = false;
for (const d of dtypes as DType[]) {
  const want = await run("reference", d);
  const got = await run("wasm", d);
  const err = normalisedError(got.logits, want.logits);
  const same = got.ids.filter((id, i) => id === want.ids[i]).length;
  const first = got.ids.findIndex((id, i) => id !== want.ids[i]);
  const bound = BOUND[d] ?? 1e-4;
  if (!(err <= bound)) failed = true;
  console.log(
    `| ${d} | ${err.toExponential(2)} | ${bound} | ${same}/${gen} | ${first < 0 ? "none" : first} | ` +
      `${want.seconds.toFixed(1)} | ${got.seconds.toFixed(1)} |`,
  );
}
if (failed) {
  console.error("logits differ beyond the bound");
  Deno.exit(1);
}
