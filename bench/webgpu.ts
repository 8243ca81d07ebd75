/**
 * WebGPU benchmark: prefill and decode speed of presets on the `webgpu` backend (wall clock, batch 1, greedy
 * sampling on the device), then the GPU time of each kernel from timestamp queries (the backend's `profile`
 * option: one compute pass per dispatch, stamped at its beginning and end), with the bytes each kernel binds over
 * its time: an upper bound on its traffic, so for the decode matvecs (their weights are nearly all they bind) about
 * their bandwidth. On a software adapter (lavapipe) these are CPU timings of an emulated GPU: correctness and
 * relative cost only.
 *
 *   XDG_RUNTIME_DIR=/tmp deno run -A bench/webgpu.ts [--model tiny,demo] [--dtype bf16] [--prompt 64] [--gen 8]
 *     [--split-chunk 128] [--no-f16] [--matvec-threads 0] [--json]
 *
 * Decode steps follow the prompt, so their context is `--prompt` long: past `--split-chunk` positions they take the
 * split-context MLA kernels.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { greedySampling, loadModel, type Model } from "../engine/model.ts";
import type { WebGpuBackend } from "../runtime/backends/webgpu/backend.ts";
import type { KernelTime } from "../runtime/backends/webgpu/profile.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "tiny,demo" },
    dtype: { type: "string", default: "bf16" },
    prompt: { type: "string", default: "64" },
    gen: { type: "string", default: "8" },
    "split-chunk": { type: "string", default: "128" },
    "no-f16": { type: "boolean", default: false },
    "matvec-threads": { type: "string", default: "0" },
    json: { type: "boolean", default: false },
  },
});
const promptLen = Number(flags.prompt), gen = Number(flags.gen);
const webgpuTuning = {
  splitChunk: Number(flags["split-chunk"]),
  f16: !flags["no-f16"],
  matvecThreads: Number(flags["matvec-threads"]),
};

async function load(name: string, profile: boolean): Promise<Model> {
  return await loadModel(name, {
    backend: "webgpu",
    dtype: flags.dtype as "bf16",
    maxModelLen: promptLen + gen + 16,
    maxTokens: Math.max(promptLen, 16),
    maxSeqs: 1,
    quiet: true,
    backendOptions: { profile, webgpuTuning } as never,
  });
}

/** Seconds of one prefill of the prompt and of `gen` decode steps after it, on a fresh sequence. */
async function run(m: Model, between?: () => Promise<void>): Promise<{ prefill: number; decode: number }> {
  const vocab = m.config.vocab_size;
  const ids = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 11) % vocab);
  const seq = m.pool.newSequence();
  m.pool.grow(seq, promptLen + gen);
  const input = (tokens: number[], p0: number) => ({
    ids: tokens,
    pos: tokens.map((_, i) => p0 + i),
    seq: tokens.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: [tokens.length - 1],
  });
  let start = performance.now();
  let [next] = await m.sampleStep(input(ids, 0), greedySampling(1));
  const prefill = (performance.now() - start) / 1000;
  await between?.();
  start = performance.now();
  for (let i = 0; i < gen; i++) [next] = await m.sampleStep(input([next], promptLen + i), greedySampling(1));
  const decode = (performance.now() - start) / 1000;
  m.pool.release(seq);
  return { prefill, decode };
}

type Row = { kernel: string; dispatches: number; ms: number; usPerDispatch: number; share: number; gbs: number };

function rows(times: Map<string, KernelTime>): Row[] {
  const total = [...times.values()].reduce((n, t) => n + t.ns, 0) || 1;
  return [...times].map(([kernel, t]) => ({
    kernel,
    dispatches: t.dispatches,
    ms: t.ns / 1e6,
    usPerDispatch: t.ns / 1e3 / t.dispatches,
    share: t.ns / total,
    gbs: t.ns ? t.boundBytes / t.ns : 0,
  })).sort((a, b) => b.ms - a.ms);
}

const results = [];
for (const name of flags.model!.split(",")) {
  const plain = await load(name, false);
  let speed;
  try {
    await run(plain); // warm-up: pipelines, bind groups, first-touch
    speed = await run(plain);
  } finally {
    plain.dispose();
  }
  const profiled = await load(name, true);
  const backend = profiled.backends[0] as WebGpuBackend;
  let kernels: { prefill: Row[]; decode: Row[] } | string;
  try {
    await run(profiled);
    await backend.resetKernelTimes();
    let prefillTimes = new Map<string, KernelTime>();
    await run(profiled, async () => {
      prefillTimes = await backend.kernelTimes();
      await backend.resetKernelTimes();
    });
    kernels = { prefill: rows(prefillTimes), decode: rows(await backend.kernelTimes()) };
  } catch (e) {
    kernels = (e as Error).message;
  } finally {
    profiled.dispose();
  }
  results.push({
    model: name,
    adapter: backend.adapterName,
    f16: backend.f16,
    prefillTokensPerSecond: promptLen / speed.prefill,
    decodeTokensPerSecond: gen / speed.decode,
    kernels,
  });
}

if (flags.json) console.log(JSON.stringify({ dtype: flags.dtype, prompt: promptLen, gen, webgpuTuning, results }));
else {
  for (const r of results) {
    console.log(
      `\n${r.model} ${flags.dtype} on ${r.adapter} (shader-f16 kernels: ${r.f16 ? "on" : "off"}): ` +
        `pp${promptLen} ${r.prefillTokensPerSecond.toFixed(1)} tok/s, tg${gen} after it ` +
        `${r.decodeTokensPerSecond.toFixed(2)} tok/s`,
    );
    if (typeof r.kernels === "string") {
      console.log(`kernel timings: ${r.kernels}`);
      continue;
    }
    for (
      const [phase, list] of [["prefill", r.kernels.prefill], [`decode (${gen} steps)`, r.kernels.decode]] as const
    ) {
      console.log(`\n${phase}: GPU time by kernel (timestamp queries)\n`);
      console.log("| kernel | dispatches | ms | µs/dispatch | share | GB/s bound |\n|---|---|---|---|---|---|");
      for (const k of list) {
        console.log(
          `| ${k.kernel} | ${k.dispatches} | ${k.ms.toFixed(2)} | ${k.usPerDispatch.toFixed(1)} | ` +
            `${(100 * k.share).toFixed(1)}% | ${k.gbs.toFixed(2)} |`,
        );
      }
    }
  }
}
