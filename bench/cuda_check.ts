/**
 * The Deno half of `bench/cuda_check.sh` (the cuda backend on a lent GPU): one stage per call, each printing its
 * markdown table to stdout (the script writes it to `$OUT` before the next stage starts).
 *
 * ```
 * deno run -A --no-lock --cached-only bench/cuda_check.ts logits [--gen 64] [--models tiny,ms4-mini]  # stage 2
 * deno run -A --no-lock --cached-only bench/cuda_check.ts bandwidth                # device copy bandwidth, GB/s
 * deno run -A --no-lock --cached-only bench/cuda_check.ts roofline BENCH.json GBPS [--batch 64] [--dtype D]  # stage 3
 * deno run -A --no-lock --cached-only bench/cuda_check.ts hf-logits DIR OUT.bin    # stage 4: our logits on cuda
 * ```
 *
 * - `logits`: `tiny` and `ms4-mini` (bf16, f32 cache) on cuda against wasm: the prompt's logits by normalised error
 *   (`max|a − e| / max|e|`, bound 1e-4: f32 sums in another order through every layer), then `--gen` greedy ids
 *   (on-device argmax) that must be identical.
 * - `bandwidth`: `cuMemcpyDtoDAsync` of 1 GiB, timed by events: 2 × bytes / time (read + write), best of 5.
 * - `roofline`: reads `bench/bench.ts --json` output and the bandwidth, prints tok/s against the ceilings the
 *   issue states (batch 1: bandwidth ÷ bytes per token; batch B: B × bandwidth ÷ bytes one step reads, with the
 *   routed experts it touches bounded, not measured: the verdict is pass/FAIL only where the bounds agree).
 * - `hf-logits`: logits of the `hf` prompt for a checkpoint directory on cuda, under both softmax scales, as raw f32
 *   files `OUT.plain.bin` and `OUT.deepseek_yarn.bin` for bench/cuda_check_hf.py.
 *
 * @module
 */

import { greedySampling, loadModel, type Model } from "../engine/model.ts";
import { type CudaProbe, probeCuda } from "../runtime/backends/cuda/backend.ts";
import { Driver } from "../runtime/backends/cuda/ffi.ts";
import { deviceInfo } from "../runtime/backends/cuda/device.ts";
import { BITS_PER_ELEMENT, type DType, isDType } from "../graph/dtype.ts";
import { numel } from "../graph/ir.ts";
import { decodeGraph } from "../graph/inspect.ts";
import { resolveModel } from "../graph/models/mod.ts";
import { cacheBytesPerToken } from "../graph/models/mistral4.ts";
import { normalisedError } from "../tests/op_helpers.ts";
import { PROMPT } from "../tests/model_helpers.ts"; // the prompt of stages 2 and 4

const [stage, ...args] = Deno.args;
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};

/** `n` greedy ids after `prompt`: a prefill, then one-token steps sampled on the model's backend (argmax). */
async function greedyIds(m: Model, n: number): Promise<number[]> {
  const seq = m.pool.newSequence();
  if (!m.pool.grow(seq, PROMPT.length + n)) throw new Error("greedy: not enough cache blocks");
  const step = (ids: number[], p0: number) => ({
    ids,
    pos: ids.map((_, i) => p0 + i),
    seq: ids.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: [ids.length - 1],
  });
  const out: number[] = [];
  let [id] = await m.sampleStep(step(PROMPT, 0), greedySampling(1));
  for (let i = 0; i < n; i++) {
    out.push(id);
    if (i < n - 1) [id] = await m.sampleStep(step([id], PROMPT.length + i), greedySampling(1));
  }
  m.pool.release(seq);
  return out;
}

async function logitsStage(): Promise<string> {
  const gen = flag("gen", 64), rows: string[] = [];
  rows.push(
    "| model | logits error (cuda vs wasm) | bound | greedy ids identical | verdict |",
    "|---|---|---|---|---|",
  );
  const models = (args[args.indexOf("--models") + 1] && args.includes("--models"))
    ? args[args.indexOf("--models") + 1].split(",")
    : ["tiny", "ms4-mini"];
  for (const model of models) {
    const opts = { seed: 3, maxModelLen: 256, maxTokens: 128, maxSeqs: 2, cacheDtype: "f32" as const, quiet: true };
    const run = async (backend: string) => {
      const m = await loadModel(model, { ...opts, backend });
      try {
        return { logits: await m.forward(PROMPT), ids: await greedyIds(m, gen) };
      } finally {
        m.dispose();
      }
    };
    try {
      const want = await run("wasm"), got = await run("cuda");
      const err = normalisedError(got.logits, want.logits);
      const diverge = got.ids.findIndex((id, i) => id !== want.ids[i]);
      const same = diverge < 0
        ? `yes (${gen})`
        : `no: first differs at ${diverge} (${got.ids[diverge]} vs ${want.ids[diverge]})`;
      rows.push(
        `| ${model} | ${err.toExponential(2)} | 1e-4 | ${same} | ${err <= 1e-4 && diverge < 0 ? "pass" : "FAIL"} |`,
      );
    } catch (e) {
      rows.push(`| ${model} | error: ${(e as Error).message.split("\n")[0]} | 1e-4 | | FAIL |`);
    }
  }
  return rows.join("\n");
}

/** Device-to-device copy bandwidth (read + write) in GB/s, best of 5, timed by CUDA events. */
function bandwidth(): number {
  const found: CudaProbe = probeCuda();
  if (!found.ok) throw new Error(found.reason);
  const d = Driver.open();
  d.init();
  const dev = deviceInfo(d, 0);
  d.primaryContext(dev.handle);
  const stream = d.streamCreate(), bytes = 2 ** 30;
  const a = d.memAlloc(bytes), b = d.memAlloc(bytes);
  const start = d.eventCreate(0), end = d.eventCreate(0);
  let best = 0;
  try {
    for (let i = 0; i < 6; i++) {
      d.eventRecord(start, stream);
      d.memcpyDtoDAsync(b, a, bytes, stream);
      d.eventRecord(end, stream);
      d.eventSynchronize(end);
      const ms = d.eventElapsed(start, end);
      if (i > 0) best = Math.max(best, (2 * bytes) / (ms * 1e6));
    }
  } finally {
    d.memFree(a);
    d.memFree(b);
    d.eventDestroy(start);
    d.eventDestroy(end);
    d.streamDestroy(stream);
    d.releasePrimaryContext(dev.handle);
  }
  return best;
}

/**
 * Bytes one decode step of `batch` tokens reads, split so the routed experts can be counted: every weight but the
 * routed experts once (the embedding one row per token), and each MoE layer's bytes per expert (summed over layers).
 * Built from the decode graph of `model` at `dtype` (no weights are made), as bench.ts's bytes per token are.
 */
async function stepBytes(model: string, dtype: DType | undefined, batch: number) {
  const resolved = await resolveModel(model), c = resolved.config;
  const graph = decodeGraph(resolved, { dtype });
  let dense = 0, perExpert = 0;
  for (const w of graph.weights) {
    const bytes = (numel(w.shape as number[]) * BITS_PER_ELEMENT[w.dtype]) / 8;
    if (/^layers\.\d+\.moe\.(gate_up|down)$/.test(w.name)) perExpert += bytes / c.n_routed_experts;
    else dense += w.name === "embed" && !c.tie_word_embeddings ? (batch * bytes) / c.vocab_size : bytes;
  }
  return { config: c, dense, perExpert };
}

/**
 * The stage 3 table. Batch 1 against bandwidth ÷ bytes per token. Batch B against B × bandwidth ÷ the bytes of one
 * step: the weights but the routed experts, the experts the step's tokens touch, and the latent cache read. Which
 * experts the device-made weights route to is not read back (the step graph has no output for it), so the touched
 * experts are bounded: at least top-k per MoE layer (every token agrees), at most min(experts, B × top-k). The
 * verdict is pass only when even the fewest bytes (the highest ceiling) give ≥ 50%, FAIL only when the most bytes
 * (the lowest ceiling) give < 50%, else "undecided" with the range; the ceiling at uniform routing is shown apart.
 */
async function rooflineStage(file: string, gbps: number): Promise<string> {
  const r = JSON.parse(Deno.readTextFileSync(file));
  const perToken: number = r.bytesPerToken, batch = flag("batch", 64);
  const ceiling1 = (gbps * 1e9) / perToken;
  const tps: Record<string, number> = r.decodeTokensPerSecondByBatch ?? {};
  const rows = [
    "| measure | value | ceiling | fraction | target | verdict |",
    "|---|---|---|---|---|---|",
    `| load (s) | ${Number(r.loadSeconds).toFixed(1)} | | | reported | info |`,
    `| prefill ${r.prompt} tokens (tok/s) | ${Number(r.prefillTokensPerSecond).toFixed(1)} | | | reported | info |`,
  ];
  const b1 = tps["1"];
  if (b1 !== undefined) {
    const f = b1 / ceiling1;
    rows.push(
      `| decode batch 1 (tok/s) | ${b1.toFixed(1)} | ${ceiling1.toFixed(1)} | ${(100 * f).toFixed(1)}% | ≥ 60% | ${
        f >= 0.6 ? "pass" : "FAIL"
      } |`,
    );
  }
  const bb = tps[String(batch)];
  if (bb !== undefined) {
    const dtypeArg = args.includes("--dtype") ? args[args.indexOf("--dtype") + 1] : r.dtype;
    const { config: c, dense, perExpert } = await stepBytes(r.model, isDType(dtypeArg) ? dtypeArg : undefined, batch);
    const E = c.n_routed_experts, K = c.num_experts_per_tok;
    // bench.ts's decode steps 1..gen attend over 2..gen+1 positions each; the latent cache's dtype is bf16 unless set.
    const cache = batch * ((Number(r.gen) + 3) / 2) * cacheBytesPerToken(c, 2);
    const bytesAt = (touched: number) => dense + touched * perExpert + cache;
    const fractionAt = (touched: number) => (bb * bytesAt(touched)) / (batch * gbps * 1e9);
    const ceilingAt = (touched: number) => (batch * gbps * 1e9) / bytesAt(touched);
    const fewest = K, most = Math.min(E, batch * K), uniform = E * (1 - (1 - K / E) ** batch);
    const lo = fractionAt(fewest), hi = fractionAt(most);
    const verdict = lo >= 0.5 ? "pass" : hi < 0.5 ? "FAIL" : "undecided (routing not measured)";
    const pct = (f: number) => `${(100 * f).toFixed(1)}%`;
    rows.push(
      `| decode batch ${batch} (tok/s) | ${bb.toFixed(1)} | ${ceilingAt(most).toFixed(1)}–${
        ceilingAt(fewest).toFixed(1)
      } (${most}–${fewest} experts per layer) | ${pct(lo)}–${pct(hi)} | ≥ 50% | ${verdict} |`,
      `| batch ${batch} at uniform routing (${uniform.toFixed(1)} experts per layer) | | ${
        ceilingAt(uniform).toFixed(1)
      } | ${pct(fractionAt(uniform))} | | info |`,
      `| batch ${batch} step bytes (GB): weights but routed experts, per expert per layer, cache | ${
        (dense / 1e9).toFixed(2)
      }, ${(perExpert / 1e9).toFixed(3)}, ${(cache / 1e9).toFixed(3)} | | | | info |`,
    );
  }
  rows.push(`| device bandwidth (GB/s) | ${gbps.toFixed(0)} | | | measured | info |`);
  rows.push(`| bytes per token (MB) | ${(perToken / 1e6).toFixed(1)} | | | | info |`);
  return rows.join("\n");
}

async function hfLogits(dir: string, out: string): Promise<string> {
  const lines: string[] = [];
  for (const scale of ["plain", "deepseek_yarn"] as const) {
    const m = await loadModel(dir, { backend: "cuda", softmaxScale: scale, cacheDtype: "f32", quiet: true });
    try {
      const logits = await m.forward(PROMPT);
      await Deno.writeFile(`${out}.${scale}.bin`, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
      lines.push(`${scale}: ${logits.length} logits written`);
    } finally {
      m.dispose();
    }
  }
  return lines.join("\n");
}

try {
  if (stage === "logits") console.log(await logitsStage());
  else if (stage === "bandwidth") console.log(bandwidth().toFixed(1));
  else if (stage === "roofline") console.log(await rooflineStage(args[0], Number(args[1])));
  else if (stage === "hf-logits") console.log(await hfLogits(args[0], args[1]));
  else throw new Error(`unknown stage "${stage}" (logits, bandwidth, roofline, hf-logits)`);
} catch (e) {
  console.error(`cuda_check ${stage}: ${(e as Error).stack ?? e}`);
  Deno.exit(1);
}
// The wasm thread pool keeps a process alive.
Deno.exit(0);
