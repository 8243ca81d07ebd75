import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { type CheckpointLayout, isIgnoredCheckpointTensor, presetConfig } from "../graph/models/mistral4.ts";
import { chunkToF32 } from "./chunks.ts";
import { bytesToF32, f32ToBytes } from "./codecs.ts";
import { CheckpointError } from "./errors.ts";
import { loadCanonicalWeights, weightToF32 } from "./load.ts";
import { makeCheckpoint } from "./make_checkpoint.ts";
import { LoadProgress } from "./progress.ts";
import type { RandomDType } from "./random.ts";
import { openSafetensors } from "./safetensors.ts";
import { type TensorToWrite, writeSafetensors } from "./safetensors_writer.ts";
import { leadingRows, type WeightSource } from "./source.ts";
import { openWeightSources } from "./stream.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_stream_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A few rows per chunk, prime so chunks straddle every fused-row and expert boundary; big tables in fewer. */
function step(source: WeightSource): number {
  return leadingRows(source.shape) > 1000 ? 4099 : 3;
}

/** Every chunk of `source`, decoded and concatenated, checking each chunk's fields on the way. */
async function readDecoded(source: WeightSource, rowsPer = step(source)): Promise<Float32Array> {
  const n = leadingRows(source.shape), perRow = source.shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(n * perRow);
  for (let row0 = 0; row0 < n; row0 += rowsPer) {
    const rows = Math.min(rowsPer, n - row0), c = await source.read(row0, rows);
    assertEquals([c.row0, c.rows, c.shape, c.dtype], [row0, rows, [rows, ...source.shape.slice(1)], source.dtype]);
    out.set(chunkToF32(c), row0 * perRow);
  }
  return out;
}

/** Bit-for-bit equality of two f32 arrays (NaN payloads and signed zeros included). */
function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  assertEquals(got.length, want.length, `${what}: length`);
  const [g, w] = [got, want].map((a) => new Uint32Array(a.buffer, a.byteOffset, a.length));
  const i = g.findIndex((x, j) => x !== w[j]);
  assert(i < 0, `${what}: element ${i} is ${got[i]}, want ${want[i]}`);
}

const CASES: [RandomDType, CheckpointLayout][] = [
  ["f32", "mistral"],
  ["bf16", "hf"],
  ["f8e4m3", "hf"],
  ["f8e4m3", "mistral"],
  ["nvfp4", "mistral"],
  ["nvfp4", "hf"],
];

for (const [dtype, layout] of CASES) {
  Deno.test(`stream: ${dtype} ${layout} sources read in row chunks ≡ loadCanonicalWeights, bit for bit`, async () => {
    await withDir(async (dir) => {
      await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype, layout, seed: 3, maxShardBytes: 8e6 });
      const loaded = await loadCanonicalWeights(dir, { quiet: true, group: "all" });
      const opened = await openWeightSources(dir, { quiet: true, group: "all" });
      assertEquals([opened.config, opened.layout], [loaded.config, loaded.layout]);
      assertEquals([...opened.sources.keys()], [...loaded.weights.keys()]);
      for (const [name, w] of loaded.weights) {
        const s = opened.sources.get(name)!;
        assertEquals([s.name, s.shape, s.dtype], [name, w.shape, w.dtype], name);
        assertSameBits(await readDecoded(s), weightToF32(w), `${dtype} ${layout} ${name}`);
      }
      // The stored bytes of every tensor but the skipped activation scales, each counted once.
      const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".safetensors"));
      const r = await openSafetensors(files.map((n) => join(dir, n)));
      const stored = r.tensors.filter((t) => !isIgnoredCheckpointTensor(t.name)).reduce((a, t) => a + t.byteLength, 0);
      assertEquals(opened.totalBytes, stored);
      opened.close();
    });
  });
}

Deno.test("stream: text group leaves the vision tower out; f16 weights come as f32 or bf16", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "f32" });
    const toF16 = (t: TensorToWrite): TensorToWrite =>
      t.dtype === "F32" ? { ...t, dtype: "F16", data: f32ToBytes(bytesToF32(t.data as Uint8Array, "f32"), "f16") } : t;
    await rewrite(dir, MISTRAL, (ts) => ts.map(toF16));
    for (const f16 of ["f32", "bf16"] as const) {
      const loaded = await loadCanonicalWeights(dir, { quiet: true, f16 });
      const text = await openWeightSources(dir, { quiet: true, f16 });
      assertEquals([text.config, [...text.sources.keys()]], [loaded.config, [...loaded.weights.keys()]]);
      assert(![...text.sources.keys()].some((n) => n.startsWith("vision.") || n.startsWith("projector.")));
      for (const name of ["norm", "layers.0.attn.wq_a", "layers.1.moe.gate_up"]) {
        const s = text.sources.get(name)!;
        assertEquals(s.dtype, f16);
        assertSameBits(await readDecoded(s), weightToF32(loaded.weights.get(name)!), `f16 as ${f16}: ${name}`);
      }
    }
  });
});

const MISTRAL = "consolidated.safetensors";

Deno.test("stream: reads hold one chunk (plus the tensors it intersects) at a time, and nothing in between", async () => {
  for (const [dtype, layout] of [["bf16", "hf"], ["f8e4m3", "mistral"], ["nvfp4", "mistral"]] as const) {
    await withDir(async (dir) => {
      await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype, layout, maxShardBytes: 8e6 });
      let inFlight = 0, reading = false, total = 0, reads = 0;
      const opened = await openWeightSources(dir, {
        quiet: true,
        group: "all",
        wrapReader: (r) => ({
          readRange: async (name, start, end) => {
            assert(reading, `${name} read outside a source's read (a prefetch or a cache)`);
            const b = await r.readRange(name, start, end);
            inFlight += b.byteLength;
            total += b.byteLength;
            return b;
          },
        }),
      });
      assertEquals(total, 0, "opening reads no tensor data");
      const slack = 4096; // scale values the rows use, and the rest of a rope head
      let peak = 0, biggest = 0;
      const read = async (s: WeightSource, row0: number, rows: number) => {
        [inFlight, reading] = [0, true];
        await s.read(row0, rows);
        reading = false;
        reads++;
        const bound = (s.bytes * rows) / leadingRows(s.shape) + slack;
        assert(inFlight <= bound, `${dtype} ${s.name} rows ${row0}+${rows}: ${inFlight} bytes in flight > ${bound}`);
        peak = Math.max(peak, inFlight);
      };
      for (const s of opened.sources.values()) {
        biggest = Math.max(biggest, s.bytes);
        const n = leadingRows(s.shape);
        for (let row0 = 0; row0 < n; row0 += step(s)) await read(s, row0, Math.min(step(s), n - row0));
      }
      // A whole-tensor reader would have held the embedding (16 MiB) at once; chunks stay far below it.
      assert(peak < biggest / 8, `${dtype}: peak ${peak} of ${biggest}`);
      assert(
        total >= opened.totalBytes && total <= opened.totalBytes + reads * slack,
        `${total} vs ${opened.totalBytes}`,
      );
      // Nothing is cached: the same rows again go back to the file.
      const norm = opened.sources.get("norm")!;
      const before = total;
      await read(norm, 0, 64);
      assertEquals(total - before, norm.bytes);
    });
  }
});

Deno.test("stream: progress counts a source's bytes when its last row is read, one line to the end", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "f8e4m3" });
    const totals = await openWeightSources(dir, { quiet: true }); // the line's totals, known once opened
    const lines: string[] = [];
    const progress = new LoadProgress({
      totalBytes: totals.totalBytes,
      totalTensors: totals.sources.size,
      write: (t) => lines.push(t),
      intervalMs: 0,
    });
    const opened = await openWeightSources(dir, { progress });
    const [first, ...rest] = opened.sources.values();
    await first.read(0, 1);
    assertEquals(progress.tensorsDone, 0, "a partly read source is not counted");
    for (const s of [first, ...rest]) await s.read(0, leadingRows(s.shape));
    await first.read(0, leadingRows(first.shape)); // a second pass counts once
    assertEquals([progress.tensorsDone, progress.bytesDone], [opened.sources.size, opened.totalBytes]);
    assert(lines.at(-1)!.endsWith("\n") && lines.at(-1)!.includes(`${opened.sources.size}/${opened.sources.size}`));
    opened.close();
    await assertRejects(() => first.read(0, 1), Error, "closed");
  });
});

/** Rewrites one safetensors file of a checkpoint through `edit` (an HF index is not kept in step). */
async function rewrite(dir: string, file: string, edit: (t: TensorToWrite[]) => TensorToWrite[]): Promise<void> {
  const path = join(dir, file), r = await openSafetensors(path), ts: TensorToWrite[] = [];
  for (const t of r.tensors) ts.push({ name: t.name, dtype: t.storage, shape: t.shape, data: await r.read(t.name) });
  await writeSafetensors(path, edit(ts));
}

Deno.test("stream errors: the up-front check rejects what loadCanonicalWeights rejects, with the same message", async () => {
  const broken: [string, (ts: TensorToWrite[]) => TensorToWrite[]][] = [
    ["missing_tensor", (ts) => ts.filter((t) => t.name !== "layers.1.experts.3.w2.weight")],
    ["missing_tensor", (ts) => ts.filter((t) => t.name !== "vision_encoder.ln_pre.weight")],
    [
      "extra_tensor",
      (ts) => [...ts, { name: "layers.0.attention.wq_c.weight", dtype: "BF16", shape: [2], data: new Uint8Array(4) }],
    ],
    ["shape", (ts) => ts.map((t) => t.name === "norm.weight" ? { ...t, shape: [32], data: new Uint8Array(64) } : t)],
    [
      "dtype",
      (ts) =>
        ts.map((t) =>
          t.name === "layers.0.attention.wo.weight" ? { ...t, dtype: "BF16", data: new Uint8Array(8192) } : t
        ),
    ],
  ];
  for (const [kind, edit] of broken) {
    await withDir(async (dir) => {
      await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "f8e4m3" });
      await rewrite(dir, MISTRAL, edit);
      const a = await assertRejects(() => loadCanonicalWeights(dir, { quiet: true }), CheckpointError);
      const b = await assertRejects(() => openWeightSources(dir, { quiet: true }), CheckpointError);
      assertEquals([b.kind, b.message, b.tensor, b.file], [kind, a.message, a.tensor, a.file]);
    });
  }
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, maxShardBytes: 8e6 });
    const shard = join(dir, "model-00003-of-00004.safetensors");
    await Deno.truncate(shard, (await Deno.stat(shard)).size - 1000);
    const b = await assertRejects(() => openWeightSources(dir, { quiet: true }), CheckpointError);
    assertEquals([b.kind, b.file], ["truncated", shard]);
  });
});

/** Reads every source whole; returns the errors met, by source name. */
async function readEach(sources: Map<string, WeightSource>): Promise<Map<string, unknown>> {
  const errors = new Map<string, unknown>();
  for (const s of sources.values()) await s.read(0, leadingRows(s.shape)).catch((e) => errors.set(s.name, e));
  return errors;
}

Deno.test("stream errors: a file cut or removed after opening makes read reject, naming tensor and file", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "f8e4m3" });
    const file = join(dir, MISTRAL), opened = await openWeightSources(dir, { quiet: true, group: "all" });
    const r = await openSafetensors(file), last = r.tensors.at(-1)!;
    await Deno.truncate(file, last.byteOffset + 1); // the last tensor in the file loses all but a byte
    const errors = await readEach(opened.sources);
    assert(errors.size >= 1 && errors.size < opened.sources.size, `${errors.size} sources failed`);
    for (const [name, e] of errors) {
      assert(e instanceof CheckpointError, `${name}: ${e}`);
      assertEquals([e.kind, e.file], ["truncated", file], e.message);
      assert(e.tensor && e.message.includes(`"${e.tensor}"`) && e.message.includes(name), e.message);
    }
    assert([...errors.values()].some((e) => (e as CheckpointError).tensor === last.name), "the cut tensor is named");
  });
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, maxShardBytes: 8e6 });
    const opened = await openWeightSources(dir, { quiet: true });
    const shard = join(dir, "model-00002-of-00004.safetensors");
    await Deno.remove(shard);
    const errors = await readEach(opened.sources);
    assert(errors.size >= 1, "some source lives in the removed shard");
    for (const e of errors.values()) {
      assert(e instanceof CheckpointError && e.file === shard && e.tensor, String(e));
      assert(e.message.includes(shard) && e.message.includes(`"${e.tensor}"`), e.message);
    }
  });
});
