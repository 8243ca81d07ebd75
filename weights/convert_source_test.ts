import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { presetConfig } from "../graph/models/mistral4.ts";
import { chunkRows, chunkToF32 } from "./chunks.ts";
import { convertWeight } from "./convert.ts";
import { convertSource } from "./convert_source.ts";
import { type CanonicalWeight, weightToF32 } from "./load.ts";
import { randomCanonicalWeights, type RandomDType, randomWeightSources } from "./random.ts";
import { RandomTensorSource } from "./random_source.ts";
import { leadingRows, type WeightChunk, type WeightSource } from "./source.ts";

/** Bit-for-bit equality of two f32 arrays. */
function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  assertEquals(got.length, want.length, `${what}: length`);
  const [g, w] = [got, want].map((a) => new Uint32Array(a.buffer, a.byteOffset, a.length));
  const i = g.findIndex((x, j) => x !== w[j]);
  assert(i < 0, `${what}: element ${i} is ${got[i]}, want ${want[i]}`);
}

/** `source` with its reads counted. */
function counted(source: WeightSource): WeightSource & { reads: number } {
  const c = Object.assign(Object.create(source), { reads: 0 }) as WeightSource & { reads: number };
  c.read = (row0: number, rows: number) => {
    c.reads++;
    return source.read(row0, rows);
  };
  return c;
}

/** Every chunk of `rowsPer` rows: decoded values, and codes and scales concatenated. */
async function readAll(s: WeightSource, rowsPer: number) {
  const n = leadingRows(s.shape), chunks: WeightChunk[] = [];
  for (let row0 = 0; row0 < n; row0 += rowsPer) chunks.push(await s.read(row0, Math.min(rowsPer, n - row0)));
  const cat = <T extends Uint8Array | Float32Array>(parts: T[], make: (n: number) => T): T => {
    const out = make(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) [out.set(p as never, at), at += p.length];
    return out;
  };
  return {
    values: cat(chunks.map((c) => chunkToF32(c)), (n) => new Float32Array(n)),
    data: cat(chunks.map((c) => c.data), (n) => new Uint8Array(n)),
    scales: chunks[0].scales ? cat(chunks.map((c) => c.scales!), (n) => new Float32Array(n)) : undefined,
  };
}

const NAMES = ["layers.0.attn.wq_a", "layers.0.shared.gate_up", "layers.1.moe.gate_up", "layers.1.moe.down"];

for (const from of ["bf16", "f32", "f8e4m3", "nvfp4"] as const) {
  Deno.test(`convertSource: from ${from}, chunks decode to convertWeight's values bit for bit`, async () => {
    const tiny = presetConfig("tiny"), opts = { seed: 4, dtype: from as RandomDType };
    const whole = randomCanonicalWeights(tiny, opts), { sources } = randomWeightSources(tiny, opts);
    for (const name of NAMES) {
      const w = whole.get(name)!;
      for (const to of ["q8", "q4", "f8e4m3", "nvfp4", "bf16", "f32", "f16"] as const) {
        const want = convertWeight(w, to), src = counted(sources.get(name)!), conv = convertSource(src, to);
        assertEquals([conv.name, conv.shape, conv.dtype], [name, w.shape, to]);
        const what = `${from} → ${to} ${name}`, got = await readAll(conv, 3);
        assertSameBits(got.values, weightToF32(want), what);
        if (to === w.dtype) {
          assert(conv === src, `${what}: identity`);
          continue;
        }
        // Codes as convertWeight's; scales row-local (FP8: its block's scale on each K-row).
        assertEquals(got.data, want.data, `${what}: codes`);
        const kRows = w.shape.reduce((a, b) => a * b, 1) / w.shape.at(-1)!;
        const scales = to === "f8e4m3"
          ? Float32Array.from({ length: kRows }, (_, k) => want.scales![Math.floor((k * want.scales!.length) / kRows)])
          : want.scales;
        assertEquals(got.scales, scales, `${what}: scales`);
        // A per-tensor scale over more than one chunk reads the source twice (its first pass in chunkRows' chunks);
        // experts are one pass.
        const chunks = Math.ceil(leadingRows(w.shape) / 3);
        const twice = (to === "f8e4m3" || to === "nvfp4") && w.shape.length !== 3 && chunks > 1;
        assertEquals(src.reads, chunks + (twice ? chunkRows(src).length : 0), `${what}: reads`);
      }
    }
  });
}

Deno.test("convertSource: a 1-D weight converts whole; bad targets and shapes are errors", async () => {
  const recipe = { state: 9, mean: 1, std: 0.03 }, one = { recipe, origin: "t", bytes: 0 };
  const norm = new RandomTensorSource({ ...one, name: "norm", shape: [64], dtype: "bf16" });
  const w: CanonicalWeight = { name: "norm", shape: [64], dtype: "bf16", data: norm.readSync(0, 64).data };
  const q = convertSource(norm, "q8");
  assertSameBits(chunkToF32(await q.read(0, 64)), weightToF32(convertWeight(w, "q8")), "norm q8");
  await assertRejects(() => q.read(0, 32), RangeError, "read whole");
  const odd = new RandomTensorSource({ ...one, name: "odd", shape: [4, 40], dtype: "f32" });
  assertThrows(() => convertSource(odd, "nvfp4"), RangeError, "40 columns; NVFP4 needs a multiple of 16");
  assertThrows(() => convertSource(odd, "q8"), RangeError, "multiple of 32");
  assertThrows(() => convertSource(odd, "i32"), RangeError, "cannot be converted to i32");
});

Deno.test("convertSource: runs give each source linear its own NVFP4 global scale (gate ‖ up apart), as nvfp4Weight", async () => {
  const weights = randomCanonicalWeights(presetConfig("tiny"), { seed: 4, dtype: "f32" });
  const w = weights.get("layers.1.moe.gate_up")!, E = w.shape[0], values = weightToF32(w);
  const src: WeightSource = {
    name: w.name,
    shape: w.shape,
    dtype: "f32",
    bytes: w.data.byteLength,
    origin: "memory",
    read: (row0, rows) => {
      const per = w.data.byteLength / E;
      return Promise.resolve({
        row0,
        rows,
        shape: [rows, ...w.shape.slice(1)],
        dtype: "f32",
        data: w.data.subarray(row0 * per, (row0 + rows) * per),
      });
    },
  };
  const { nvfp4Weight } = await import("./convert.ts");
  const want = nvfp4Weight(w.name, w.shape, values, 2 * E);
  const converted = convertSource(src, "nvfp4", 2 * E), kRows = w.shape[0] * w.shape[1];
  const chunk = await converted.read(0, E);
  assertEquals(chunk.data, want.data);
  assertEquals(chunk.scales, want.scales);
  // One global per K-row: each half of each expert its own.
  const g = chunk.globalScales!, half = w.shape[1] / 2;
  assertEquals(g.length, kRows);
  for (let r = 0; r < kRows; r++) assertEquals(g[r], want.globalScales![Math.floor(r / half)]);
  assert(g[0] !== g[half], "gate and up have their own global scales");
  assertThrows(() => convertSource(src, "nvfp4", 3 * E + 1), RangeError, "scale runs");
});
