/**
 * Streamed loading: a checkpoint directory opened as one {@link WeightSource} per canonical weight, so a backend
 * uploads chunk by chunk and the host never holds the model. Opening checks the whole checkpoint exactly as
 * `loadCanonicalWeights` does (same config, same `CheckpointError`s) and reads no tensor data; each `read` reads
 * the rows it returns (see `canonical_rows.ts`) plus the few scale values those rows use, and keeps nothing.
 *
 * Scales come row-local (`source.ts`): an FP8 weight's per-tensor or per-block scales expanded to one per K-row;
 * an NVFP4 weight's f8 block scales folded by their linear's global scale (`nvfp4BlockScale`, as `foldNvfp4Scales`).
 *
 * @module
 */

import type { CanonicalTensor, CheckpointLayout, Mistral4Config } from "../graph/models/mistral4.ts";
import { storedShape } from "../graph/models/mistral4.ts";
import { CanonicalRows, type PlacedTensor, type TensorRangeReader } from "./canonical_rows.ts";
import { type CheckedOptions, holding, openCheckedCheckpoint } from "./checked.ts";
import { kDim } from "./chunks.ts";
import { NVFP4_BLOCK, nvfp4BlockScale } from "./codecs.ts";
import { LoadProgress } from "./progress.ts";
import type { SafetensorsReader } from "./safetensors.ts";
import { leadingRows, rowElements, type WeightChunk, type WeightSource } from "./source.ts";
import { numel } from "./transforms.ts";

/** Options of {@link openWeightSources}. */
export interface OpenWeightSourcesOptions extends CheckedOptions {
  /** No progress line. */
  quiet?: boolean;
  /** A reporter to use instead of the default stderr one (tests, or a caller with its own line). */
  progress?: LoadProgress;
  /** Reads go through what this returns (tests wrap the reader to count bytes in flight). */
  wrapReader?: (reader: SafetensorsReader) => TensorRangeReader;
}

/** What {@link openWeightSources} returns. */
export interface WeightSources {
  /** The checkpoint's config; `dtype` is that of the loaded unquantised weights. */
  config: Mistral4Config;
  /** The layout read. */
  layout: CheckpointLayout;
  /** One source per canonical weight of the group (scales ride in the chunks), in canonical order. */
  sources: Map<string, WeightSource>;
  /** Bytes the checkpoint stores for these sources (the progress line's total). */
  totalBytes: number;
  /** Ends the progress line; reads after it reject. The checkpoint holds no open files between reads. */
  close(): void;
}

/** Flat elements `[first, last]` of an f32 scale tensor: the leading rows holding them, and where they start. */
async function flatF32(
  rows: CanonicalRows,
  first: number,
  last: number,
): Promise<{ values: Float32Array; at: number }> {
  const re = rowElements(rows.shape), r0 = Math.floor(first / re), r1 = Math.floor(last / re) + 1;
  let b = await rows.read(r0, r1 - r0);
  if (b.byteOffset % 4 !== 0) b = b.slice();
  return { values: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4), at: r0 * re };
}

/** One canonical weight of a checkpoint, read in row chunks. */
class CheckpointSource implements WeightSource {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: CanonicalTensor["dtype"];
  readonly bytes: number;
  readonly origin: string;
  readonly #rows: number;
  readonly #kRowsPerRow: number;

  constructor(
    t: CanonicalTensor,
    readonly data: CanonicalRows,
    /** FP8: the `.scale` multipliers; NVFP4: the f8 block scale codes. */
    readonly scale: CanonicalRows | undefined,
    /** NVFP4: the global scales. */
    readonly global: CanonicalRows | undefined,
    readonly state: { closed: boolean; onLastRow: (s: WeightSource) => void },
  ) {
    this.name = t.name;
    this.shape = [...t.shape];
    this.dtype = t.dtype;
    const all = [data, scale, global].filter((r) => r !== undefined);
    this.bytes = all.reduce((a, r) => a + r.storedBytes, 0);
    this.origin = [...new Set(all.flatMap((r) => r.parts.map((p) => p.info.file)))].join(", ");
    this.#rows = leadingRows(t.shape);
    this.#kRowsPerRow = rowElements(t.shape) / kDim(t.shape);
    // Scale runs must be whole K-rows (FP8) or whole 16-blocks (NVFP4) for the arithmetic below.
    const units = t.dtype === "nvfp4" ? numel(t.shape) / NVFP4_BLOCK : this.#rows * this.#kRowsPerRow;
    const blocks = t.dtype === "nvfp4" ? global && numel(global.shape) : scale && numel(scale.shape);
    if (blocks !== undefined && units % blocks !== 0) {
      throw new Error(`${t.name}: its scales do not split it into equal runs (a table bug)`);
    }
  }

  async read(row0: number, rows: number): Promise<WeightChunk> {
    if (this.state.closed) throw new Error(`${this.name}: read after the checkpoint was closed`);
    if (!(Number.isInteger(row0) && Number.isInteger(rows) && row0 >= 0 && rows >= 1 && row0 + rows <= this.#rows)) {
      throw new RangeError(`${this.name}: rows [${row0}, ${row0 + rows}) outside its ${this.#rows}`);
    }
    if (this.dtype === "nvfp4" || this.dtype === "f8e4m3") {
      // A 1-D tensor's only K-row is all of it: its scales are not row-local below that.
      if (this.shape.length < 2 && rows !== this.#rows) throw new RangeError(`${this.name}: read it whole`);
    }
    const data = await this.data.read(row0, rows);
    const nv = this.dtype === "nvfp4" ? await this.#nvfp4Scales(row0, rows) : undefined;
    const scales = this.dtype === "f8e4m3" ? await this.#fp8Scales(row0, rows) : nv?.scales;
    if (row0 + rows === this.#rows) this.state.onLastRow(this);
    const chunk: WeightChunk = { row0, rows, shape: [rows, ...this.shape.slice(1)], dtype: this.dtype, data };
    if (scales) chunk.scales = scales;
    if (nv) chunk.globalScales = nv.globals;
    return chunk;
  }

  /** One f32 multiplier per K-row: the canonical `.scale` block (equal runs of K-rows) each K-row lies in. */
  async #fp8Scales(row0: number, rows: number): Promise<Float32Array> {
    const kpr = this.#kRowsPerRow, k0 = row0 * kpr, n = rows * kpr;
    const run = (this.#rows * kpr) / numel(this.scale!.shape);
    const { values, at } = await flatF32(this.scale!, Math.floor(k0 / run), Math.floor((k0 + n - 1) / run));
    const out = new Float32Array(n);
    for (let k = 0; k < n; k++) out[k] = values[Math.floor((k0 + k) / run) - at];
    return out;
  }

  /** One folded multiplier per 16 values (the f8 block scale over its run's global scale), and each K-row's global. */
  async #nvfp4Scales(row0: number, rows: number): Promise<{ scales: Float32Array; globals: Float32Array }> {
    const codes = await this.scale!.read(row0, rows);
    const per = rowElements(this.shape) / NVFP4_BLOCK, b0 = row0 * per;
    const run = (this.#rows * per) / numel(this.global!.shape);
    const { values, at } = await flatF32(this.global!, Math.floor(b0 / run), Math.floor((b0 + codes.length - 1) / run));
    const out = new Float32Array(codes.length);
    for (let b = 0; b < codes.length; b++) out[b] = nvfp4BlockScale(codes[b], values[Math.floor((b0 + b) / run) - at]);
    // Runs are whole K-rows: the global of a K-row is that of its first block.
    const kBlocks = kDim(this.shape) / NVFP4_BLOCK, globals = new Float32Array(codes.length / kBlocks);
    for (let r = 0; r < globals.length; r++) globals[r] = values[Math.floor((b0 + r * kBlocks) / run) - at];
    return { scales: out, globals };
  }
}

/**
 * Opens a checkpoint directory as row-chunk weight sources. Every problem with the tensor set (missing, extra, wrong
 * shape or dtype, truncated file) is a `CheckpointError` here, before any data is read, exactly as with
 * `loadCanonicalWeights`; a file that goes bad later makes the `read` that meets it reject with a `CheckpointError`
 * naming the tensor and the file. f16 weights come as f32 (or bf16 with `f16: "bf16"`); other float weights in the
 * config's dtype. The progress line counts a source (its stored bytes) when its last row has been read.
 *
 * @example
 * ```ts ignore
 * const { config, sources, close } = await openWeightSources("/models/tiny-ckpt");
 * for (const source of sources.values()) {
 *   for (const { row0, rows } of chunkRows(source)) upload(await source.read(row0, rows));
 * }
 * close();
 * ```
 */
export async function openWeightSources(dir: string, options: OpenWeightSourcesOptions = {}): Promise<WeightSources> {
  const ckpt = await openCheckedCheckpoint(dir, options);
  const { canon, tensors, matched, wanted } = ckpt;
  const reader = options.wrapReader ? options.wrapReader(ckpt.reader) : ckpt.reader;
  const parts = new Map<string, PlacedTensor[]>();
  for (const { spec, info } of matched) {
    const s = tensors.get(spec.name)!;
    if (!wanted(s.canonicalName)) continue;
    const list = parts.get(s.canonicalName) ?? [];
    list.push({ info, transform: s.transform });
    parts.set(s.canonicalName, list);
  }
  const rowsOf = (name: string) => {
    const t = canon.get(name);
    return t && new CanonicalRows(name, storedShape(t), holding(t).buffer, parts.get(name) ?? [], reader);
  };
  let finished = false, done = 0;
  const finish = () => {
    if (finished) return;
    finished = true;
    progress.done();
  };
  const reported = new Set<string>();
  const state = {
    closed: false,
    onLastRow: (s: WeightSource) => {
      if (reported.has(s.name)) return; // a second pass (a conversion's absmax) counts once
      reported.add(s.name);
      progress.add(s.bytes);
      if (++done === sources.size) finish();
    },
  };
  const sources = new Map<string, WeightSource>();
  for (const t of canon.values()) {
    if (t.kind !== "weight" || !wanted(t.name)) continue;
    sources.set(
      t.name,
      new CheckpointSource(t, rowsOf(t.name)!, rowsOf(`${t.name}.scale`), rowsOf(`${t.name}.global_scale`), state),
    );
  }
  const totalBytes = [...sources.values()].reduce((a, s) => a + s.bytes, 0);
  const progress = options.progress ??
    new LoadProgress({ totalBytes, totalTensors: sources.size, quiet: options.quiet, label: `loading ${dir}` });
  const close = () => {
    state.closed = true;
    if (done > 0) finish();
  };
  return { config: ckpt.config, layout: ckpt.layout, sources, totalBytes, close };
}
