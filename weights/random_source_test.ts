import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { canonicalTensors, presetConfig } from "../graph/models/mistral4.ts";
import { chunkToF32 } from "./chunks.ts";
import { f32ToBytes, type FloatDType, quantizeFp8 } from "./codecs.ts";
import { nvfp4Weight } from "./convert.ts";
import { type CanonicalWeight, weightToF32 } from "./load.ts";
import {
  fillUniform,
  fillUniformAt,
  randomCanonicalWeights,
  type RandomDType,
  randomWeightSources,
  tensorSeed,
} from "./random.ts";
import { RandomTensorSource } from "./random_source.ts";
import { leadingRows, type WeightSource } from "./source.ts";

/** Bit-for-bit equality of two f32 arrays. */
function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  assertEquals(got.length, want.length, `${what}: length`);
  const [g, w] = [got, want].map((a) => new Uint32Array(a.buffer, a.byteOffset, a.length));
  const i = g.findIndex((x, j) => x !== w[j]);
  assert(i < 0, `${what}: element ${i} is ${got[i]}, want ${want[i]}`);
}

/** Element `i` of a recipe, from the module docs of random.ts step by step (an independent implementation). */
function documented(state: number, i: number, mean: number, std: number): number {
  const a = (state + Math.imul(i + 1, 0x6d2b79f5)) >>> 0;
  let t = Math.imul(a ^ (a >>> 15), a | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  const h = (t ^ (t >>> 14)) >>> 0;
  return Math.fround(mean + (h - 2 ** 31) * (std * Math.sqrt(12) / 2 ** 32));
}

Deno.test("fillUniformAt: element i from the start state and i alone, as fillUniform and the documented recipe", () => {
  const whole = new Float32Array(1000);
  fillUniform(whole, 0xdeadbeef, 0.5, 0.25);
  for (const first of [0, 1, 17, 999]) {
    const part = new Float32Array(1000 - first);
    fillUniformAt(part, 0xdeadbeef, first, 0.5, 0.25);
    assertSameBits(part, whole.subarray(first), `from ${first}`);
  }
  for (let i = 0; i < 1000; i++) assertEquals(whole[i], documented(0xdeadbeef, i, 0.5, 0.25), `element ${i}`);
  // Far into a stream (past 2^31 and 2^32 elements) the counter wraps as the sequential stream would.
  for (const i of [2 ** 31 - 1, 2 ** 32 - 1, 3e9, 5e9]) {
    const two = new Float32Array(2), one = new Float32Array(1);
    fillUniformAt(two, 7, i, 0, 1);
    fillUniformAt(one, 7, i + 1, 0, 1);
    assertEquals([one[0], two[0]], [two[1], documented(7, i, 0, 1)], `at ${i}`);
  }
});

/** The whole-tensor generator as it was before chunked sources (fillUniform, quantizeFp8, nvfp4Weight). */
function legacy(name: string, dtype: RandomDType, seed: number): CanonicalWeight {
  const c = presetConfig("tiny"), w = randomCanonicalWeights(c, { seed, dtype, group: "all" }).get(name)!;
  const src = randomWeightSources(c, { seed, dtype, group: "all" }).sources.get(name)!;
  const values = new Float32Array(w.shape.reduce((a, b) => a * b, 1));
  fillUniform(values, src.random.state, src.random.mean, src.random.std);
  if (w.dtype === "nvfp4") return nvfp4Weight(name, w.shape, values, w.globalScales!.length);
  if (w.dtype !== "f8e4m3") return { ...w, data: f32ToBytes(values, w.dtype as FloatDType) };
  // Blocks as the coarsest layout stores them: HF keeps one scale per expert for gate ‖ up.
  const blocks = name.endsWith("moe.gate_up") ? w.shape[0] : w.scales!.length;
  const q = quantizeFp8(values, blocks), n = w.scales!.length;
  return { ...w, data: q.codes, scales: w.scales!.map((_, i) => q.scales[Math.floor((i * blocks) / n)]) };
}

async function readDecoded(s: WeightSource, rowsPer: number, reverse = false): Promise<Float32Array> {
  const n = leadingRows(s.shape), per = s.shape.slice(1).reduce((a, b) => a * b, 1), out = new Float32Array(n * per);
  const starts = Array.from({ length: Math.ceil(n / rowsPer) }, (_, i) => i * rowsPer);
  for (const row0 of reverse ? starts.reverse() : starts) {
    const c = await s.read(row0, Math.min(rowsPer, n - row0));
    assertEquals([c.row0, c.dtype, c.shape.slice(1)], [row0, s.dtype, s.shape.slice(1)]);
    out.set(chunkToF32(c), row0 * per);
  }
  return out;
}

for (const dtype of ["f32", "bf16", "f8e4m3", "nvfp4"] as const) {
  Deno.test(`randomWeightSources: ${dtype} chunks ≡ randomCanonicalWeights ≡ the whole-tensor generator`, async () => {
    const tiny = presetConfig("tiny");
    const whole = randomCanonicalWeights(tiny, { seed: 11, dtype, group: "all" });
    const { config, sources } = randomWeightSources(tiny, { seed: 11, dtype, group: "all", preset: "tiny" });
    assertEquals([...sources.keys()], [...whole.keys()]);
    assertEquals(config.quantization?.weight_dtype ?? config.dtype, dtype);
    for (const [name, w] of whole) {
      const s = sources.get(name)!, t = canonicalTensors(config).find((c) => c.name === name)!;
      assertEquals([s.shape, s.dtype, s.origin], [w.shape, w.dtype, "preset tiny seed 11"]);
      assertEquals(s.random.state, tensorSeed(11, name));
      const rows = leadingRows(t.shape) > 1000 ? 4099 : 3;
      assertSameBits(await readDecoded(s, rows), weightToF32(w), `${dtype} ${name}`);
    }
    assertEquals(sources.get("norm")!.random, { state: tensorSeed(11, "norm"), mean: 1, std: 0.05 / Math.sqrt(3) });
    // The generator that made these before chunks existed agrees, codes and scales included.
    for (const name of ["layers.1.moe.gate_up", "layers.1.moe.down", "layers.0.shared.gate_up", "layers.0.attn.wq_b"]) {
      const [got, want] = [whole.get(name)!, legacy(name, dtype, 11)];
      assertEquals(got.data, want.data, `${dtype} ${name} data`);
      assertEquals([got.scales, got.globalScales], [want.scales, want.globalScales], `${dtype} ${name} scales`);
    }
    // Any order: a chunk needs nothing read before it.
    const gu = sources.get("layers.1.moe.gate_up")!;
    assertSameBits(await readDecoded(gu, 2, true), weightToF32(whole.get("layers.1.moe.gate_up")!), "reversed");
  });
}

/** FNV-1a over names, shapes, codes and scales: the numbers random weights had when chunked sources came. */
function fingerprint(weights: Map<string, CanonicalWeight>): string {
  let h = 0x811c9dc5;
  const mix = (b: Uint8Array) => {
    for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  };
  const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  for (const [n, w] of weights) {
    mix(new TextEncoder().encode(n + w.dtype + w.shape.join()));
    mix(w.data);
    if (w.scales) mix(bytes(w.scales));
    if (w.globalScales) mix(bytes(w.globalScales));
  }
  return (h >>> 0).toString(16);
}

Deno.test("random weights: the values presets have always had (fingerprints of tiny, seed 7)", () => {
  const want = { f32: "36dd922b", bf16: "dde6b9bd", f8e4m3: "63a73581", nvfp4: "571182fa" };
  for (const [dtype, h] of Object.entries(want)) {
    const w = randomCanonicalWeights(presetConfig("tiny"), { seed: 7, dtype: dtype as RandomDType, group: "all" });
    assertEquals(fingerprint(w), h, dtype);
  }
});

Deno.test("RandomTensorSource: bad reads and shapes are errors", async () => {
  const recipe = { state: 1, mean: 0, std: 0.1 };
  const s = new RandomTensorSource({ name: "w", shape: [4, 32], dtype: "f8e4m3", recipe, origin: "t", bytes: 0 });
  await assertRejects(() => s.read(3, 2), RangeError, "outside");
  await assertRejects(() => s.read(0, 0), RangeError, "outside");
  const one = { recipe, origin: "t", bytes: 0 };
  assertThrows(() => new RandomTensorSource({ ...one, name: "x", shape: [4, 40], dtype: "nvfp4" }), RangeError, "40");
  assertThrows(
    () => new RandomTensorSource({ ...one, name: "x", shape: [3, 32], dtype: "nvfp4", runs: 2 }),
    RangeError,
  );
  assertThrows(() => new RandomTensorSource({ ...one, name: "x", shape: [3, 32], dtype: "q8" }), RangeError, "q8");
  // One scale per K-row, the tensor's one block scale on each.
  const c = s.readSync(1, 2);
  assertEquals([c.scales!.length, c.scales![0] === c.scales![1], c.scales![0] === s.runScales()[0]], [2, true, true]);
});
