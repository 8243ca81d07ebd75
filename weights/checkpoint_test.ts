import { join } from "node:path";
import { checkTensors, loadTensors, openCheckpoint, type TensorSpec } from "./checkpoint.ts";
import { assert } from "../tests/assert.ts";
import { expectCheckpointError } from "../tests/checkpoint_helpers.ts";
import { CheckpointError } from "./errors.ts";
import { LoadProgress } from "./progress.ts";
import { openSafetensors } from "./safetensors.ts";
import { type TensorToWrite, writeSafetensors, writeShardedSafetensors } from "./safetensors_writer.ts";

function bytesOf(n: number, seed: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 13 + seed * 5) & 0xff);
}

/** A tiny model: an embedding, a norm, an FP8 linear with its scalar scale, an activation scale. */
function tensors(prefix = "model."): TensorToWrite[] {
  return [
    { name: `${prefix}embed_tokens.weight`, dtype: "bf16", shape: [8, 4], data: bytesOf(64, 1) },
    { name: `${prefix}norm.weight`, dtype: "bf16", shape: [4], data: bytesOf(8, 2) },
    { name: `${prefix}layers.0.o_proj.weight`, dtype: "f8e4m3", shape: [4, 4], data: bytesOf(16, 3) },
    { name: `${prefix}layers.0.o_proj.weight_scale_inv`, dtype: "f32", shape: [1], data: bytesOf(4, 4) },
    { name: `${prefix}layers.0.o_proj.activation_scale`, dtype: "f32", shape: [], data: bytesOf(4, 5) },
  ];
}

const SPECS: TensorSpec[] = [
  { name: "model.embed_tokens.weight", shape: [8, 4], dtype: "bf16" },
  { name: "model.norm.weight", shape: [4], dtype: "bf16" },
  { name: "model.layers.0.o_proj.weight", shape: [4, 4], dtype: "f8e4m3" },
  { name: "model.layers.0.o_proj.weight_scale_inv", shape: [], dtype: ["f32", "bf16"] },
  { name: "model.layers.0.o_proj.bias", shape: [4], optional: true },
];

const ignoreAct = (n: string) => n.endsWith("activation_scale");

async function withDir(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("openCheckpoint: HF sharded with index", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ model_type: "mistral4" }));
    await writeShardedSafetensors(dir, tensors(), { maxShardBytes: 64 });
    const c = await openCheckpoint(dir);
    assert(c.layout === "hf" && c.config.model_type === "mistral4", "layout and config");
    assert(c.reader.source.endsWith("model.safetensors.index.json"), "opened through the index");
    assert(c.reader.headers.length >= 2, "several shards");
    assert(c.mistralParams === undefined, "no params.json");
  }));

Deno.test("openCheckpoint: HF single file, Mistral consolidated, both, forced layout", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ model_type: "mistral4" }));
    await writeSafetensors(join(dir, "model.safetensors"), tensors());
    await Deno.writeTextFile(join(dir, "params.json"), JSON.stringify({ dim: 4, yarn: { apply_scale: false } }));
    await writeSafetensors(join(dir, "consolidated.safetensors"), tensors(""));
    const both = await openCheckpoint(dir);
    assert(both.layout === "hf" && both.reader.source.endsWith("model.safetensors"), "hf preferred");
    assert((both.mistralParams?.yarn as { apply_scale: boolean }).apply_scale === false, "params kept");
    const m = await openCheckpoint(dir, { layout: "mistral" });
    assert(m.layout === "mistral" && m.config.dim === 4, "mistral forced");
    assert(m.reader.has("norm.weight") && m.configFile.endsWith("params.json"), "mistral tensors");
    await Deno.remove(join(dir, "config.json"));
    assert((await openCheckpoint(dir)).layout === "mistral", "mistral alone");
    await expectCheckpointError(() => openCheckpoint(dir, { layout: "hf" }), "not_found", [dir, "Hugging Face"]);
  }));

Deno.test("openCheckpoint: nothing to load, bad config", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "pytorch_model.bin"), "x");
    await expectCheckpointError(() => openCheckpoint(dir), "not_found", [dir, "pytorch_model.bin"]);
    await expectCheckpointError(() => openCheckpoint(join(dir, "nope")), "not_found", ["nope"]);
    await Deno.writeTextFile(join(dir, "config.json"), "{ oops");
    await writeSafetensors(join(dir, "model.safetensors"), tensors());
    await expectCheckpointError(() => openCheckpoint(dir), "bad_config", ["config.json"]);
  }));

Deno.test("loadTensors: streams every expected tensor once, identical, in file order", () =>
  withDir(async (dir) => {
    await writeShardedSafetensors(dir, tensors(), { maxShardBytes: 64 });
    const r = await openSafetensors(join(dir, "model.safetensors.index.json"));
    const want = new Map(tensors().map((t) => [t.name, t.data as Uint8Array]));
    const seen: string[] = [];
    const stats = await loadTensors(r, SPECS, ({ spec, info, data }) => {
      assert(spec.name === info.name, "spec matches info");
      const w = want.get(info.name)!;
      assert(data.length === w.length && data.every((b, i) => b === w[i]), `${info.name} bytes`);
      seen.push(info.name);
    }, { ignore: ignoreAct, quiet: true });
    assert(stats.tensors === 4 && seen.length === 4, `delivered ${seen}`);
    assert(stats.bytes === 64 + 8 + 16 + 4, "bytes");
    const order = r.tensors.map((t) => t.name).filter((n) => seen.includes(n));
    assert(order.join() === seen.join(), "file order");
    const bySpec: string[] = [];
    await loadTensors(r, SPECS, ({ spec }) => void bySpec.push(spec.name), {
      ignore: ignoreAct,
      quiet: true,
      order: "spec",
      prefetch: false,
    });
    assert(bySpec.join() === SPECS.slice(0, 4).map((s) => s.name).join(), "spec order");
  }));

Deno.test("checkTensors: missing, extra, wrong shape, wrong dtype each name tensor and file", () =>
  withDir(async (dir) => {
    const path = join(dir, "model.safetensors");
    await writeSafetensors(path, tensors());
    const r = await openSafetensors(path);
    const file = "model.safetensors";
    const base = SPECS.filter((s) => !s.name.endsWith("norm.weight"));
    const norm = "model.norm.weight";

    // extra: the norm is in the file but no spec asks for it
    await expectCheckpointError(() => checkTensors(r, base, { ignore: ignoreAct }), "extra_tensor", [norm, file]);
    // …unless extras are allowed
    checkTensors(r, base, { ignore: ignoreAct, allowExtra: true });
    // missing
    const ghost = { name: "model.ghost.weight", shape: [4], dtype: "bf16" as const };
    await expectCheckpointError(() => checkTensors(r, [...SPECS, ghost], { ignore: ignoreAct }), "missing_tensor", [
      "model.ghost.weight",
      file,
    ]);
    // wrong shape
    const shape = SPECS.map((s) => s.name === norm ? { ...s, shape: [5] } : s);
    await expectCheckpointError(() => checkTensors(r, shape, { ignore: ignoreAct }), "shape", [
      norm,
      file,
      "[4]",
      "[5]",
    ]);
    // wrong dtype
    const dtype = SPECS.map((s) => s.name === norm ? { ...s, dtype: "f32" as const } : s);
    await expectCheckpointError(() => checkTensors(r, dtype, { ignore: ignoreAct }), "dtype", [
      norm,
      file,
      "BF16",
      "f32",
    ]);
    // activation scale not ignored → extra
    await expectCheckpointError(() => checkTensors(r, SPECS), "extra_tensor", ["activation_scale", file]);
    // several problems at once are all reported
    const e = await expectCheckpointError(() => checkTensors(r, [...shape.slice(1), ghost]), "extra_tensor", [file]);
    assert(e.problems.length === 4, `4 problems, got ${e.problems.map((p) => p.kind)}`);
    assert(e.message.includes("4 problems") && e.message.includes("model.ghost.weight"), e.message);
  }));

Deno.test("checkTensors: name normalisation, [] scales, duplicates after normalising", () =>
  withDir(async (dir) => {
    const path = join(dir, "model.safetensors");
    await writeSafetensors(path, tensors("language_model.model."));
    const r = await openSafetensors(path);
    const normalizeName = (n: string) => n.replace(/^language_model\.model\./, "model.");
    const m = checkTensors(r, SPECS, { normalizeName, ignore: ignoreAct });
    assert(m.length === 4 && m.some((x) => x.info.name.startsWith("language_model.")), "normalised");
    // Two stored names that normalise to one spec name are reported, not silently merged.
    let dup: unknown;
    try {
      checkTensors(r, [{ name: "same", shape: [8, 4] }], { normalizeName: () => "same", ignore: ignoreAct });
    } catch (e) {
      dup = e;
    }
    assert(dup instanceof CheckpointError, "duplicate reported");
    assert(dup.problems.some((p) => p.kind === "duplicate_tensor"), "has a duplicate problem");
  }));

Deno.test("loadTensors: a callback error propagates while a prefetch is in flight", () =>
  withDir(async (dir) => {
    const path = join(dir, "model.safetensors");
    await writeSafetensors(path, tensors());
    const r = await openSafetensors(path);
    let thrown = false;
    try {
      await loadTensors(r, SPECS, () => {
        throw new Error("boom");
      }, { ignore: ignoreAct, quiet: true });
    } catch (e) {
      thrown = (e as Error).message === "boom";
    }
    assert(thrown, "callback error surfaces");
  }));

Deno.test("loadTensors: a shard truncated after open fails naming tensor and file", () =>
  withDir(async (dir) => {
    const path = join(dir, "model.safetensors");
    await writeSafetensors(path, tensors());
    const r = await openSafetensors(path);
    const last = r.tensors.at(-1)!;
    await Deno.truncate(path, last.byteOffset);
    await expectCheckpointError(
      () => loadTensors(r, SPECS, () => {}, { ignore: ignoreAct, quiet: true }),
      "truncated",
      ["model.safetensors"],
    );
  }));

Deno.test("LoadProgress: draws to a terminal, silent when quiet or not a terminal", () => {
  let clock = 0;
  const out: string[] = [];
  const p = new LoadProgress({
    totalBytes: 4e9,
    totalTensors: 4,
    write: (s) => out.push(s),
    now: () => clock,
    intervalMs: 100,
  });
  clock = 1000;
  p.add(1e9);
  clock = 1050;
  p.add(1e9); // within the interval: no redraw
  clock = 2000;
  p.add(2e9);
  p.done();
  assert(out.length === 3, `3 writes, got ${out.length}`);
  assert(out[0].includes("1.00/4.00 GB (25%) 1/4 tensors 1000 MB/s"), out[0]);
  assert(out[1].includes("4.00/4.00 GB (100%) 3/4 tensors 2000 MB/s"), out[1]);
  assert(out[2].endsWith(" in 2.0 s\n"), out[2]);
  const silent: string[] = [];
  const q = new LoadProgress({ totalBytes: 1, totalTensors: 1, quiet: true, write: (s) => silent.push(s) });
  q.add(1);
  q.done();
  const n = new LoadProgress({ totalBytes: 1, totalTensors: 1, isTerminal: false, write: (s) => silent.push(s) });
  n.add(1);
  n.done();
  assert(silent.length === 0 && !q.enabled && !n.enabled, "silent");
});
