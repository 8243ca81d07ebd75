/**
 * Safetensors writers: one file, or HF-style shards with `model.safetensors.index.json`. The header is computed
 * from names, dtypes and shapes first, then tensors are written one by one; a tensor's data may be a function, so a
 * converter can produce each tensor only when it is written and memory stays at one tensor.
 *
 * The output matches the Python library byte for byte in layout: header JSON padded with spaces to a multiple of 8,
 * `__metadata__` first, tensors ordered by element size (largest first) so each one is aligned to its element size.
 *
 * @module
 */

import { join } from "node:path";
import type { DType } from "../graph/dtype.ts";
import { CheckpointError } from "./errors.ts";
import {
  isSafetensorsDType,
  SAFETENSORS_DTYPE_BYTES,
  type SafetensorsDType,
  toSafetensorsDType,
} from "./safetensors.ts";

/** One tensor to write. */
export interface TensorToWrite {
  /** Name in the file. */
  name: string;
  /** Our dtype (block formats excluded) or a safetensors dtype string. */
  dtype: DType | SafetensorsDType;
  /** Row-major shape. */
  shape: readonly number[];
  /** Little-endian bytes, or a function producing them when the tensor is written. */
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

interface Planned {
  t: TensorToWrite;
  storage: SafetensorsDType;
  byteLength: number;
}

function writeError(file: string, message: string, tensor?: string): CheckpointError {
  return new CheckpointError({ kind: "write", file, tensor, message });
}

function plan(tensors: readonly TensorToWrite[], file: string): Planned[] {
  const seen = new Set<string>();
  const out: Planned[] = [];
  for (const t of tensors) {
    if (t.name === "__metadata__" || seen.has(t.name)) {
      throw writeError(file, `tensor "${t.name}" for ${file}: name is reserved or repeated`, t.name);
    }
    seen.add(t.name);
    let storage: SafetensorsDType;
    try {
      storage = isSafetensorsDType(t.dtype) ? t.dtype : toSafetensorsDType(t.dtype);
    } catch (e) {
      throw writeError(file, `tensor "${t.name}" for ${file}: ${(e as Error).message}`, t.name);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw writeError(file, `tensor "${t.name}" for ${file}: bad shape [${t.shape}]`, t.name);
    }
    const byteLength = t.shape.reduce((a, b) => a * b, 1) * SAFETENSORS_DTYPE_BYTES[storage];
    out.push({ t, storage, byteLength });
  }
  // Largest elements first (stable): with the data section 8-aligned, every tensor starts aligned to its element.
  return out.sort((a, b) => SAFETENSORS_DTYPE_BYTES[b.storage] - SAFETENSORS_DTYPE_BYTES[a.storage]);
}

/** Header bytes (length prefix + padded JSON) for planned tensors, in their planned order. */
function headerBytes(planned: readonly Planned[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const p of planned) {
    header[p.t.name] = { dtype: p.storage, shape: p.t.shape, data_offsets: [offset, offset + p.byteLength] };
    offset += p.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/**
 * The header a file holding `tensors` would start with (8-byte length + space-padded JSON), in write order.
 * For tests and tools that lay out files themselves.
 */
export function safetensorsHeaderBytes(
  tensors: readonly Omit<TensorToWrite, "data">[],
  metadata?: Record<string, string>,
): Uint8Array {
  return headerBytes(plan(tensors.map((t) => ({ ...t, data: new Uint8Array() })), "<header>"), metadata);
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await f.write(bytes.subarray(done));
}

async function writePlanned(path: string, planned: readonly Planned[], metadata?: Record<string, string>) {
  // Write beside the target and rename, so a crash never leaves a half file under the real name.
  const tmp = `${path}.partial`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await writeAll(f, headerBytes(planned, metadata));
    for (const p of planned) {
      const data = typeof p.t.data === "function" ? await p.t.data() : p.t.data;
      if (data.byteLength !== p.byteLength) {
        throw writeError(
          path,
          `tensor "${p.t.name}" for ${path}: ${data.byteLength} bytes given, ${p.storage}[${p.t.shape}] needs ` +
            `${p.byteLength}`,
          p.t.name,
        );
      }
      await writeAll(f, data);
    }
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  await Deno.rename(tmp, path);
}

/**
 * Writes one safetensors file, streaming tensor by tensor.
 *
 * @example
 * ```ts
 * await writeSafetensors("/tmp/a.safetensors", [
 *   { name: "w", dtype: "f32", shape: [2], data: new Uint8Array(new Float32Array([1, 2]).buffer) },
 * ], { format: "pt" });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  await writePlanned(path, plan(tensors, path), metadata);
}

/** Options of {@link writeShardedSafetensors}. */
export interface ShardedWriteOptions {
  /** Largest shard data size in bytes; a tensor bigger than this gets a shard of its own. */
  maxShardBytes: number;
  /** `__metadata__` of every shard. */
  metadata?: Record<string, string>;
  /** File name prefix: `model` gives `model-00001-of-00003.safetensors` and `model.safetensors.index.json`. */
  prefix?: string;
}

/** What {@link writeShardedSafetensors} wrote. */
export interface ShardedWriteResult {
  /** Shard paths in order. */
  files: string[];
  /** Path of the index JSON. */
  index: string;
  /** Sum of tensor bytes (the index's `metadata.total_size`). */
  totalSize: number;
}

/**
 * Writes HF-style shards `<prefix>-0000i-of-0000n.safetensors` plus `<prefix>.safetensors.index.json`, filling
 * shards in the given tensor order. Always writes an index, even for one shard.
 *
 * @example
 * ```ts
 * await writeShardedSafetensors(dir, tensors, { maxShardBytes: 5e9 });
 * ```
 */
export async function writeShardedSafetensors(
  dir: string,
  tensors: readonly TensorToWrite[],
  options: ShardedWriteOptions,
): Promise<ShardedWriteResult> {
  const prefix = options.prefix ?? "model";
  const index = join(dir, `${prefix}.safetensors.index.json`);
  plan(tensors, index); // validate names, dtypes and shapes before writing anything
  const groups: TensorToWrite[][] = [];
  let size = 0;
  for (const t of tensors) {
    const bytes = plan([t], index)[0].byteLength;
    if (groups.length === 0 || (size + bytes > options.maxShardBytes && size > 0)) {
      groups.push([]);
      size = 0;
    }
    groups.at(-1)!.push(t);
    size += bytes;
  }
  if (groups.length === 0) groups.push([]);
  const n = groups.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  let totalSize = 0;
  for (let i = 0; i < n; i++) {
    const name = `${prefix}-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    const planned = plan(groups[i], join(dir, name));
    await writePlanned(join(dir, name), planned, options.metadata);
    for (const p of planned) {
      weightMap[p.t.name] = name;
      totalSize += p.byteLength;
    }
    files.push(join(dir, name));
  }
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  await Deno.writeTextFile(index, JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sorted }, null, 2));
  return { files, index, totalSize };
}
