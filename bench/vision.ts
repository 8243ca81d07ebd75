/**
 * Vision encoder + projector time: `Model.encodeImages` of one image on each backend (random weights), the first
 * call (which builds the vision graph and uploads its weights) apart from the warm median.
 *
 *   deno run -A bench/vision.ts [--model demo] [--backends wasm,reference] [--grid 16] [--runs 3]
 *     [--threads N] [--json]
 *
 * `--grid 16` is a 16×16-token image (448×448 pixels: 32×32 patches of 14 pixels, merged 2×2).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { loadModel } from "../engine/model.ts";
import type { VisionImage } from "../engine/vision.ts";
import { mulberry32 } from "../tests/fixtures.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "demo" },
    backends: { type: "string", default: "wasm,reference" },
    grid: { type: "string", default: "16" },
    runs: { type: "string", default: "3" },
    threads: { type: "string" },
    json: { type: "boolean", default: false },
  },
});

const side = Number(flags.grid), runs = Math.max(1, Number(flags.runs));
const threads = flags.threads === undefined ? undefined : Number(flags.threads);
const rand = mulberry32(7);
const pixels = new Float32Array(3 * (28 * side) ** 2).map(() => 4 * rand() - 2);
const image: VisionImage = { pixels, grid: { rows: side, cols: side } };

type Row = { backend: string; ranOn: string | null; patches: number; firstMs: number; medianMs: number };
const rows: Row[] = [];
for (const backend of flags.backends.split(",")) {
  const model = await loadModel(flags.model, { backend, vision: true, dtype: "f32", threads, maxModelLen: 64 });
  try {
    let t = performance.now();
    await model.encodeImages([image]);
    const firstMs = performance.now() - t, times: number[] = [];
    for (let i = 0; i < runs; i++) {
      t = performance.now();
      await model.encodeImages([image]);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const medianMs = times[Math.floor(times.length / 2)];
    rows.push({ backend, ranOn: model.visionBackend, patches: (2 * side) ** 2, firstMs, medianMs });
  } finally {
    model.dispose();
  }
}

if (flags.json) {
  console.log(JSON.stringify({ model: flags.model, grid: side, threads: threads ?? null, rows }));
} else {
  console.log(`model ${flags.model}, one ${side}×${side}-token image, threads ${threads ?? "all"}`);
  console.log("backend\tran on\tpatches\tfirst ms\tmedian ms");
  for (const r of rows) {
    console.log(`${r.backend}\t${r.ranOn}\t${r.patches}\t${r.firstMs.toFixed(0)}\t${r.medianMs.toFixed(1)}`);
  }
}
