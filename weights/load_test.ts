import { join } from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { presetConfig } from "../graph/models/mistral4.ts";
import { bytesToF32, encodeF8e4m3, f32ToBytes } from "./codecs.ts";
import { CheckpointError } from "./errors.ts";
import { type CanonicalWeight, loadCanonicalWeights, weightToF32 } from "./load.ts";
import { makeCheckpoint, mistralParamsJson } from "./make_checkpoint.ts";
import { randomCanonicalWeights } from "./random.ts";
import { openSafetensors } from "./safetensors.ts";
import { type TensorToWrite, writeSafetensors } from "./safetensors_writer.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_load_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Rewrites one safetensors file of a checkpoint through `edit`, keeping an HF index in step. */
async function rewrite(dir: string, file: string, edit: (t: TensorToWrite[]) => TensorToWrite[]): Promise<void> {
  const path = join(dir, file);
  const r = await openSafetensors(path);
  const before: TensorToWrite[] = [];
  for (const t of r.tensors) {
    before.push({ name: t.name, dtype: t.storage, shape: t.shape, data: await r.read(t.name) });
  }
  const after = edit(before);
  await writeSafetensors(path, after);
  const indexPath = join(dir, "model.safetensors.index.json");
  const index = await Deno.readTextFile(indexPath).then(JSON.parse).catch(() => null);
  if (!index) return;
  for (const t of before) delete index.weight_map[t.name];
  for (const t of after) index.weight_map[t.name] = file;
  await Deno.writeTextFile(indexPath, JSON.stringify(index));
}

async function expectError(dir: string, kind: string, parts: string[]): Promise<CheckpointError> {
  const e = await assertRejects(() => loadCanonicalWeights(dir, { quiet: true }), CheckpointError);
  assertEquals(e.kind, kind, e.message);
  for (const p of parts) assert(e.message.includes(p), `message lacks "${p}": ${e.message}`);
  return e;
}

const MISTRAL = "consolidated.safetensors";

Deno.test("load errors: a missing tensor names the tensor and the file", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral" });
    await rewrite(dir, MISTRAL, (ts) => ts.filter((t) => t.name !== "layers.1.experts.3.w2.weight"));
    await expectError(dir, "missing_tensor", ['"layers.1.experts.3.w2.weight"', join(dir, MISTRAL)]);
  });
  await withDir(async (dir) => {
    // HF: gone from both the shard and the index; the index is what the message names.
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, maxShardBytes: 8e6 });
    await rewrite(dir, "model-00002-of-00004.safetensors", (ts) => ts.slice(1));
    const e = await assertRejects(() => loadCanonicalWeights(dir, { quiet: true }), CheckpointError, "missing tensor");
    assert(e.message.includes("model.safetensors.index.json") && e.tensor !== undefined, e.message);
  });
});

Deno.test("load errors: an extra tensor, a wrong shape, a wrong dtype", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "f8e4m3" });
    const file = join(dir, MISTRAL);
    const bogus = {
      name: "layers.0.attention.wq_c.weight",
      dtype: "bf16",
      shape: [2],
      data: new Uint8Array(4),
    } as const;
    await rewrite(dir, MISTRAL, (ts) => [...ts, bogus]);
    await expectError(dir, "extra_tensor", ['"layers.0.attention.wq_c.weight"', file]);
    await rewrite(
      dir,
      MISTRAL,
      (ts) =>
        ts.filter((t) => t.name !== bogus.name).map((t) =>
          t.name === "layers.1.ffn_norm.weight" ? { ...t, shape: [32], data: new Uint8Array(64) } : t
        ),
    );
    await expectError(dir, "shape", ['"layers.1.ffn_norm.weight"', file, "[32]", "[64]"]);
    await rewrite(dir, MISTRAL, (ts) =>
      ts.map((t) => {
        if (t.name === "layers.1.ffn_norm.weight") return { ...t, shape: [64], data: new Uint8Array(128) };
        if (t.name === "layers.0.attention.wo.weight") {
          return { ...t, dtype: "BF16", data: new Uint8Array(2 * 64 * 64) };
        }
        return t;
      }));
    await expectError(dir, "dtype", ['"layers.0.attention.wo.weight"', file, "f8e4m3"]);
  });
});

Deno.test("load errors: a truncated shard names the cut tensor and the file", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, maxShardBytes: 8e6 });
    const shard = join(dir, "model-00003-of-00004.safetensors");
    const size = (await Deno.stat(shard)).size;
    await Deno.truncate(shard, size - 1000);
    const e = await expectError(dir, "truncated", [shard, "re-download"]);
    assert(e.tensor && e.message.includes(`"${e.tensor}"`), e.message);
  });
});

Deno.test("load: vision tensors are checked even when only text is loaded", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral" });
    await rewrite(dir, MISTRAL, (ts) => ts.filter((t) => t.name !== "vision_encoder.ln_pre.weight"));
    await expectError(dir, "missing_tensor", ['"vision_encoder.ln_pre.weight"']);
  });
});

Deno.test("load: HF vision q/k rows are half-split on disk and interleaved once loaded", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir });
    const r = await openSafetensors(join(dir, "model.safetensors.index.json"));
    const hf = bytesToF32(await r.read("model.vision_tower.transformer.layers.0.attention.q_proj.weight"), "bf16");
    const canon = weightToF32(
      randomCanonicalWeights(presetConfig("tiny"), { seed: 0, group: "all" }).get(
        "vision.layers.0.attn.wq",
      )!,
    );
    const H = 32, hd = 16, row = (a: Float32Array, i: number) => [...a.subarray(i * H, (i + 1) * H)];
    // Head 1, pair 3: canonical rows hd + 6 (even) and hd + 7 (odd) are HF rows hd + 3 and hd + hd/2 + 3.
    assertEquals(row(hf, hd + 3), row(canon, hd + 6));
    assertEquals(row(hf, hd + hd / 2 + 3), row(canon, hd + 7));
  });
});

Deno.test("load: f16 weights widen to f32 (or narrow to bf16 on request)", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "f32" });
    const toF16 = (t: TensorToWrite): TensorToWrite =>
      t.dtype === "F32" ? { ...t, dtype: "F16", data: f32ToBytes(bytesToF32(t.data as Uint8Array, "f32"), "f16") } : t;
    await rewrite(dir, MISTRAL, (ts) => ts.map(toF16));
    const r = await openSafetensors(join(dir, MISTRAL));
    const stored = bytesToF32(await r.read("layers.0.attention.wq_a.weight"), "f16");
    const wide = await loadCanonicalWeights(dir, { quiet: true });
    assertEquals([wide.config.dtype, wide.weights.get("layers.0.attn.wq_a")!.dtype], ["f32", "f32"]);
    assertEquals(weightToF32(wide.weights.get("layers.0.attn.wq_a")!), stored);
    const narrow = await loadCanonicalWeights(dir, { quiet: true, f16: "bf16" });
    assertEquals([narrow.config.dtype, narrow.weights.get("norm")!.dtype], ["bf16", "bf16"]);
  });
});

Deno.test("load: params.json beside config.json decides the softmax scale (yarn.apply_scale)", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir });
    assertEquals((await loadCanonicalWeights(dir, { quiet: true })).config.softmax_scale_mode, "plain");
    const deepseek = { ...presetConfig("tiny"), softmax_scale_mode: "deepseek_yarn" as const };
    await Deno.writeTextFile(join(dir, "params.json"), JSON.stringify(mistralParamsJson(deepseek)));
    const loaded = await loadCanonicalWeights(dir, { quiet: true });
    assertEquals([loaded.layout, loaded.config.softmax_scale_mode], ["hf", "deepseek_yarn"]);
  });
});

Deno.test("weightToF32: bf16, f32 and FP8 with per-block scales", () => {
  const bf: CanonicalWeight = { name: "a", shape: [2], dtype: "bf16", data: new Uint8Array([0x80, 0x3f, 0, 0xc0]) };
  assertEquals([...weightToF32(bf)], [1, -2]);
  const f = new Float32Array([0.5, 3]);
  assertEquals(weightToF32({ name: "b", shape: [2], dtype: "f32", data: new Uint8Array(f.buffer) }), f);
  // f8e4m3 0x38 = 1, 0x40 = 2; two blocks scaled 0.5 and 4.
  const fp8: CanonicalWeight = {
    name: "c",
    shape: [2, 2],
    dtype: "f8e4m3",
    data: new Uint8Array([0x38, 0x40, 0x38, 0x40]),
    scales: new Float32Array([0.5, 4]),
  };
  assertEquals([...weightToF32(fp8)], [0.5, 1, 4, 8]);
  // NVFP4: codes 1 (+0.5) low, 0xb (-1.5) high in byte 0; block scales already divided by the global scale.
  const nv: CanonicalWeight = {
    name: "d",
    shape: [2, 16],
    dtype: "nvfp4",
    data: new Uint8Array(16).fill(0xb1),
    scales: new Float32Array([0.25, 2]),
  };
  const v = weightToF32(nv);
  assertEquals([v[0], v[1], v[16], v[17]], [0.125, -0.375, 1, -3]);
  assertThrows(() => weightToF32({ ...nv, scales: undefined }), RangeError, "no block scales");
  assertThrows(() => weightToF32({ ...fp8, dtype: "i32" }), RangeError, "i32");
});

/** One tensor of a checkpoint file rewritten: new dtype, shape and bytes. */
function replaced(name: string, dtype: string, shape: number[], data: Uint8Array) {
  return (ts: TensorToWrite[]) => ts.map((t) => t.name === name ? { name, dtype, shape, data } as TensorToWrite : t);
}

Deno.test("load: NVFP4 W = e2m1 · weight_scale / weight_global_scale, even element in the low nibble", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "nvfp4" });
    // Shared down [64, 32]: hand-made row 0, the other rows zero.
    const m = "layers.0.shared_experts.w2";
    const packed = new Uint8Array(64 * 16), scale = new Uint8Array(64 * 2);
    packed.set([0x21, 0xf9], 0); // elements 0..3: codes 1 (+0.5), 2 (+1), 9 (-0.5), 0xf (-6)
    packed[8] = 0x07; // element 16 (block 1): code 7 (+6)
    scale.set([encodeF8e4m3(2), encodeF8e4m3(1)], 0);
    const global = new Uint8Array(new Float32Array([4]).buffer);
    await rewrite(dir, MISTRAL, (ts) =>
      replaced(`${m}.weight_global_scale`, "F32", [1], global)(
        replaced(`${m}.weight_scale`, "F8_E4M3", [64, 2], scale)(
          replaced(`${m}.weight_packed`, "U8", [64, 16], packed)(ts),
        ),
      ));
    const w = (await loadCanonicalWeights(dir, { quiet: true })).weights.get("layers.0.shared.down")!;
    assertEquals([w.dtype, w.shape, [...w.globalScales!], w.scales![0], w.scales![1]], [
      "nvfp4",
      [64, 32],
      [4],
      0.5,
      0.25,
    ]);
    const row = weightToF32(w).subarray(0, 32);
    // A multiplied global scale would give 4, 8, …; swapped nibbles 0.5, 0.25, ….
    assertEquals([...row.subarray(0, 4)], [0.25, 0.5, -0.25, -3]);
    assertEquals(row[16], 1.5);
    assertEquals(row.filter((x) => x !== 0).length, 5);
  });
});

Deno.test("load errors: NVFP4 scales of the wrong shape or dtype name the tensor and the file", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, layout: "mistral", dtype: "nvfp4" });
    const file = join(dir, MISTRAL), name = "layers.1.experts.2.w1.weight_scale";
    await rewrite(dir, MISTRAL, replaced(name, "F8_E4M3", [32, 3], new Uint8Array(96)));
    await expectError(dir, "shape", [`"${name}"`, file, "[32,3]", "[32,4]"]);
    await rewrite(dir, MISTRAL, replaced(name, "F32", [32, 4], new Uint8Array(512)));
    await expectError(dir, "dtype", [`"${name}"`, file, "f8e4m3"]);
  });
  await withDir(async (dir) => {
    // HF: the per-expert packed weight, and one index entry naming its shard.
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype: "nvfp4" });
    const name = "model.language_model.layers.0.mlp.experts.7.down_proj.weight_packed";
    const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    const shard = index.weight_map[name];
    await rewrite(dir, shard, replaced(name, "U8", [64, 32], new Uint8Array(64 * 32)));
    await expectError(dir, "shape", [`"${name}"`, join(dir, shard), "[64,32]", "[64,16]"]);
  });
});
