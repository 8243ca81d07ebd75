/**
 * The vision path on the `tiny` preset (random f32 weights): the vision graph (encoder + projector) against a
 * naive loop implementation written from MODEL.md §3, block-diagonal batching, and image vectors reaching the
 * decoder at the `[IMG]` rows of a step.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { tensorTable } from "../graph/ir.ts";
import { buildVision, presetConfig } from "../graph/models/mistral4.ts";
import { wasmBackend } from "../runtime/backends/wasm/backend.ts";
import { rowItems, segmentItems } from "../runtime/backends/wasm/vision_ops.ts";
import { referenceBackend } from "../runtime/backends/reference.ts";
import type { Backend } from "../runtime/backend.ts";
import { PlanExecutor } from "../runtime/plan_executor.ts";
import { schedule } from "../runtime/schedule.ts";
import { resolveModel } from "../graph/models/mod.ts";
import { memorySource } from "../weights/memory_source.ts";
import { erf } from "../ops/gelu.ts";
import { normalisedError } from "./op_helpers.ts";
import { loadModel, type Model, type StepInput } from "../engine/model.ts";
import { visionBatch, visionGraph, type VisionImage } from "../engine/vision.ts";
import { weightToF32 } from "../weights/load.ts";
import { configForDtype, randomCanonicalWeights } from "../weights/random.ts";

const SEED = 5;
const CONFIG = configForDtype(presetConfig("tiny"), "f32");

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

function randomImage(rows: number, cols: number, seed: number): VisionImage {
  const rand = lcg(seed);
  const pixels = new Float32Array(3 * 28 * rows * 28 * cols).map(() => 4 * rand() - 2);
  return { pixels, grid: { rows, cols } };
}

async function withModel<T>(opts: Parameters<typeof loadModel>[1], fn: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel("tiny", { backend: "reference", dtype: "f32", seed: SEED, maxModelLen: 64, ...opts });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

// ---- the naive implementation: plain nested loops over [rows][cols] arrays, f64 -------------------------------

type Mat = number[][];
const W = randomCanonicalWeights(CONFIG, { seed: SEED, dtype: "f32", group: "all" });
function weight(name: string, rows: number): Mat {
  const flat = Array.from(weightToF32(W.get(name)!));
  const cols = flat.length / rows;
  return Array.from({ length: rows }, (_, r) => flat.slice(r * cols, (r + 1) * cols));
}
const linear = (x: Mat, w: Mat): Mat => x.map((row) => w.map((wr) => wr.reduce((s, v, k) => s + v * row[k], 0)));
const addM = (a: Mat, b: Mat): Mat => a.map((r, i) => r.map((v, j) => v + b[i][j]));
function rms(x: Mat, w: number[], eps: number): Mat {
  return x.map((r) => {
    const inv = 1 / Math.sqrt(r.reduce((s, v) => s + v * v, 0) / r.length + eps);
    return r.map((v, i) => v * inv * w[i]);
  });
}

function naiveImage(im: VisionImage): Mat {
  const v = CONFIG.vision_config!;
  const [Hv, H, hd, p] = [v.hidden_size, v.num_attention_heads, v.head_dim, v.patch_size];
  const ph = 2 * im.grid.rows, pw = 2 * im.grid.cols, width = pw * p, height = ph * p;
  // Conv 3 → Hv, kernel = stride = 14.
  const conv = Array.from(weightToF32(W.get("vision.patch_conv")!));
  const coords: [number, number][] = [];
  let x: Mat = [];
  for (let r = 0; r < ph; r++) {
    for (let c = 0; c < pw; c++) {
      coords.push([r, c]);
      x.push(Array.from({ length: Hv }, (_, o) => {
        let s = 0;
        for (let ch = 0; ch < 3; ch++) {
          for (let ky = 0; ky < p; ky++) {
            for (let kx = 0; kx < p; kx++) {
              s += conv[((o * 3 + ch) * p + ky) * p + kx] * im.pixels[(ch * height + r * p + ky) * width + c * p + kx];
            }
          }
        }
        return s;
      }));
    }
  }
  x = rms(x, weight("vision.ln_pre", 1)[0], v.layer_norm_eps);
  const f = Array.from({ length: hd / 2 }, (_, i) => Math.pow(v.rope_theta, -(2 * i) / hd));
  // Pair i < hd/4 turns with the row at f[2i]; pair hd/4 + i with the column at f[2i + 1].
  const angle = ([r, c]: [number, number], i: number) => i < hd / 4 ? r * f[2 * i] : c * f[2 * (i - hd / 4) + 1];
  const rot = (m: Mat): Mat =>
    m.map((row, t) =>
      row.map((_, e) => {
        const i = Math.floor((e % hd) / 2), base = e - (e % 2), a = angle(coords[t], i);
        const [re, im2] = [row[base], row[base + 1]];
        return e % 2 === 0 ? re * Math.cos(a) - im2 * Math.sin(a) : re * Math.sin(a) + im2 * Math.cos(a);
      })
    );
  for (let l = 0; l < v.num_hidden_layers; l++) {
    const pre = `vision.layers.${l}`;
    const xa = rms(x, weight(`${pre}.attn_norm`, 1)[0], v.layer_norm_eps);
    const q = rot(linear(xa, weight(`${pre}.attn.wq`, Hv))), k = rot(linear(xa, weight(`${pre}.attn.wk`, Hv)));
    const vv = linear(xa, weight(`${pre}.attn.wv`, Hv));
    const ctx: Mat = x.map(() => new Array(Hv).fill(0));
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < x.length; i++) {
        const s = x.map((_, j) => {
          let d = 0;
          for (let e = 0; e < hd; e++) d += q[i][h * hd + e] * k[j][h * hd + e];
          return d / Math.sqrt(hd);
        });
        const m = Math.max(...s), e = s.map((z) => Math.exp(z - m)), z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < x.length; j++) {
          for (let c = 0; c < hd; c++) ctx[i][h * hd + c] += (e[j] / z) * vv[j][h * hd + c];
        }
      }
    }
    x = addM(x, linear(ctx, weight(`${pre}.attn.wo`, Hv)));
    const xf = rms(x, weight(`${pre}.ffn_norm`, 1)[0], v.layer_norm_eps);
    const gu = linear(xf, weight(`${pre}.ffn.gate_up`, 2 * v.intermediate_size));
    const I = v.intermediate_size;
    const act = gu.map((r) => r.slice(0, I).map((g, i) => (g / (1 + Math.exp(-g))) * r[I + i]));
    x = addM(x, linear(act, weight(`${pre}.ffn.down`, Hv)));
  }
  const xn = rms(x, weight("projector.norm", 1)[0], CONFIG.rms_norm_eps);
  const merged: Mat = [];
  for (let tr = 0; tr < im.grid.rows; tr++) {
    for (let tc = 0; tc < im.grid.cols; tc++) {
      const vec = new Array(4 * Hv);
      for (let c = 0; c < Hv; c++) {
        for (let dy = 0; dy < 2; dy++) {
          for (let dx = 0; dx < 2; dx++) vec[c * 4 + dy * 2 + dx] = xn[(2 * tr + dy) * pw + 2 * tc + dx][c];
        }
      }
      merged.push(vec);
    }
  }
  const D = CONFIG.hidden_size;
  const a = linear(linear(merged, weight("projector.patch_merger", Hv)), weight("projector.linear_1", D));
  const g = a.map((r) => r.map((z) => 0.5 * z * (1 + erf(z / Math.SQRT2))));
  return linear(g, weight("projector.linear_2", D));
}

// ---- tests ------------------------------------------------------------------------------------------------------

Deno.test("visionBatch: patch positions, segments, merge index and (c, ky, kx) unfold order", () => {
  const im = randomImage(1, 2, 1);
  const b = visionBatch([im, randomImage(1, 1, 2)], { patchSize: 14, mergeSize: 2, channels: 3 });
  assertEquals(b.numPatches, 8 + 4);
  assertEquals(b.tokens, [2, 1]);
  assertEquals(Array.from(b.pos.subarray(0, 10)), [0, 0, 0, 1, 0, 2, 0, 3, 1, 0]);
  assertEquals(Array.from(b.segment), [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
  assertEquals(Array.from(b.mergeIndex), [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11]);
  // Patch 5 = (row 1, col 1): element (c 2, ky 3, kx 4) is pixel [2][14 + 3][14 + 4] of the 28×56 image.
  assertEquals(b.patches[5 * 588 + 2 * 196 + 3 * 14 + 4], im.pixels[2 * 28 * 56 + 17 * 56 + 18]);
});

Deno.test("vision graph: encoder + projector ≡ a naive implementation; two images ≡ each alone", async () => {
  await withModel({}, async (model) => {
    assert(model.vision, "tiny loads with vision on the reference backend");
    const images = [randomImage(1, 2, 11), randomImage(2, 1, 12)];
    const together = await model.encodeImages(images);
    assertEquals(together.map((f) => f.length), [2 * 64, 2 * 64]);
    for (let i = 0; i < images.length; i++) {
      const expected = naiveImage(images[i]).flat();
      const err = normalisedError(together[i], expected);
      assert(err < 1e-4, `image ${i}: normalised error ${err}`);
      const [alone] = await model.encodeImages([images[i]]);
      assert(normalisedError(alone, together[i]) < 1e-6, `image ${i}: batched ≠ alone`);
    }
  });
});

Deno.test("step: image vectors replace the [IMG] rows; text-only graphs are unchanged", async () => {
  // [BOS] a [IMG] [IMG] [IMG_END] b c: a 1×2 grid.
  const ids = [1, 1500, 10, 10, 13, 2201, 77_000];
  const vocab = CONFIG.vocab_size;
  const run = async (model: Model, extra: Partial<StepInput>) => {
    const seq = model.pool.newSequence();
    try {
      assert(model.pool.grow(seq, ids.length));
      const range = ids.map((_, i) => i);
      return await model.step({
        ids,
        pos: range,
        seq: range.map(() => 0),
        blockTables: [seq.blockTable],
        logitRows: range,
        ...extra,
      });
    } finally {
      model.pool.release(seq);
    }
  };
  const plain = await withModel({ vision: false }, (m) => run(m, {}));
  await withModel({}, async (model) => {
    assertEquals(Array.from(await run(model, {})), Array.from(plain), "I = 0 ≡ the text-only graph");
    const image = randomImage(1, 2, 21);
    await model.storeImages([image], [3]);
    const withImage = await run(model, { imageRows: [2, 3], imageSlots: [3, 4] });
    // The store holds what encodeImages reads back: the same vectors, placed by rows.
    const [features] = await model.encodeImages([image]);
    const [again] = await model.encodeImages([image]);
    assertEquals(Array.from(again), Array.from(features), "encodeImages writes nothing to the store");
    assertEquals(Array.from(await run(model, { imageRows: [2, 3], imageSlots: [3, 4] })), Array.from(withImage));
    const row = (l: Float32Array, r: number) => Array.from(l.subarray(r * vocab, (r + 1) * vocab));
    for (let r = 0; r < ids.length; r++) {
      if (r < 2) assertEquals(row(withImage, r), row(plain, r), `row ${r} precedes the image`);
      else assert(normalisedError(row(withImage, r), row(plain, r)) > 1e-4, `row ${r} must see the image`);
    }
  });
});

// ---- the vision graph on the wasm backend ------------------------------------------------------------------------

const WASM = await wasmBackend.probe().catch(() => 0) > 0;

Deno.test({
  name: "vision graph: the wasm backend runs every node (tiny and demo, f32 and bf16 weights)",
  ignore: !WASM,
  async fn() {
    const backend = await wasmBackend.create({ threads: 1 });
    try {
      for (const preset of ["tiny", "demo"]) {
        for (const dtype of ["f32", "bf16"] as const) {
          const g = new GraphBuilder();
          buildVision(g, configForDtype(presetConfig(preset), dtype), { maxPatches: 64 });
          const graph = g.build(), table = tensorTable(graph);
          const missing = graph.nodes.filter((n) => !backend.supports(n, n.inputs.map((i) => table[i])));
          assertEquals(missing.map((n) => `${n.op} (${n.name})`), [], `${preset} ${dtype}`);
        }
      }
    } finally {
      backend.dispose();
    }
  },
});

Deno.test("wasm attention items: blocks of ≤ 16 rows per segment and head; segments must be contiguous", () => {
  const items = new Int32Array(6 * 40 * 2);
  const segment = Int32Array.from([...new Array(20).fill(0), 1, ...new Array(3).fill(2)]);
  const { count, cost } = segmentItems(segment, 2, items);
  // Segment 0 (20 rows) in two blocks of 10, segment 1 in one row, segment 2 in one block: 4 blocks × 2 heads.
  assertEquals(count, 8);
  assertEquals(Array.from(items.subarray(0, 12)), [0, 10, 0, 20, 0, 0, 0, 10, 0, 20, 1, 34]);
  assertEquals(Array.from(items.subarray(6 * 4, 6 * 5)), [20, 21, 20, 21, 0, 136]);
  // Cost: rows · ceil(keys / 8) + 4 per item.
  assertEquals(cost, 4 * (10 * 3 + 4) + 2 * (1 + 4) + 2 * (3 + 4));
  assertThrows(() => segmentItems(Int32Array.from([0, 0, 1, 0]), 1, items), RangeError, "contiguous");
});

// Bound: both backends run the graph in f32, but the reference sums in f64 and the wasm kernels in f32 (FMA, other
// orders); through 2 layers and the projector the normalised error measures ≤ 6.8e-7 (tiny; demo ≤ 5.6e-7).
const WASM_VISION_TOL = 1e-5;

Deno.test({
  name: "vision on wasm: tiny encodeImages runs on the wasm backend itself and ≡ the reference backend",
  ignore: !WASM,
  async fn() {
    const images = [randomImage(2, 3, 31), randomImage(1, 1, 32)];
    const want = await withModel({}, (m) => m.encodeImages(images));
    await withModel({ backend: "wasm", vision: true, threads: 2 }, async (model) => {
      const got = await model.encodeImages(images);
      assertEquals(model.visionBackend, "wasm", "the vision graph fell back to another backend");
      for (let i = 0; i < images.length; i++) {
        const err = normalisedError(got[i], want[i]);
        assert(err < WASM_VISION_TOL, `image ${i}: normalised error ${err} ≥ ${WASM_VISION_TOL}`);
      }
    });
  },
});

// ---- the encoder by stages ---------------------------------------------------------------------------------------

/** The whole vision graph (one graph, no store) of `tiny` run on `backend` with the weights `W`: the vectors. */
async function oneGraph(backend: Backend, images: readonly VisionImage[]): Promise<Float32Array[]> {
  const { family } = await resolveModel("tiny");
  const graph = visionGraph(family, CONFIG, 0), plan = schedule(graph, [backend], { strict: true });
  const ex = await PlanExecutor.create(graph, plan, [backend], {
    weights: (w) => memorySource(W.get(w.name)!, w.dtype),
  });
  try {
    const b = visionBatch(images, { patchSize: 14, mergeSize: 2, channels: 3 });
    const { patches, pos, segment, mergeIndex } = b;
    const features = (await ex.run({ inputs: { patches, pos, segment, mergeIndex } })).features as Float32Array;
    let o = 0;
    return b.tokens.map((n) => features.slice(o * 64, (o += n) * 64));
  } finally {
    ex.dispose();
  }
}

// Three images (80 + 4 + 24 patches, 27 tokens): units of the smallest budget take 18 patch rows (14 and 13 tokens).
const STAGED_IMAGES = [randomImage(4, 5, 41), randomImage(1, 1, 42), randomImage(3, 2, 43)];

/** Staged encodes of STAGED_IMAGES at several unit budgets, each ≡ `want` bit for bit. */
async function checkStaged(model: Model, want: Float32Array[]): Promise<void> {
  const units: number[] = [];
  // Infinity: one unit per stage (108 rows); 1 FLOP: 18-row units; 3e5: 40-odd rows for most stages.
  for (const flopsPerUnit of [Infinity, 1, 3e5]) {
    const job = model.imageJob(STAGED_IMAGES, { starts: null, flopsPerUnit });
    while (!job.done) await job.runNext();
    units.push(job.unitsRun);
    job.features.forEach((f, i) => assertEquals(Array.from(f), Array.from(want[i]), `image ${i}, ${flopsPerUnit}`));
  }
  // embed, keys and layer × 2 blocks (108 patch rows), project (27 tokens): 6 stages; 6 + 24 + 2 units at 1 FLOP.
  assertEquals(units.slice(0, 2), [6, 32]);
  assert(units[2] > 6 && units[2] < 32, `${units[2]} units at 3e5 FLOPs`);
}

Deno.test("vision stages: every unit budget gives the one-graph encoder's vectors, bit for bit (reference)", async () => {
  const backend = await referenceBackend.create();
  try {
    const want = await oneGraph(backend, STAGED_IMAGES);
    await withModel({}, (model) => checkStaged(model, want));
  } finally {
    backend.dispose();
  }
});

Deno.test({
  name: "vision stages: every unit budget gives the one-graph encoder's vectors, bit for bit (wasm)",
  ignore: !WASM,
  async fn() {
    const backend = await wasmBackend.create({ threads: 2 });
    try {
      const want = await oneGraph(backend, STAGED_IMAGES);
      await withModel({ backend: "wasm", vision: true, threads: 2 }, async (model) => {
        assertEquals(model.visionBackend, "wasm");
        await checkStaged(model, want);
      });
    } finally {
      backend.dispose();
    }
  },
});

Deno.test("vision stages: one encode's batch at a time; a cancelled one frees the encoder", async () => {
  await withModel({}, async (model) => {
    const a = model.imageJob([STAGED_IMAGES[0]], { starts: null, flopsPerUnit: 1 });
    const b = model.imageJob([STAGED_IMAGES[1]], { starts: null });
    await a.runNext();
    await assertRejects(() => b.runNext(), Error, "another encode holds the encoder");
    a.cancel();
    assert(a.done, "a cancelled job is done");
    while (!b.done) await b.runNext();
    assertEquals(Array.from(b.features[0]), Array.from((await model.encodeImages([STAGED_IMAGES[1]]))[0]));
    assertThrows(() => a.features, Error, "no features");
  });
});

Deno.test("wasm attention_rows items: queries grouped by segment run, in blocks of ≤ 16, over their segment's keys", () => {
  const segment = Int32Array.from([...new Array(20).fill(0), 1, ...new Array(3).fill(2)]);
  const items = new Int32Array(6 * 40);
  // Queries: rows 2…19 of segment 0 (18: two blocks of 9), then row 21 (segment 2), then row 20 (segment 1).
  const rows = Int32Array.from([...Array.from({ length: 18 }, (_, i) => 2 + i), 21, 20]);
  const { count } = rowItems(segment, rows, 1, items);
  assertEquals(count, 4);
  assertEquals(Array.from(items.subarray(0, 24)), [
    0,
    9,
    0,
    20,
    0,
    0,
    9,
    18,
    0,
    20,
    0,
    31,
    18,
    19,
    21,
    24,
    0,
    62,
    19,
    20,
    20,
    21,
    0,
    67,
  ]);
  assertThrows(() => rowItems(segment, Int32Array.from([24]), 1, items), RangeError, "row 24");
});
