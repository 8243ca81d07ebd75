/**
 * Safetensors reader for single files and sharded checkpoints. Opening parses headers only; tensors are read one at
 * a time (open, seek, read into a fresh buffer), so a 119B checkpoint never has to fit in memory.
 *
 * File format: 8-byte little-endian header length N, N bytes of UTF-8 JSON (`{"__metadata__": {…},
 * "name": {"dtype", "shape", "data_offsets": [begin, end]}}`, offsets relative to the data section that starts at
 * 8 + N), then the data.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import type { DType } from "../graph/dtype.ts";
import { isNotFound, openRandomAccess, type RandomAccessFile, readTextFile } from "../graph/files.ts";
import { CheckpointError, type CheckpointProblem } from "./errors.ts";

/** Element type names used in safetensors headers. */
export type SafetensorsDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/** Bytes per element of every safetensors dtype this reader accepts. */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

const TO_DTYPE: Partial<Record<SafetensorsDType, DType>> = {
  F32: "f32",
  BF16: "bf16",
  F16: "f16",
  F8_E4M3: "f8e4m3",
  U8: "u8",
  I32: "i32",
};

/** Our dtype for a safetensors dtype, or undefined where we have none (I8, I64, F64, …: still readable as bytes). */
export function toDType(dtype: SafetensorsDType): DType | undefined {
  return TO_DTYPE[dtype];
}

/**
 * The safetensors dtype that stores one of ours. Block formats (nvfp4, q8) have none: they are stored as several
 * plain tensors (codes + scales).
 */
export function toSafetensorsDType(dtype: DType): SafetensorsDType {
  for (const [st, d] of Object.entries(TO_DTYPE)) if (d === dtype) return st as SafetensorsDType;
  throw new RangeError(`${dtype} has no single safetensors dtype; store its codes and scales as separate tensors`);
}

/** True when `name` is a safetensors dtype string. */
export function isSafetensorsDType(name: string): name is SafetensorsDType {
  return Object.hasOwn(SAFETENSORS_DTYPE_BYTES, name);
}

/** Where one tensor lives. */
export interface TensorInfo {
  /** Name as stored in the checkpoint. */
  name: string;
  /** Our dtype, when the stored dtype maps to one. */
  dtype?: DType;
  /** The dtype string in the header. */
  storage: SafetensorsDType;
  /** Row-major shape. */
  shape: readonly number[];
  /** Path of the file holding it. */
  file: string;
  /** Absolute byte offset in the file. */
  byteOffset: number;
  /** Byte length (= prod(shape) · element size). */
  byteLength: number;
}

/** A parsed, validated header of one safetensors file. */
export interface SafetensorsHeader {
  /** Path of the file. */
  file: string;
  /** File size in bytes. */
  fileSize: number;
  /** N, the JSON header length. */
  headerLength: number;
  /** 8 + N: where tensor data starts. */
  dataStart: number;
  /** `__metadata__` (string → string), empty when absent. */
  metadata: Record<string, string>;
  /** Tensors in data-offset order. */
  tensors: TensorInfo[];
}

/** The Python library refuses headers over 100 MB; so do we, to catch files that are not safetensors at all. */
export const MAX_HEADER_LENGTH = 100_000_000;

function fail(kind: CheckpointProblem["kind"], file: string, message: string, tensor?: string): never {
  throw new CheckpointError({ kind, file, tensor, message });
}

/** Reads and checks the 8-byte header length against the file size. */
function headerLength(first8: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) {
    fail("truncated", file, `${file}: file is truncated (${fileSize} bytes, not even a header length); re-download it`);
  }
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n < 2n || n > BigInt(MAX_HEADER_LENGTH)) {
    fail("bad_header", file, `${file}: bad header length ${n} (not a safetensors file, or corrupt)`);
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    fail("truncated", file, `${file}: file is truncated: header needs ${8 + len} bytes, file has ${fileSize}`);
  }
  return len;
}

function isShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/** Parses and validates the JSON header (bytes 8 .. 8+N) of a file of `fileSize` bytes. */
function parseHeaderJson(json: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const headerLength = json.byteLength;
  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
  } catch (e) {
    fail("bad_header", file, `${file}: header is not valid JSON (${(e as Error).message}); the file is corrupt`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    fail("bad_header", file, `${file}: header is not a JSON object`);
  }
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(raw as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
        fail("bad_header", file, `${file}: __metadata__ is not an object`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") fail("bad_header", file, `${file}: __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    const where = `tensor "${name}" in ${file}`;
    if (e === null || typeof e !== "object") fail("bad_header", file, `${where}: header entry is not an object`, name);
    if (typeof e.dtype !== "string" || !isSafetensorsDType(e.dtype)) {
      fail("bad_header", file, `${where}: unsupported dtype ${JSON.stringify(e.dtype)}`, name);
    }
    if (!isShape(e.shape)) fail("bad_header", file, `${where}: bad shape ${JSON.stringify(e.shape)}`, name);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isShape(off) || off[0] > off[1]) {
      fail("bad_offsets", file, `${where}: bad data_offsets ${JSON.stringify(off)}`, name);
    }
    const [begin, end] = off as number[];
    const want = e.shape.reduce((a, b) => a * b, 1) * SAFETENSORS_DTYPE_BYTES[e.dtype];
    if (end - begin !== want) {
      fail(
        "bad_offsets",
        file,
        `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${e.dtype}[${e.shape}] needs ${want}`,
        name,
      );
    }
    tensors.push({
      name,
      dtype: toDType(e.dtype),
      storage: e.dtype,
      shape: e.shape,
      file,
      byteOffset: dataStart + begin,
      byteLength: want,
    });
  }
  tensors.sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  checkLayout(tensors, dataStart, dataSize, file);
  return { file, fileSize, headerLength, dataStart, metadata, tensors };
}

/** Offsets inside the data section and non-overlapping; tells a truncated download from corrupt offsets. */
function checkLayout(tensors: TensorInfo[], dataStart: number, dataSize: number, file: string): void {
  let prev: TensorInfo | undefined;
  // Contiguous from 0 means the header is well formed, so data past the end of the file is a short download.
  let contiguous = true;
  for (const t of tensors) {
    if (t.byteLength === 0) continue;
    const begin = t.byteOffset - dataStart;
    if (prev && t.byteOffset < prev.byteOffset + prev.byteLength) {
      fail("bad_offsets", file, `tensor "${t.name}" in ${file}: data overlaps tensor "${prev.name}"`, t.name);
    }
    if (begin !== (prev ? prev.byteOffset + prev.byteLength - dataStart : 0)) contiguous = false;
    if (begin + t.byteLength > dataSize) {
      const range = `[${begin}, ${begin + t.byteLength}]`;
      if (contiguous) {
        fail(
          "truncated",
          file,
          `tensor "${t.name}" in ${file}: file is truncated (data ends at ${range}, the file holds ${dataSize} data ` +
            `bytes); re-download it`,
          t.name,
        );
      }
      fail(
        "bad_offsets",
        file,
        `tensor "${t.name}" in ${file}: data_offsets ${range} lie outside the data ` +
          `section (${dataSize} bytes)`,
        t.name,
      );
    }
    prev = t;
  }
}

/**
 * Parses a complete in-memory safetensors buffer's header (for tests and tools; files use
 * {@link readSafetensorsHeader}, which reads only the header).
 *
 * @example
 * ```ts
 * const h = parseSafetensorsHeader(bytes, "mem.safetensors");
 * h.tensors[0].shape; // [2, 2]
 * ```
 */
export function parseSafetensorsHeader(bytes: Uint8Array, file = "<memory>"): SafetensorsHeader {
  const n = headerLength(bytes.subarray(0, 8), bytes.byteLength, file);
  return parseHeaderJson(bytes.subarray(8, 8 + n), bytes.byteLength, file);
}

/** Reads exactly `dst.length` bytes at `offset` of an open file, or fails as a truncated file. */
async function readAt(f: RandomAccessFile, offset: number, dst: Uint8Array, file: string, tensor?: string) {
  let done = 0;
  while (done < dst.length) {
    const n = await notFoundAs(file, f.read(offset + done, dst.subarray(done)));
    if (n === null) {
      const what = tensor ? `tensor "${tensor}" in ${file}` : file;
      fail("truncated", file, `${what}: file is truncated (ended at byte ${offset + done}); re-download it`, tensor);
    }
    done += n;
  }
}

/** `step`, a missing file failing as `not_found` (over HTTP a file is found missing at its first read). */
async function notFoundAs<T>(path: string, step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (e) {
    if (isNotFound(e)) fail("not_found", path, `${path}: file not found`);
    throw e;
  }
}

/** A file on disk, or (in a browser) a URL read by range requests. */
async function openFile(path: string): Promise<RandomAccessFile> {
  try {
    return await openRandomAccess(path);
  } catch (e) {
    if (isNotFound(e)) fail("not_found", path, `${path}: file not found`);
    throw e;
  }
}

/** Reads and validates the header of one safetensors file without reading its data. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  using f = await openFile(path);
  const size = await notFoundAs(path, f.size());
  const first8 = new Uint8Array(8);
  if (size >= 8) await readAt(f, 0, first8, path);
  const n = headerLength(first8, size, path);
  const json = new Uint8Array(n);
  await readAt(f, 8, json, path);
  return parseHeaderJson(json, size, path);
}

/**
 * Tensors of one or several safetensors files, read one at a time. Holds no open files: each read opens, seeks and
 * reads, so concurrent reads are safe and nothing needs closing.
 *
 * @example
 * ```ts
 * const r = await openSafetensors("/ckpt/model.safetensors.index.json");
 * for (const t of r.tensors) console.log(t.name, t.storage, t.shape);
 * const bytes = await r.read("model.norm.weight");
 * ```
 */
export class SafetensorsReader {
  /** What was opened (a file, an index, or a directory), for messages. */
  readonly source: string;
  /** One header per file, in the order given. */
  readonly headers: readonly SafetensorsHeader[];
  /** Every tensor, file by file in data order (the fastest order to read them). */
  readonly tensors: readonly TensorInfo[];
  readonly #byName = new Map<string, TensorInfo>();

  /** Merges headers; a name in two files is an error. Use {@link openSafetensors} rather than this. */
  constructor(source: string, headers: readonly SafetensorsHeader[]) {
    this.source = source;
    this.headers = headers;
    const problems: CheckpointProblem[] = [];
    for (const h of headers) {
      for (const t of h.tensors) {
        const other = this.#byName.get(t.name);
        if (other) {
          problems.push({
            kind: "duplicate_tensor",
            tensor: t.name,
            file: t.file,
            message: `tensor "${t.name}" is in both ${other.file} and ${t.file}`,
          });
        } else this.#byName.set(t.name, t);
      }
    }
    if (problems.length) throw new CheckpointError(problems);
    this.tensors = headers.flatMap((h) => h.tensors);
  }

  /** `__metadata__` of the first file (shards written together carry the same). */
  get metadata(): Record<string, string> {
    return this.headers[0]?.metadata ?? {};
  }

  /** Sum of all tensor byte lengths. */
  get totalBytes(): number {
    return this.tensors.reduce((a, t) => a + t.byteLength, 0);
  }

  /** True when the checkpoint holds `name`. */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** Where `name` lives; a missing name is a {@link CheckpointError}. */
  info(name: string): TensorInfo {
    const t = this.#byName.get(name);
    if (!t) fail("missing_tensor", this.source, `missing tensor "${name}" in ${this.source}`, name);
    return t;
  }

  /** Reads one whole tensor into a fresh buffer. */
  read(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    return this.readRange(name, 0, t.byteLength);
  }

  /** Reads bytes [start, end) of one tensor (one expert of a fused expert tensor, say) into a fresh buffer. */
  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    const dst = new Uint8Array(end - start);
    await this.readInto(name, dst, start);
    return dst;
  }

  /** Fills `dst` from one tensor's bytes starting at `start`, so a caller can reuse a staging buffer. */
  async readInto(name: string, dst: Uint8Array, start = 0): Promise<void> {
    const t = this.info(name);
    if (start < 0 || start + dst.length > t.byteLength) {
      throw new RangeError(`read of [${start}, ${start + dst.length}) is outside tensor "${name}" (${t.byteLength} B)`);
    }
    using f = await openFile(t.file);
    await readAt(f, t.byteOffset + start, dst, t.file, name);
  }
}

/** Reads an index's `weight_map` (tensor name → shard file name). */
async function readIndex(path: string): Promise<Record<string, string>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readTextFile(path));
  } catch (e) {
    if (isNotFound(e)) fail("not_found", path, `${path}: file not found`);
    fail("bad_config", path, `${path}: not valid JSON (${(e as Error).message})`);
  }
  const map = (raw as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== "object" || Array.isArray(map)) {
    fail("bad_config", path, `${path}: no "weight_map" object`);
  }
  for (const [name, f] of Object.entries(map as Record<string, unknown>)) {
    if (typeof f !== "string") fail("bad_config", path, `${path}: weight_map["${name}"] is not a file name`, name);
  }
  return map as Record<string, string>;
}

/** Opens the shards an index names and checks both agree tensor by tensor. */
async function openIndexed(indexPath: string): Promise<SafetensorsReader> {
  const map = await readIndex(indexPath);
  const dir = dirname(indexPath);
  const shardNames = [...new Set(Object.values(map))].sort();
  const headers = await Promise.all(shardNames.map((s) => readSafetensorsHeader(join(dir, s))));
  const problems: CheckpointProblem[] = [];
  const idx = basename(indexPath);
  for (const h of headers) {
    const shard = basename(h.file);
    const held = new Set(h.tensors.map((t) => t.name));
    for (const [name, f] of Object.entries(map)) {
      if (f === shard && !held.has(name)) {
        problems.push({
          kind: "missing_tensor",
          tensor: name,
          file: h.file,
          message: `missing tensor "${name}" in ${h.file} (${idx} says it is there)`,
        });
      }
    }
    for (const t of h.tensors) {
      if (map[t.name] !== shard) {
        problems.push({
          kind: "extra_tensor",
          tensor: t.name,
          file: h.file,
          message: `tensor "${t.name}" in ${h.file} is not listed for that file in ${idx}`,
        });
      }
    }
  }
  if (problems.length) throw new CheckpointError(problems);
  return new SafetensorsReader(indexPath, headers);
}

/**
 * Opens a checkpoint's tensors: a `.safetensors` file, a `*.safetensors.index.json` (shards next to it), or a list
 * of shard files without an index. Reads headers only.
 *
 * @example
 * ```ts
 * const r = await openSafetensors(["consolidated-00001-of-00002.safetensors", "consolidated-00002-of-00002.safetensors"]);
 * ```
 */
export async function openSafetensors(source: string | readonly string[]): Promise<SafetensorsReader> {
  if (typeof source === "string") {
    if (source.endsWith(".json")) return await openIndexed(source);
    return new SafetensorsReader(source, [await readSafetensorsHeader(source)]);
  }
  if (source.length === 0) throw new CheckpointError({ kind: "not_found", message: "no safetensors files given" });
  const headers = await Promise.all(source.map((p) => readSafetensorsHeader(p)));
  return new SafetensorsReader(source.length === 1 ? source[0] : dirname(source[0]), headers);
}
