/**
 * Another stream's inter-token gaps while a large image encodes: the engine runs the vision encoder a unit at a time
 * between its steps (`engine/image_encodes.ts`), so a decoding stream keeps flowing. One greedy text stream decodes
 * alone (the baseline), then again while a request with one `--image`-pixel square image (1540: the largest the
 * config takes, 55×55 tokens, 12,100 patches) encodes; the gaps between its tokens are compared while the image
 * is encoding (from the image request's arrival until its vectors are in the store) with its gaps alone, before
 * and after (both baselines' gaps together: a shared machine drifts between them).
 *
 *   deno run -A bench/vision_interleave.ts [--model demo] [--backend auto] [--threads N] [--image 1540]
 *     [--vision-flops F] [--baseline 400] [--max-model-len 16384] [--json]
 *
 * `--vision-flops` sets the engine's encoder budget per step (default: the model's, one decoded token's FLOPs).
 * Gaps are the times between the stream's successive tokens as its consumer reads them (the first token, the end
 * of its prefill, is not a gap).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel } from "../engine/model.ts";
import { GREEDY } from "../engine/sampler.ts";
import type { ImageInput } from "../engine/types.ts";
import { mulberry32 } from "../tests/fixtures.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "demo" },
    backend: { type: "string", default: "auto" },
    threads: { type: "string" },
    image: { type: "string", default: "1540" },
    "vision-flops": { type: "string" },
    baseline: { type: "string", default: "400" },
    "max-model-len": { type: "string", default: "16384" },
    json: { type: "boolean", default: false },
  },
});

const threads = flags.threads === undefined ? undefined : Number(flags.threads);
const maxModelLen = Number(flags["max-model-len"]); // the text stream runs through the whole encode
const model = await loadModel(flags.model, { backend: flags.backend, threads, maxModelLen, quiet: true });
const v = model.config.vision_config;
if (!model.vision || !v) throw new Error(`${flags.model} has no vision encoder here`);
const visionFlopsPerStep = flags["vision-flops"] === undefined ? undefined : Number(flags["vision-flops"]);
const engine = await ModelEngine.create(model, { eosId: -1, prefixCaching: false, visionFlopsPerStep });
const rand = mulberry32(11);

/** `<s> [INST] text [IMG]… text [/INST]` with one random image of `side` pixels (a multiple of patch · merge). */
function imageRequest(side: number): { ids: number[]; image: ImageInput } {
  const cell = v!.patch_size * v!.spatial_merge_size, n = Math.round(side / cell);
  const ids = [1, 3, 1500], positions: number[] = [];
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) positions.push(ids.length), ids.push(v!.image_token_id);
    ids.push(r === n - 1 ? v!.image_end_token_id : v!.image_break_token_id);
  }
  ids.push(1600, 1601, 4);
  const pixels = new Float32Array(3 * (n * cell) ** 2).map(() => 4 * rand() - 2);
  const key = Uint32Array.from({ length: 8 }, () => Math.floor(rand() * 2 ** 32));
  return { ids, image: { pixels, grid: { rows: n, cols: n }, positions, key } };
}

/** A text stream; `stop()` ends it. Token arrival times in ms. */
function textStream(maxTokens: number): { times: number[]; done: Promise<void>; stop: () => void } {
  const stop = new AbortController(), times: number[] = [];
  const prompt = [1, 3, ...Array.from({ length: 12 }, () => 1000 + Math.floor(rand() * 50_000)), 4];
  const gen = engine.generate({ promptIds: prompt, sampling: GREEDY, maxTokens, signal: stop.signal });
  const done = (async () => {
    for await (const _ of gen) times.push(performance.now());
  })().catch((e) => {
    if (!stop.signal.aborted) throw e;
  });
  return { times, done, stop: () => stop.abort() };
}

const gaps = (t: number[]) => t.slice(1).map((x, i) => x - t[i]);
function stats(g: number[]) {
  const s = [...g].sort((a, b) => a - b), at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1] };
}

async function baseline(n: number): Promise<number[]> {
  const s = textStream(n);
  await s.done;
  return gaps(s.times.slice(1));
}

// Warm-up: a small image and a few tokens, so V8 has compiled the kernels' wrappers before anything is timed.
{
  const warm = imageRequest(4 * v.patch_size * v.spatial_merge_size);
  for await (const _ of engine.generate({ promptIds: warm.ids, sampling: GREEDY, maxTokens: 4, images: [warm.image] }));
}

const before = await baseline(Number(flags.baseline));
const text = textStream(model.limits.maxModelLen - 16);
while (text.times.length < 8) await new Promise((r) => setTimeout(r, 1));
const { ids, image } = imageRequest(Number(flags.image));
const start0 = engine.stats(), t0 = performance.now();
const imageDone = (async () => {
  for await (const _ of engine.generate({ promptIds: ids, sampling: GREEDY, maxTokens: 1, images: [image] }));
})();
let t1 = 0;
while (engine.stats().imagesEncoded === start0.imagesEncoded) await new Promise((r) => setTimeout(r, 1));
t1 = performance.now();
const end0 = engine.stats();
const cut = text.times.length > 0 && text.times[text.times.length - 1] < t1 - 1000;
text.stop();
await Promise.all([text.done, imageDone]);
const during = stats(gaps(text.times.filter((t) => t >= t0 && t <= t1)));
const after = await baseline(Number(flags.baseline));
await engine.close();
model.dispose();

const result = {
  model: flags.model,
  backend: model.backends.map((b) => b.name).join(","),
  threads: threads ?? null,
  imagePixels: Number(flags.image),
  patches: image.grid.rows * image.grid.cols * v.spatial_merge_size ** 2,
  visionFlopsPerStep: visionFlopsPerStep ?? model.decodeFlops,
  encodeSeconds: (t1 - t0) / 1000,
  encoderUnits: end0.visionUnits - start0.visionUnits,
  gapsMs: { before: stats(before), during, after: stats(after), alone: stats([...before, ...after]) },
  /** p99 while encoding over p99 alone (both baselines' gaps together). */
  p99Ratio: during.p99 / stats([...before, ...after]).p99,
  /** The text stream ended before the encode did (raise --max-model-len). */
  textEndedEarly: cut,
};
if (flags.json) console.log(JSON.stringify(result));
else {
  const f = (s: ReturnType<typeof stats>) =>
    `${s.n} gaps: p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, max ${s.max.toFixed(1)} ms`;
  console.log(
    `${result.model} on ${result.backend}, threads ${threads ?? "all"}, one ${result.imagePixels}²-pixel image`,
  );
  console.log(
    `encoder: ${result.patches} patches in ${result.encoderUnits} units over ${result.encodeSeconds.toFixed(1)} s ` +
      `(${(result.visionFlopsPerStep / 1e6).toFixed(1)} MFLOP per step)`,
  );
  console.log(`text stream alone (before): ${f(result.gapsMs.before)}`);
  console.log(`while the image encodes:    ${f(during)}`);
  console.log(`text stream alone (after):  ${f(result.gapsMs.after)}`);
  console.log(`p99 while encoding / p99 alone (before and after together): ${result.p99Ratio.toFixed(2)}×`);
  if (cut) console.log("the text stream ended before the encode did: raise --max-model-len");
}
