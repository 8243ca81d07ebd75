import { basename, join } from "node:path";
import { assert } from "../tests/assert.ts";
import { expectCheckpointError } from "../tests/checkpoint_helpers.ts";
import { openSafetensors, parseSafetensorsHeader, readSafetensorsHeader } from "./safetensors.ts";
import {
  safetensorsHeaderBytes,
  type TensorToWrite,
  writeSafetensors,
  writeShardedSafetensors,
} from "./safetensors_writer.ts";

function assertBytes(a: Uint8Array, b: Uint8Array, msg: string): void {
  assert(a.length === b.length, `${msg}: length ${a.length} ≠ ${b.length}`);
  for (let i = 0; i < a.length; i++) assert(a[i] === b[i], `${msg}: byte ${i} differs`);
}

function bytesOf(n: number, seed: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 31 + seed * 7) & 0xff);
}

function sample(): TensorToWrite[] {
  return [
    { name: "emb.weight", dtype: "bf16", shape: [4, 3], data: bytesOf(24, 1) },
    { name: "norm.weight", dtype: "f32", shape: [3], data: bytesOf(12, 2) },
    { name: "w.weight", dtype: "f8e4m3", shape: [2, 5], data: () => bytesOf(10, 3) }, // lazy
    { name: "w.weight_scale_inv", dtype: "F32", shape: [], data: bytesOf(4, 4) },
    { name: "ids", dtype: "I64", shape: [2], data: bytesOf(16, 5) },
    { name: "packed", dtype: "u8", shape: [2, 8], data: bytesOf(16, 6) },
    { name: "half", dtype: "f16", shape: [3, 1], data: bytesOf(6, 7) },
    { name: "empty", dtype: "i32", shape: [0, 4], data: new Uint8Array() },
  ];
}

async function dataOf(t: TensorToWrite): Promise<Uint8Array> {
  return typeof t.data === "function" ? await t.data() : t.data;
}

/** Writes a file from a raw header object and data, for corrupt cases the writer would refuse to make. */
async function rawFile(path: string, header: unknown, data: Uint8Array, headerLen?: bigint): Promise<void> {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  await Deno.writeFile(path, out);
}

Deno.test("header: hand-made buffer per the safetensors spec (as the Python library writes it)", () => {
  // {"__metadata__":{"format":"pt"},"a":…F32 [2]…,"b":…BF16 [1,3]…} padded with spaces to a multiple of 8.
  const json = '{"__metadata__":{"format":"pt"},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
    '"b":{"dtype":"BF16","shape":[1,3],"data_offsets":[8,14]}}';
  const padded = json + " ".repeat((8 - json.length % 8) % 8);
  const data = new Uint8Array(14).map((_, i) => i);
  const buf = new Uint8Array(8 + padded.length + data.length);
  const n = padded.length;
  for (let i = 0; i < 8; i++) buf[i] = Math.floor(n / 256 ** i) & 0xff; // u64 little-endian
  buf.set(new TextEncoder().encode(padded), 8);
  buf.set(data, 8 + n);

  const h = parseSafetensorsHeader(buf, "hand.safetensors");
  assert(h.headerLength === n && h.dataStart === 8 + n, "header length");
  assert(h.metadata.format === "pt", "metadata");
  assert(h.tensors.length === 2, "two tensors");
  const [a, b] = h.tensors;
  assert(a.name === "a" && a.storage === "F32" && a.dtype === "f32" && a.shape.join() === "2", "tensor a");
  assert(a.byteOffset === 8 + n && a.byteLength === 8, "a offsets");
  assert(b.name === "b" && b.storage === "BF16" && b.dtype === "bf16" && b.shape.join() === "1,3", "tensor b");
  assert(b.byteOffset === 8 + n + 8 && b.byteLength === 6, "b offsets");

  // Our writer lays out the same input byte for byte.
  const ours = safetensorsHeaderBytes([
    { name: "a", dtype: "f32", shape: [2] },
    { name: "b", dtype: "bf16", shape: [1, 3] },
  ], { format: "pt" });
  assertBytes(ours, buf.subarray(0, 8 + n), "writer header");
});

Deno.test("single file: write → read back identical, lazy data, metadata, ranges", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "model.safetensors");
    const tensors = sample();
    await writeSafetensors(path, tensors, { format: "pt" });
    const h = await readSafetensorsHeader(path);
    assert(h.headerLength % 8 === 0, "header padded to 8");
    for (const t of h.tensors) {
      const size = { F32: 4, I64: 8, I32: 4, BF16: 2, F16: 2 }[t.storage as string] ?? 1;
      assert((t.byteOffset - h.dataStart) % size === 0, `${t.name} aligned`);
    }
    const r = await openSafetensors(path);
    assert(r.metadata.format === "pt", "metadata");
    assert(r.tensors.length === tensors.length, "count");
    for (const t of tensors) {
      const info = r.info(t.name);
      assert(info.shape.join() === t.shape.join(), `${t.name} shape`);
      assertBytes(await r.read(t.name), await dataOf(t), t.name);
    }
    assert(r.info("ids").dtype === undefined && r.info("ids").storage === "I64", "I64 has no DType");
    assert(r.info("w.weight").dtype === "f8e4m3", "f8 maps");
    assertBytes(await r.readRange("emb.weight", 6, 12), bytesOf(24, 1).subarray(6, 12), "range");
    assert(r.totalBytes === 24 + 12 + 10 + 4 + 16 + 16 + 6, "total bytes");
    await expectCheckpointError(() => r.info("nope"), "missing_tensor", ['"nope"', path]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sharded: HF names and index, read back identical", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tensors = sample();
    const res = await writeShardedSafetensors(dir, tensors, { maxShardBytes: 40, metadata: { format: "pt" } });
    const n = res.files.length;
    assert(n >= 3, `expected ≥ 3 shards, got ${n}`);
    res.files.forEach((f, i) => {
      const want = `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
      assert(basename(f) === want, `shard name ${basename(f)}`);
    });
    const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    assert(index.metadata.total_size === res.totalSize, "total_size");
    assert(Object.keys(index.weight_map).length === tensors.length, "weight_map size");
    const r = await openSafetensors(res.index);
    for (const t of tensors) assertBytes(await r.read(t.name), await dataOf(t), t.name);
    // The same shards open without the index too.
    const r2 = await openSafetensors(res.files);
    assert(r2.tensors.length === tensors.length, "no-index open");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("corrupt files: each error names the file (and tensor)", async (t) => {
  const dir = await Deno.makeTempDir();
  const good = join(dir, "good.safetensors");
  await writeSafetensors(good, sample());
  const bytes = await Deno.readFile(good);
  const f = (name: string) => join(dir, name);

  await t.step("truncated data", async () => {
    await Deno.writeFile(f("trunc.safetensors"), bytes.subarray(0, bytes.length - 3));
    const e = await expectCheckpointError(() => openSafetensors(f("trunc.safetensors")), "truncated", [
      "trunc.safetensors",
    ]);
    assert(e.tensor && e.message.includes(`"${e.tensor}"`), "names the tensor");
  });
  await t.step("truncated inside the header", async () => {
    await Deno.writeFile(f("short.safetensors"), bytes.subarray(0, 20));
    await expectCheckpointError(() => openSafetensors(f("short.safetensors")), "truncated", ["short.safetensors"]);
    await Deno.writeFile(f("tiny.safetensors"), bytes.subarray(0, 5));
    await expectCheckpointError(() => openSafetensors(f("tiny.safetensors")), "truncated", ["tiny.safetensors"]);
  });
  await t.step("bad header length", async () => {
    await rawFile(f("len.safetensors"), {}, new Uint8Array(0), 1n << 40n);
    await expectCheckpointError(() => openSafetensors(f("len.safetensors")), "bad_header", [
      "len.safetensors",
      "header length",
    ]);
  });
  await t.step("header not JSON", async () => {
    const b = bytes.slice();
    b[8] = 0x21; // '!' where '{' was
    await Deno.writeFile(f("json.safetensors"), b);
    await expectCheckpointError(() => openSafetensors(f("json.safetensors")), "bad_header", [
      "json.safetensors",
      "JSON",
    ]);
  });
  await t.step("offsets out of range", async () => {
    const header = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [1], data_offsets: [100, 104] },
    };
    await rawFile(f("range.safetensors"), header, new Uint8Array(12));
    await expectCheckpointError(() => openSafetensors(f("range.safetensors")), "bad_offsets", [
      '"b"',
      "range.safetensors",
    ]);
  });
  await t.step("overlapping", async () => {
    const header = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    };
    await rawFile(f("overlap.safetensors"), header, new Uint8Array(12));
    await expectCheckpointError(() => openSafetensors(f("overlap.safetensors")), "bad_offsets", [
      '"b"',
      '"a"',
      "overlap.safetensors",
    ]);
  });
  await t.step("byte length ≠ shape × dtype", async () => {
    const header = { a: { dtype: "BF16", shape: [3], data_offsets: [0, 8] } };
    await rawFile(f("size.safetensors"), header, new Uint8Array(8));
    await expectCheckpointError(() => openSafetensors(f("size.safetensors")), "bad_offsets", [
      '"a"',
      "size.safetensors",
    ]);
  });
  await t.step("unknown dtype and bad shape", async () => {
    await rawFile(f("dt.safetensors"), { a: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
    await expectCheckpointError(() => openSafetensors(f("dt.safetensors")), "bad_header", [
      '"a"',
      "dt.safetensors",
      "Q4",
    ]);
    await rawFile(f("sh.safetensors"), { a: { dtype: "U8", shape: [-1], data_offsets: [0, 1] } }, new Uint8Array(1));
    await expectCheckpointError(() => openSafetensors(f("sh.safetensors")), "bad_header", ['"a"', "sh.safetensors"]);
  });
  await t.step("missing file", async () => {
    await expectCheckpointError(() => openSafetensors(f("absent.safetensors")), "not_found", ["absent.safetensors"]);
  });
  await t.step("same tensor in two shards", async () => {
    await expectCheckpointError(() => openSafetensors([good, good]), "duplicate_tensor", [
      "emb.weight",
      "good.safetensors",
    ]);
  });
  await t.step("file shrinks after open", async () => {
    await Deno.writeFile(f("shrink.safetensors"), bytes);
    const r = await openSafetensors(f("shrink.safetensors"));
    const last = r.tensors.at(-1)!;
    await Deno.truncate(f("shrink.safetensors"), last.byteOffset + 1);
    await expectCheckpointError(() => r.read(last.name), "truncated", [last.name, "shrink.safetensors"]);
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("index disagreeing with its shards", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const res = await writeShardedSafetensors(dir, sample(), { maxShardBytes: 1 << 20 });
    const index = JSON.parse(await Deno.readTextFile(res.index));
    const shard = basename(res.files[0]);
    index.weight_map["ghost.weight"] = shard;
    delete index.weight_map["norm.weight"];
    await Deno.writeTextFile(res.index, JSON.stringify(index));
    const e = await expectCheckpointError(() => openSafetensors(res.index), "missing_tensor", ["ghost.weight", shard]);
    assert(e.problems.length === 2, `two problems, got ${e.problems.length}`);
    assert(e.message.includes("norm.weight") && e.problems[1].kind === "extra_tensor", "lists the unlisted tensor");
    await Deno.writeTextFile(res.index, "{ not json");
    await expectCheckpointError(() => openSafetensors(res.index), "bad_config", ["model.safetensors.index.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer refuses bad input, naming the tensor and file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "w.safetensors");
    await expectCheckpointError(
      () => writeSafetensors(path, [{ name: "x", dtype: "f32", shape: [2], data: new Uint8Array(4) }]),
      "write",
      ['"x"', "w.safetensors", "needs 8"],
    );
    await expectCheckpointError(
      () => writeSafetensors(path, [{ name: "q", dtype: "nvfp4", shape: [2], data: new Uint8Array(1) }]),
      "write",
      ['"q"', "w.safetensors"],
    );
    // A failed write leaves neither the target nor the partial file behind.
    for await (const e of Deno.readDir(dir)) throw new Error(`left behind: ${e.name}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
