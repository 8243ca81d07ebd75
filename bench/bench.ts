/**
 * `deno task bench` — prefill and decode speed of one model, like llama-bench:
 *
 * ```
 * deno task bench --model ms4-mini --dtype q8 --threads 2 --prompt 512 --gen 64 --batch 1,8 [--json]
 *   [--softmax-scale plain|deepseek_yarn] [--cache-dtype bf16|f32] [--head-dtype q4|q8|bf16]
 *   [--speculative-model DIR|PRESET --num-speculative-tokens K]
 * ```
 *
 * With `--speculative-model` (an EAGLE draft head) it also measures, for every batch size, engine decode with and
 * without the draft (`bench/speculative_run.ts`): acceptance, tokens per target forward, the cost ratio c = draft step
 * / target step and the (K+1)/(1+Kc) bound. Random preset drafts are almost never accepted: real rates need the
 * released draft; `deno task bench:speculative` builds a full-acceptance pair for the best case.
 *
 * `--softmax-scale` overrides the checkpoint's MLA softmax scale (`loadModel`'s `softmaxScale`; the scale does not
 * change the work, only the numbers); the result names the one in use.
 *
 * Prefill runs one `--prompt`-token sequence in a single step and computes logits for its last token only. Decode
 * runs `--gen` steps of `B` sequences (one token each, greedy: on the backend where it samples, so only the ids
 * are read back, as in the engine) for every batch size B, `--repetitions` times (default 3; the median counts). The same run measures the
 * machine's memory bandwidth (a STREAM-style add on the WASM kernels) so decode can be read against its roofline:
 * bytes read per decoded token (active weights in their stored dtype + latent cache) / bandwidth. Not for cuda or
 * webgpu (the CPU's bandwidth is not theirs: no roofline is printed; bench/cuda_check.ts measures a GPU's). Peak RSS is read
 * against the plan's prediction: weights, latent cache, arena and I/O of the step plan plus the backend's kernel
 * scratch.
 *
 * `--pieces N`, `--spin-us N`, `--join-spin-us N` set the wasm backend's dispatch tuning (`WasmTuning.pieces`,
 * `spinMicros`, `joinSpinMicros`, passed as `create({ tuning })`) for comparisons; `--pieces 0 --spin-us 5
 * --join-spin-us 5` is close to the dispatch before dynamic pieces and timed spinning. Peak RSS is the process's
 * high-water mark (`VmHWM` of /proc/self/status, read at the end), so spikes while loading count.
 *
 * `--backend onnx,wasm`: prefill (steps over `--small-step-tokens`, default 64) on onnxruntime for matmuls and the
 * routed experts, decode on wasm alone (`loadModel`'s `smallStepTokens`); `--ort-spin` lets ORT's threads spin
 * when idle (off by default, so they do not take the cores from the wasm pool).
 *
 * `--profile` (wasm backend) then runs three more prefills and `--gen` more decode steps at the first batch size with
 * every op timed and prints, for each,
 * milliseconds per step by op kind (matmuls by weight dtype and name), the host time around the backend's runs,
 * and the thread-pool jobs per step with the measured cost of an empty one. With `--backend onnx,wasm` it profiles
 * decode alone (the wasm-only plan of small steps; prefill runs mostly on onnx, which it cannot time by op).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, headDTypeOf, isDType } from "../graph/dtype.ts";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";
import { softmaxScaleMode } from "../graph/models/mistral4.ts";
import { WasmKernels } from "../runtime/backends/wasm/module.ts";
import type { WasmTuning } from "../runtime/backends/wasm/backend.ts";
import { ThreadPool } from "../runtime/backends/wasm/threads.ts";
import { wasmProfile } from "../runtime/backends/wasm/profile.ts";
import { cacheDtypeFlag, speculativeFlags } from "../server/cli.ts";
import { speculativeRow } from "./speculative_run.ts";
import { bytesPerToken, memoryBandwidth } from "./roofline.ts";
import { kindOf } from "../runtime/backend.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "ms4-mini" },
    dtype: { type: "string" },
    "head-dtype": { type: "string" },
    backend: { type: "string", default: "auto" },
    strict: { type: "boolean", default: false },
    threads: { type: "string" },
    prompt: { type: "string", default: "512" },
    gen: { type: "string", default: "64" },
    batch: { type: "string", default: "1" },
    seed: { type: "string", default: "0" },
    json: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    repetitions: { type: "string", default: "3" },
    // wasm dispatch tuning (defaults: the backend's): pieces per thread of large jobs, worker and caller spin times.
    pieces: { type: "string" },
    "spin-us": { type: "string" },
    "join-spin-us": { type: "string" },
    "softmax-scale": { type: "string" },
    "speculative-model": { type: "string" },
    "num-speculative-tokens": { type: "string" },
    "cache-dtype": { type: "string" },
    // onnx backend: ORT's idle spinning (off by default), and the step size up to which onnx,wasm runs wasm alone.
    "ort-spin": { type: "boolean", default: false },
    "small-step-tokens": { type: "string" },
  },
});
const speculative = speculativeFlags(values["speculative-model"], values["num-speculative-tokens"]);
const cacheDtype = cacheDtypeFlag(values["cache-dtype"]);
if (values.dtype !== undefined && !isDType(values.dtype)) throw new Error(`--dtype ${values.dtype} is unknown`);
const headDType = values["head-dtype"] === undefined ? undefined : headDTypeOf(values["head-dtype"], "--head-dtype");
const softmaxScale = values["softmax-scale"] === undefined
  ? undefined
  : softmaxScaleMode(values["softmax-scale"], "--softmax-scale");
const promptLen = Number(values.prompt);
const gen = Number(values.gen);
const repetitions = Math.max(1, Number(values.repetitions));
const batches = values.batch!.split(",").map(Number);
const threads = values.threads ? Number(values.threads) : navigator.hardwareConcurrency;

/** The process's resident high-water mark (VmHWM), or the current RSS where /proc is not there. */
function peakRssBytes(): number {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/^VmHWM:\s+(\d+) kB/m);
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

const tuning: Partial<WasmTuning> = {};
if (values.pieces !== undefined) tuning.pieces = Number(values.pieces);
if (values["spin-us"] !== undefined) tuning.spinMicros = Number(values["spin-us"]);
if (values["join-spin-us"] !== undefined) tuning.joinSpinMicros = Number(values["join-spin-us"]);

const t0 = performance.now();
const model = await loadModel(values.model!, {
  backend: values.backend,
  strict: values.strict,
  log: (line) => console.error(line), // the load report (fallbacks, copies, instances), even with --json
  dtype: values.dtype as DType | undefined,
  headDType,
  threads,
  backendOptions: { tuning, spinning: values["ort-spin"] },
  ...(values["small-step-tokens"] !== undefined ? { smallStepTokens: Number(values["small-step-tokens"]) } : {}),
  seed: Number(values.seed),
  maxModelLen: promptLen + gen + 16 + (speculative?.numTokens ?? 0),
  maxTokens: Math.max(promptLen, ...batches.map((b) => b * (1 + (speculative?.numTokens ?? 0)))),
  maxSeqs: Math.max(...batches),
  quiet: true,
  softmaxScale,
  speculative,
  cacheDtype,
});
const loadSeconds = (performance.now() - t0) / 1000;

/** Random prompt ids in the text range (seeded by position so every run uses the same prompt). */
function promptIds(n: number, salt: number): number[] {
  return Array.from({ length: n }, (_, i) => 1000 + ((i * 7919 + salt * 104729) % (model.config.vocab_size - 1000)));
}

function argmax(logits: Float32Array, row: number, vocab: number): number {
  let best = 0;
  for (let v = 1; v < vocab; v++) if (logits[row * vocab + v] > logits[row * vocab + best]) best = v;
  return best;
}

/** Seconds of one prefill of a `--prompt`-token sequence (the cache blocks are released afterwards). */
async function prefillOnce(m: Model): Promise<number> {
  const ids = promptIds(promptLen, 1);
  const seq = m.pool.newSequence();
  m.pool.grow(seq, ids.length);
  const range = ids.map((_, i) => i);
  if (profileSteps && stepMs.length === 0) wasmProfile.reset();
  wasmProfile.enabled = profileSteps;
  const start = performance.now();
  await m.step({
    ids,
    pos: range,
    seq: range.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: [ids.length - 1],
  });
  const seconds = (performance.now() - start) / 1000;
  wasmProfile.enabled = false;
  if (profileSteps) stepMs.push(seconds * 1000);
  m.pool.release(seq);
  return seconds;
}

/**
 * Prefill tokens/s: the median of three runs after an unmeasured one (as llama-bench warms up), so the first run's
 * compilation to V8's optimising tier and first-touch page faults are not counted.
 */
async function prefill(m: Model): Promise<number> {
  await prefillOnce(m);
  const runs = [await prefillOnce(m), await prefillOnce(m), await prefillOnce(m)].sort((a, b) => a - b);
  return promptLen / runs[1];
}

/** Per-step wall time of `prefillOnce` and `decode` (ms), filled when `profileSteps` is true. */
let stepMs: number[] = [];
let profileSteps = false;

async function decode(m: Model, batch: number): Promise<number> {
  const seqs = Array.from({ length: batch }, () => m.pool.newSequence());
  for (const s of seqs) m.pool.grow(s, gen + 1);
  const tables = seqs.map((s) => s.blockTable);
  const rows = seqs.map((_, b) => b);
  // One prompt token each (different ones), then `gen` greedy steps of `batch` tokens.
  let ids = rows.map((b) => promptIds(1, b + 2)[0]);
  const greedy = greedySampling(batch);
  const vocab = m.config.vocab_size;
  let seconds = 0;
  for (let p = 0; p <= gen; p++) {
    if (profileSteps && p === 1) wasmProfile.reset();
    wasmProfile.enabled = profileSteps && p > 0;
    const start = performance.now();
    const input = { ids, pos: rows.map(() => p), seq: rows, blockTables: tables, logitRows: rows };
    // Greedy on the backend where it samples (only the ids come back, as in the engine), else on the host.
    if (m.samplesOnBackend) ids = [...await m.sampleStep(input, greedy)];
    else {
      const logits = await m.step(input);
      ids = rows.map((b) => argmax(logits, b, vocab));
    }
    wasmProfile.enabled = false;
    if (p > 0) seconds += (performance.now() - start) / 1000; // step 0 is the 1-token prefill
    if (p > 0 && profileSteps) stepMs.push(performance.now() - start);
  }
  for (const s of seqs) m.pool.release(s);

  return (batch * gen) / seconds;
}

/** Wall time of one thread-pool job that does nothing (wake the workers, wait for them), in ms: median of 2000. */
async function emptyJobMs(): Promise<number> {
  const k = await WasmKernels.load({ maxBytes: 64 * 2 ** 20 });
  const pool = await ThreadPool.create(k, threads);
  try {
    const a = k.alloc(64), times: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const start = performance.now();
      pool.parallelFor("add", [a, a, a], 8, { align: 4 });
      times.push(performance.now() - start);
    }
    return times.sort((x, y) => x - y)[times.length >> 1];
  } finally {
    pool.dispose();
  }
}

/** Runs `steps` with every op timed and returns the table of ms per step by key, titled `title`. */
async function profileTable(title: string, steps: () => Promise<void>): Promise<string> {
  stepMs = [];
  profileSteps = true;
  await steps();
  profileSteps = false;
  const n = stepMs.length, per = (x: number) => (x / n).toFixed(3);
  const total = stepMs.reduce((a, b) => a + b, 0), rows = wasmProfile.rows();
  const ops = rows.reduce((a, r) => a + r.ms, 0);
  const jobMs = await emptyJobMs();
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  log(`\nprofile: ${title}, ${n} steps, ms per step (${threads} threads)\n`);
  log(`| op | ms/step | % of step | calls/step | jobs/step |`);
  log(`|---|---|---|---|---|`);
  for (const r of rows) {
    const pct = (100 * r.ms / total).toFixed(1);
    log(`| ${r.key} | ${per(r.ms)} | ${pct} | ${per(r.calls)} | ${per(r.jobs)} |`);
  }
  const runLoop = wasmProfile.runMs - ops, host = total - wasmProfile.runMs;
  log(`| (wasm run loop, timers) | ${per(runLoop)} | ${(100 * runLoop / total).toFixed(1)} | | |`);
  log(`| (host: executor, inputs, logits read) | ${per(host)} | ${(100 * host / total).toFixed(1)} | | |`);
  log(`| **step** | ${per(total)} | 100 | | ${per(wasmProfile.jobs)} |`);
  log(
    `\nan empty thread-pool job costs ${(1000 * jobMs).toFixed(1)} µs (median): ` +
      `${per(wasmProfile.jobs * jobMs)} ms per step in dispatch at the jobs above (already inside the op times)`,
  );
  return lines.join("\n");
}

const prefillTps = await prefill(model);
// Decode: the median of --repetitions runs per batch size (as llama-bench's -r), so one stall of the shared machine
// does not decide the number.
const decodeTps: Record<string, number> = {};
for (const b of batches) {
  const runs: number[] = [];
  for (let r = 0; r < repetitions; r++) runs.push(await decode(model, b));
  decodeTps[b] = runs.sort((x, y) => x - y)[runs.length >> 1];
}
// With onnx leading, decode runs the wasm-only plan of small steps: only its table means something.
const wasmDecode = model.backend.name === "wasm" || model.smallStepPlan !== null;
if (values.profile && !wasmDecode) throw new Error(`--profile needs wasm decode, not ${model.backend.name}`);
const profile = !values.profile ? "" : [
  ...(model.backend.name !== "wasm" ? [] : [
    await profileTable(`prefill ${promptLen} tokens`, async () => {
      for (let i = 0; i < 3; i++) await prefillOnce(model);
    }),
  ]),
  await profileTable(`decode batch ${batches[0]}`, async () => void await decode(model, batches[0])),
].join("\n");
// Speculative rows through the engine (decode of --gen tokens after 16-token prompts), one per batch size.
const speculativeRows = [];
if (model.draft) {
  for (const batch of batches) speculativeRows.push(await speculativeRow(model, { batch, gen, prompt: 16 }));
}
const perToken = bytesPerToken(model);
const scratchBytes = model.backends.reduce((n, b) => n + ((b as { scratchBytes?: number }).scratchBytes ?? 0), 0);
const planned = Object.values(model.plannedMemory).reduce((a, b) => a + b, 0) + scratchBytes;
// The CPU's STREAM rate is no roofline for a GPU backend's decode (cuda_check.ts measures the device's): skip it.
const gpu = model.backends.some((b) => ["cuda", "webgpu"].includes(kindOf(b.name)));
const bandwidth = gpu ? null : await memoryBandwidth(threads);
const peakRss = peakRssBytes();

const result = {
  model: model.name,
  // `onnx,wasm` for a mixed plan; `wasm` for wasm instances.
  backend: [...new Set(model.backends.map((b) => kindOf(b.name)))].join(","),
  backends: model.backends.map((b) => b.name),
  dtype: model.graph.weights.find((w) => w.name.endsWith("attn.wq_a"))?.dtype ?? values.dtype ?? "?",
  headDtype: model.graph.weights.find((w) => w.name === "lm_head")?.dtype ?? "tied",
  threads,
  softmaxScale: model.config.softmax_scale_mode,
  prompt: promptLen,
  gen,
  loadSeconds,
  prefillTokensPerSecond: prefillTps,
  decodeTokensPerSecond: decodeTps[batches[0]],
  decodeTokensPerSecondByBatch: decodeTps,
  bytesPerToken: perToken,
  // null for cuda and webgpu (no CPU bandwidth measured).
  memoryBandwidthGBps: bandwidth,
  rooflineTokensPerSecond: bandwidth === null ? null : (bandwidth * 1e9) / perToken,
  rooflineFraction: bandwidth !== null && decodeTps[1] !== undefined
    ? decodeTps[1] / ((bandwidth * 1e9) / perToken)
    : null,
  peakRssBytes: peakRss,
  // The step plan's sizes (weights, latent cache, arena, I/O) plus the backend's kernel scratch: what the engine
  // itself asks for; the rest of the RSS is the runtime and the host's copy of the weights while they load.
  plannedBytes: planned,
  plannedBytesByKind: { ...model.plannedMemory, scratch: scratchBytes },
  ...(model.draft
    ? {
      speculative: {
        draft: model.draft.name,
        numTokens: model.draft.numTokens,
        draftCacheBytes: model.draft.cacheBytes,
        draftWeightBytes: model.draft.weightBytes,
        rows: speculativeRows,
      },
    }
    : {}),
};
model.dispose();

if (values.json) console.log(JSON.stringify(result));
else {
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(`| model | backend | dtype | threads | test | tokens/s |`);
  console.log(`|---|---|---|---|---|---|`);
  const head = `| ${result.model} | ${result.backend} | ${result.dtype} (head ${result.headDtype}) | ${threads}`;
  console.log(`${head} | pp${promptLen} | ${f(prefillTps)} |`);
  for (const b of batches) console.log(`${head} | tg${gen} (batch ${b}) | ${f(decodeTps[b], 2)} |`);
  const roofline = bandwidth === null || result.rooflineTokensPerSecond === null
    ? "no CPU roofline for a GPU backend"
    : `bandwidth ${f(bandwidth)} GB/s · roofline ${f(result.rooflineTokensPerSecond, 2)} tok/s` +
      (result.rooflineFraction !== null ? ` (${f(100 * result.rooflineFraction)}% reached at batch 1)` : "");
  console.log(
    `\nbytes/token ${(perToken / 1e6).toFixed(1)} MB · ${roofline}` +
      ` · peak RSS ${(peakRss / 2 ** 30).toFixed(2)} GiB · load ${f(loadSeconds)} s · softmax scale ` +
      result.softmaxScale,
  );
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const p = result.plannedBytesByKind;
  console.log(
    `planned ${mib(planned)} (weights ${mib(p.weights)}, cache ${mib(p.state)}, arena ${mib(p.arena)}, ` +
      `io ${mib(p.io)}, kernel scratch ${mib(p.scratch)}); peak RSS − planned = ${mib(peakRss - planned)} ` +
      `(the runtime, and the chunks in flight while loading)`,
  );
  if (result.speculative) {
    const sp = result.speculative;
    console.log(
      `\nspeculative: draft ${sp.draft}, K ${sp.numTokens} (its cache ${mib(sp.draftCacheBytes)} and weights ` +
        `${mib(sp.draftWeightBytes)} are in the plan above)`,
    );
    console.log("| batch | accepted | tokens/forward | c | (K+1)/(1+Kc) | plain tok/s | spec tok/s | speed-up |");
    console.log("|---|---|---|---|---|---|---|---|");
    for (const r of sp.rows) {
      console.log(
        `| ${r.batch} | ${f(100 * r.acceptanceRate, 0)}% | ${f(r.tokensPerTargetForward, 2)} | ${f(r.c, 2)} | ` +
          `${f(r.bound, 2)} | ${f(r.plainTokensPerSecond)} | ${f(r.specTokensPerSecond)} | ${f(r.speedup, 2)}× |`,
      );
    }
  }
}
if (profile) (values.json ? console.error : console.log)(profile);
