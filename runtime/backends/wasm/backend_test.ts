import { assert, assertEquals, assertThrows } from "../../../tests/assert.ts";
import { GraphBuilder } from "../../../graph/builder.ts";
import { embedding, matmul } from "../../../ops/mod.ts";
import { OutOfMemoryError, weightBytes } from "../../backend.ts";
import { runGraph } from "../../execute.ts";
import { schedule } from "../../schedule.ts";
import { ScheduleError } from "../../schedule/plan.ts";
import { quantizeFp8, unfoldNvfp4Scales } from "../../../weights/codecs.ts";
import { nvfp4Weight } from "../../../weights/convert.ts";
import { memorySource } from "../../../weights/memory_source.ts";
import { encodeChunk, permuteNvfp4Groups, transposeQ4Groups, wasmWeightBytes } from "./layout.ts";
import { wasmBackend } from "./backend.ts";

const available = await wasmBackend.probe().then((s) => s > 0, () => false);

Deno.test("wasm q4 layout: each whole group of 4 blocks transposed by words, the tail blocks kept; aligned or not", () => {
  const K = 32 * 9, rowBytes = 16 * 9, rows = 2; // two whole groups and one tail block a row
  const codes = Uint8Array.from({ length: rows * rowBytes }, (_, i) => (i * 37 + 11) & 255);
  const moved = codes.slice();
  transposeQ4Groups(moved, 0, rows, K);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < 9; b++) {
      for (let p = 0; p < 16; p++) {
        const from = r * rowBytes + 16 * b + p, g = Math.floor(b / 4), j = b % 4, t = Math.floor(p / 4);
        const to = b < 8 ? r * rowBytes + 64 * g + 16 * t + 4 * j + (p % 4) : from;
        assertEquals(moved[to], codes[from], `row ${r} block ${b} byte ${p}`);
      }
    }
  }
  const odd = new Uint8Array(rows * rowBytes + 1); // a view one byte off the word: the unaligned path
  odd.set(codes, 1);
  transposeQ4Groups(odd, 1, rows, K);
  assertEquals(odd.subarray(1), moved);
  transposeQ4Groups(moved, 0, rows, K); // its own inverse
  assertEquals(moved, codes);
});

Deno.test("wasm weight layout: q8 and f8 scales after the values, f8 block scales expanded to rows", async () => {
  assertEquals(wasmWeightBytes([3, 5], "f32"), 60);
  assertEquals(wasmWeightBytes([3, 5], "bf16"), 30);
  assertEquals(wasmWeightBytes([3, 5], "f8e4m3"), 16 + 12); // 15 codes padded to 16, 3 row scales
  assertEquals(wasmWeightBytes([2, 4, 64], "q8"), 512 + 8 * 2 * 4);
  const values = Float32Array.from({ length: 4 * 3 }, (_, i) => (i + 1) * (i < 6 ? 1 : 100));
  const q = quantizeFp8(values, 2); // a fused gate ‖ up: one scale per half
  const src = memorySource({ name: "w", shape: [4, 3], dtype: "f8e4m3", data: q.codes, scales: q.scales }, "f8e4m3");
  // Two chunks, written in either order, give the same layout.
  const out = new Uint8Array(wasmWeightBytes([4, 3], "f8e4m3"));
  encodeChunk(out, [4, 3], "f8e4m3", await src.read(2, 2), 2);
  encodeChunk(out, [4, 3], "f8e4m3", await src.read(0, 2), 0);
  assertEquals(out.subarray(0, 12), q.codes);
  assertEquals([...new Float32Array(out.buffer, 12, 4)], [q.scales[0], q.scales[0], q.scales[1], q.scales[1]]);
  const short = { ...(await src.read(0, 2)), data: new Uint8Array(5) };
  assertThrows(() => encodeChunk(out, [4, 3], "f8e4m3", short, 0), RangeError, "5 B");
  assertThrows(() => wasmWeightBytes([4], "nvfp4"), RangeError, "multiple of 16");
});

Deno.test("wasm NVFP4 layout: each 64-element group as elements 0–7 of its 4 blocks, then 8–15; the tail kept; aligned or not", () => {
  const K = 64 * 2 + 16, codes = Uint8Array.from({ length: K / 2 }, (_, i) => (i * 29 + 5) & 255);
  const moved = codes.slice();
  permuteNvfp4Groups(moved, 0, K);
  for (let e = 0; e < K; e += 2) { // a byte holds elements e (low nibble) and e + 1
    const g = Math.floor(e / 64), j = Math.floor((e % 64) / 16), h = Math.floor((e % 16) / 8), p = (e % 8) / 2;
    const to = e < 128 ? 32 * g + 16 * h + 4 * j + p : e / 2;
    assertEquals(moved[to], codes[e / 2], `element ${e}`);
  }
  const odd = new Uint8Array(K / 2 + 3); // a row off the word (rows are 9K/16 bytes): the unaligned path
  odd.set(codes, 3);
  permuteNvfp4Groups(odd, 3, K);
  assertEquals(odd.subarray(3), moved);
});

Deno.test("wasm weight layout: NVFP4 as released, 0.5625 bytes per expert weight value", async () => {
  // Experts [E, N, K]: per K-row K/2 code bytes and K/16 f8 block scales, then 2 globals per expert.
  const [E, N, K] = [3, 8, 64];
  assertEquals(wasmWeightBytes([E, N, K], "nvfp4"), E * N * K * 0.5625 + E * 2 * 4);
  assertEquals(wasmWeightBytes([5, 32], "nvfp4"), 5 * 18 + 2 + 5 * 4); // 2-D: one global per row
  assertThrows(() => wasmWeightBytes([4, 24], "nvfp4"), RangeError, "multiple of 16");
  const values = Float32Array.from({ length: E * N * K }, (_, i) => Math.sin(i) * (1 + (i % 7)));
  // Gate ‖ up halves with their own global scales, as Mistral ships w1 and w3.
  const w = nvfp4Weight("w", [E, N, K], values, 2 * E);
  const out = new Uint8Array(wasmWeightBytes([E, N, K], "nvfp4"));
  const src = memorySource(w, "nvfp4");
  for (const row0 of [2, 0, 1]) encodeChunk(out, [E, N, K], "nvfp4", await src.read(row0, 1), row0);
  const rb = K / 2 + K / 16, globals = new Float32Array(out.buffer, E * N * rb, 2 * E);
  assertEquals([...globals], [...w.globalScales!]);
  for (let r = 0; r < E * N; r++) {
    const codes64 = w.data.slice((r * K) / 2, ((r + 1) * K) / 2); // the codes, each 64-element group permuted
    permuteNvfp4Groups(codes64, 0, K);
    assertEquals(out.subarray(r * rb, r * rb + K / 2), codes64);
    const codes = unfoldNvfp4Scales(w.scales!.subarray(r * (K / 16), (r + 1) * (K / 16)), [globals[r >> 2]]);
    assertEquals(out.subarray(r * rb + K / 2, (r + 1) * rb), codes);
  }
  // A chunk without its K-rows' global scales cannot be kept packed; nor an expert with 3 globals.
  const { globalScales: _, ...bare } = await src.read(0, 1);
  assertThrows(() => encodeChunk(out, [E, N, K], "nvfp4", bare, 0), RangeError, "one global scale per K-row");
  const three = memorySource(nvfp4Weight("w", [1, 6, K], values.subarray(0, 6 * K), 3), "nvfp4");
  const out3 = new Uint8Array(wasmWeightBytes([1, 6, K], "nvfp4"));
  const chunk3 = await three.read(0, 1);
  assertThrows(() => encodeChunk(out3, [1, 6, K], "nvfp4", chunk3, 0), RangeError, "more than 2 global scale(s)");
});

Deno.test({
  name: "wasm backend: buffers, weight sizes, support, bad ids, memory limits, dispose",
  ignore: !available,
  async fn() {
    const backend = await wasmBackend.create({ threads: 2, memoryBytes: 64 * 2 ** 20 });
    try {
      assertEquals(backend.name, "wasm");
      const buf = backend.alloc(16);
      backend.write({ buffer: buf, offset: 4 }, new Float32Array([1, 2]));
      assertEquals([...new Float32Array((await backend.read({ buffer: buf, offset: 4 }, 8)).buffer)], [1, 2]);
      assertThrows(() => backend.write({ buffer: buf, offset: 12 }, new Float32Array(2)), RangeError);
      backend.free(buf);
      assertEquals(weightBytes(backend, [8, 32], "q8"), 256 + 32);
      assertEquals(weightBytes(backend, [8, 32], "nvfp4"), 8 * 18 + 8 * 4); // kept packed, a global per row

      const g = new GraphBuilder();
      const ids = g.input("ids", [2], "i32"), table = g.weight("table", [4, 8], "f32");
      const h = embedding(g, ids, table);
      g.output("y", matmul(g, h, g.weight("w", [3, 8], "f8e4m3")));
      const half = matmul(g, g.input("x", [1, 8], "bf16"), g.weight("w2", [3, 8], "f32")); // bf16 activations
      g.output("half", half);
      const graph = g.build();
      const node = (op: string) => graph.nodes.find((n) => n.op === op && n.dtype === "f32")!;
      const info = (id: number) => [...graph.inputs, ...graph.weights, ...graph.nodes].find((t) => t.id === id)!;
      const infos = (n: typeof graph.nodes[0]) =>
        n.inputs.map((i) => ({
          ...info(i),
          kind: graph.weights.some((w) => w.id === i) ? "weight" as const : "input" as const,
        }));
      assert(backend.supports(node("matmul"), infos(node("matmul"))), "f8 weights");
      const bf = graph.nodes.find((n) => n.dtype === "bf16")!;
      assert(!backend.supports(bf, infos(bf)), "bf16 activations fall back");

      // An id outside the table is an error, not a read past it.
      const small = new GraphBuilder();
      small.output("y", embedding(small, small.input("ids", [2], "i32"), small.weight("t", [4, 8], "f32")));
      const weights = new Map([["t", new Float32Array(32).fill(1)]]);
      const run = (v: number[]) => runGraph(small.build(), backend, { weights, inputs: { ids: Int32Array.from(v) } });
      assertEquals([...(await run([3, 0])).y as Float32Array], new Array(16).fill(1));
      let err: Error | undefined;
      await run([1, 4]).catch((e) => err = e);
      assert(err?.message.includes("id 4 at row 1 outside 0..3"), String(err));

      // 64 MiB cannot hold a 64 MiB weight: the scheduler says what to change, and so does alloc.
      const big = new GraphBuilder();
      big.output("y", matmul(big, big.input("x", [1, 1024], "f32"), big.weight("w", [16384, 1024], "f32")));
      assertThrows(() => schedule(big.build(), [backend]), ScheduleError, "--dtype");
      assertThrows(() => backend.alloc(128 * 2 ** 20), OutOfMemoryError, "--dtype");
    } finally {
      backend.dispose();
    }
  },
});

Deno.test({
  name: "wasm transfer to another kind of backend: one write of a view of wasm memory, no read-back",
  ignore: !available,
  async fn() {
    const { referenceBackend } = await import("../reference.ts");
    const wasm = await wasmBackend.create({ threads: 1 });
    const reference = await referenceBackend.create();
    try {
      const src = { buffer: wasm.alloc(64), offset: 16 }, dst = { buffer: reference.alloc(64), offset: 8 };
      const data = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);
      wasm.write(src, data);
      let reads = 0, writes = 0;
      const read = wasm.read.bind(wasm), write = reference.write.bind(reference);
      wasm.read = (v, n) => (reads++, read(v, n));
      reference.write = (v, d) => (writes++, write(v, d));
      assert(await wasm.transfer!(src, reference, dst, 32));
      assertEquals([reads, writes], [0, 1]);
      wasm.write(src, new Uint8Array(32)); // the transfer took the data at once
      assertEquals(await reference.read(dst, 32), data);
    } finally {
      wasm.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "wasm moe_experts at decode sizes with a token listing one expert twice (> 8 rows for it) ≡ the reference",
  ignore: !available,
  async fn() {
    // T ≤ 8 takes the once-quantised activations (MoeParams qx, qact), whose products hold ≤ 8 rows; repeated ids
    // give an expert more rows than tokens, which must take the general product instead.
    const { referenceBackend } = await import("../reference.ts");
    const { moeExperts } = await import("../../../ops/mod.ts");
    const { f32ToBytes } = await import("../../../weights/codecs.ts");
    const [T, K, E, D, F] = [8, 2, 4, 64, 64];
    let seed = 1;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) - 0.5;
    const values = (n: number) => Float32Array.from({ length: n }, () => rnd() * 0.2);
    const gu = values(E * 2 * F * D), dn = values(E * D * F);
    const inputs = {
      x: Float32Array.from({ length: T * D }, () => rnd()),
      ids: new Int32Array(T * K).fill(1), // every assignment to expert 1: 16 rows
      w: new Float32Array(T * K).fill(0.5),
    };
    const wasm = await wasmBackend.create({ threads: 1 }), reference = await referenceBackend.create();
    try {
      for (const dtype of ["q8", "q4", "nvfp4"] as const) {
        const g = new GraphBuilder();
        const x = g.input("x", [T, D], "f32"), ids = g.input("ids", [T, K], "i32"), w = g.input("w", [T, K], "f32");
        const wg = g.weight("gu", [E, 2 * F, D], dtype), wd = g.weight("dn", [E, D, F], dtype);
        g.output("y", moeExperts(g, x, ids, w, wg, wd));
        const source = (name: string, shape: number[], data: Float32Array) =>
          memorySource({ name, shape, dtype: "f32", data: f32ToBytes(data, "f32") }, dtype);
        const weights = (d: { name: string }) =>
          d.name === "gu" ? source("gu", [E, 2 * F, D], gu) : source("dn", [E, D, F], dn);
        const want = (await runGraph(g.build(), reference, { weights, inputs })).y as Float32Array;
        const got = (await runGraph(g.build(), wasm, { weights, inputs })).y as Float32Array;
        let err = 0, max = 0;
        for (let i = 0; i < want.length; i++) {
          err = Math.max(err, Math.abs(got[i] - want[i]));
          max = Math.max(max, Math.abs(want[i]));
        }
        assert(err <= 2e-2 * max, `${dtype}: max error ${err} against max |y| ${max}`);
      }
    } finally {
      wasm.dispose();
      reference.dispose();
    }
  },
});
