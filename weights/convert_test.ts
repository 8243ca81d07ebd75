import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { dequantizeNvfp4, quantizeNvfp4 } from "./codecs.ts";
import { convertWeight } from "./convert.ts";
import { type CanonicalWeight, weightToF32 } from "./load.ts";

function f32Weight(shape: number[], seed: number): CanonicalWeight {
  const rand = mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const values = Float32Array.from({ length: n }, () => rand() * 2 - 1);
  return { name: "w", shape, dtype: "f32", data: new Uint8Array(values.buffer) };
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  let m = 0, amax = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i] - b[i]));
    amax = Math.max(amax, Math.abs(b[i]));
  }
  return m / amax;
}

Deno.test("convertWeight: q8 blocks of 32 round-trip within half a quantisation step", () => {
  const w = f32Weight([5, 96], 1);
  const q = convertWeight(w, "q8");
  assertEquals(q.dtype, "q8");
  assertEquals(q.data.length, 5 * 96);
  assertEquals(q.scales!.length, 5 * 3);
  const back = weightToF32(q);
  const orig = weightToF32(w);
  for (let b = 0; b < 15; b++) {
    for (let j = 0; j < 32; j++) {
      const i = b * 32 + j;
      assert(Math.abs(back[i] - orig[i]) <= q.scales![b] / 2 + 1e-7, `element ${i}`);
    }
  }
  // Re-encoding q8 values to q8 is the identity.
  assertEquals(weightToF32(convertWeight({ ...q, name: "again" }, "q8")), back);
});

Deno.test("convertWeight: bf16 and f8e4m3 (one scale per expert) keep values within their precision", () => {
  const w = f32Weight([4, 8, 32], 2);
  const orig = weightToF32(w);
  const bf = convertWeight(w, "bf16");
  assert(maxRelErr(weightToF32(bf), orig) < 2 ** -8);
  const f8 = convertWeight(w, "f8e4m3");
  assertEquals(f8.scales!.length, 4);
  assert(maxRelErr(weightToF32(f8), orig) < 2 ** -3);
  assertEquals(convertWeight(w, "f32"), w);
});

Deno.test("convertWeight: nvfp4 quantises like compressed-tensors, one global scale per expert", () => {
  const w = f32Weight([4, 8, 32], 3);
  const orig = weightToF32(w);
  const q = convertWeight(w, "nvfp4");
  assertEquals([q.dtype, q.shape, q.data.length, q.scales!.length, q.globalScales!.length], [
    "nvfp4",
    [4, 8, 32],
    4 * 8 * 16,
    4 * 8 * 2,
    4,
  ]);
  // Expert 2 alone is what quantizeNvfp4 makes of its rows, bit for bit.
  const e2 = quantizeNvfp4(orig.subarray(2 * 256, 3 * 256), 8, 32);
  assertEquals(q.globalScales![2], e2.globalScale);
  assertEquals(weightToF32(q).subarray(2 * 256, 3 * 256), dequantizeNvfp4(e2, 8, 32));
  assert(maxRelErr(weightToF32(q), orig) < 1 / 4, "within the E2M1 step of each block's largest value");
  assertEquals(convertWeight(f32Weight([5, 64], 4), "nvfp4").globalScales!.length, 1);
  // Back to f32 gives the NVFP4 values exactly, and NVFP4 again is the identity.
  assertEquals(weightToF32(convertWeight(convertWeight(q, "f32"), "nvfp4")), weightToF32(q));
  assertThrows(
    () => convertWeight(f32Weight([4, 40], 5), "nvfp4"),
    RangeError,
    "40 columns; NVFP4 needs a multiple of 16",
  );
});
