import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { chunkBytes, chunkRows, chunkScaleCount, chunkToF32 } from "./chunks.ts";
import { encodeF8e4m3 } from "./codecs.ts";
import type { WeightChunk } from "./source.ts";

Deno.test("chunkRows: every row once, in order, each chunk within the bound unless one row is larger", () => {
  const cases: [number[], string, number][] = [
    [[131072, 4096], "bf16", 16 * 2 ** 20], // 8 KiB rows: 2048 per chunk
    [[128, 4096, 4096], "f8e4m3", 16 * 2 ** 20], // an expert is 16 MiB + its scales: one per chunk
    [[128, 4096, 4096], "nvfp4", 16 * 2 ** 20], // 9 MiB experts: one per chunk
    [[1000, 64], "q8", 4096], // 64 + 8 bytes a row: 56 rows
    [[37, 32], "f32", 1], // a bound below one row: single rows
  ];
  for (const [shape, dtype, max] of cases) {
    const ranges = chunkRows({ shape, dtype: dtype as WeightChunk["dtype"] }, max);
    let next = 0;
    for (const { row0, rows } of ranges) {
      assertEquals(row0, next, `${dtype} [${shape}]`);
      assert(rows === 1 || chunkBytes(shape, dtype as WeightChunk["dtype"], rows) <= max, `${rows} rows`);
      next += rows;
    }
    assertEquals(next, shape[0]);
  }
  assertEquals(chunkRows({ shape: [131072, 4096], dtype: "bf16" }).length, 64);
  assertEquals(chunkRows({ shape: [1000, 64], dtype: "q8" }, 4096)[0].rows, 56);
  assertEquals(chunkRows({ shape: [4096], dtype: "f32" }, 16), [{ row0: 0, rows: 4096 }]); // 1-D: whole
  assertEquals(
    [chunkScaleCount("q8", 128, 64), chunkScaleCount("nvfp4", 128, 64), chunkScaleCount("f8e4m3", 128, 64)],
    [
      4,
      8,
      2,
    ],
  );
});

Deno.test("chunkToF32: row-local scales for FP8, NVFP4 and q8; floats as they are", () => {
  const f8: WeightChunk = {
    row0: 4,
    rows: 2,
    shape: [2, 2],
    dtype: "f8e4m3",
    data: new Uint8Array([encodeF8e4m3(1), encodeF8e4m3(2), encodeF8e4m3(1), encodeF8e4m3(-2)]),
    scales: new Float32Array([0.5, 4]), // one per K-row
  };
  assertEquals([...chunkToF32(f8)], [0.5, 1, 4, -8]);
  const nv: WeightChunk = {
    row0: 0,
    rows: 1,
    shape: [1, 32],
    dtype: "nvfp4",
    data: new Uint8Array(16).fill(0xb1), // +0.5 low, -1.5 high
    scales: new Float32Array([0.25, 2]),
  };
  const v = chunkToF32(nv);
  assertEquals([v[0], v[1], v[16], v[17]], [0.125, -0.375, 1, -3]);
  const q: WeightChunk = {
    row0: 0,
    rows: 2,
    shape: [2, 32],
    dtype: "q8",
    data: new Uint8Array(new Int8Array(64).fill(-3).buffer),
    scales: new Float32Array([0.5, 2]),
  };
  assertEquals([chunkToF32(q)[0], chunkToF32(q)[63]], [-1.5, -6]);
  const bf: WeightChunk = { row0: 0, rows: 2, shape: [2], dtype: "bf16", data: new Uint8Array([0x80, 0x3f, 0, 0xc0]) };
  assertEquals([...chunkToF32(bf)], [1, -2]);
  assertThrows(() => chunkToF32({ ...nv, scales: undefined }), RangeError, "no scales");
  assertThrows(() => chunkToF32({ ...bf, dtype: "i32" }), RangeError, "i32");
});
