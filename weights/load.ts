/**
 * Loading a checkpoint directory into canonical weights: open it (HF or Mistral layout), read its config, check every
 * tensor against `checkpointTensors`, then stream tensors one at a time through their load transforms (place into
 * fused gate ‖ up and experts, broadcast expert scales, undo HF's vision rope permutation), then fold NVFP4 block
 * scales by their global scales. Peak memory is the canonical weights plus about one tensor (NVFP4: plus its f8 block
 * scales until folded).
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { familyOfHF } from "../graph/models/mod.ts";
import {
  type CanonicalTensor,
  canonicalTensors,
  type CheckpointLayout,
  checkpointTensors,
  configFromParams,
  isIgnoredCheckpointTensor,
  type LoadTransform,
  type Mistral4Config,
  normalizeCheckpointName,
  storedShape,
  withParamsSoftmaxScale,
} from "../graph/models/mistral4.ts";
import { type Checkpoint, checkTensors, loadTensors, openCheckpoint, type TensorSpec } from "./checkpoint.ts";
import {
  bytesToF32,
  dequantizeFp8,
  dequantizeNvfp4Folded,
  dequantizeQ8,
  f32ToBytes,
  FLOAT_BYTES,
  type FloatDType,
  foldNvfp4Scales,
} from "./codecs.ts";

/** One canonical tensor as loaded: stored encoding + per-block dequant scales, convertible to f32. */
export interface CanonicalWeight {
  /** Canonical name (`graph/models/mistral4_weights.ts`). */
  name: string;
  /** Row-major logical shape (NVFP4: elements, not bytes). */
  shape: number[];
  /** Stored element type: f32, bf16, f16, f8e4m3, nvfp4 or q8. */
  dtype: DType;
  /** Little-endian elements of `dtype`; NVFP4: E2M1 codes two per byte, even element in the low nibble. */
  data: Uint8Array;
  /**
   * FP8: the canonical `<name>.scale` values, one per contiguous block, `W = fp8 · scale`. q8: one per 32 inputs.
   * NVFP4: one per 16 inputs, the f8 block scale already divided by its linear's global scale
   * (`nvfp4BlockScale`), so `W = e2m1 · scale`; rows of fused tensors concatenate.
   */
  scales?: Float32Array;
  /**
   * NVFP4 only: each source linear's `weight_global_scale` (a divisor), in row order; global `j` covers the `j`-th of
   * equal runs of rows (fused gate ‖ up: 2, experts `[E, 2]` / `[E]`). With them `scales` gives back the stored f8
   * block scales exactly (`unfoldNvfp4Scales`).
   */
  globalScales?: Float32Array;
}

/**
 * Decodes a canonical weight to f32, exactly (FP8: code · block scale in f32, as `dequantizeFp8`; NVFP4: E2M1 ·
 * folded block scale, bit-identical to `dequantizeNvfp4` on the stored tensors).
 *
 * @example
 * ```ts
 * const w = weightToF32({ name: "norm", shape: [2], dtype: "bf16", data: new Uint8Array([0x80, 0x3f, 0, 0x40]) });
 * // Float32Array [1, 2]
 * ```
 */
export function weightToF32(w: CanonicalWeight): Float32Array {
  if (w.dtype === "f8e4m3") return dequantizeFp8(w.data, w.scales ?? 1);
  if (w.dtype === "nvfp4") {
    if (!w.scales) throw new RangeError(`weightToF32: NVFP4 ${w.name} has no block scales`);
    return dequantizeNvfp4Folded(w.data, w.scales);
  }
  if (w.dtype === "q8") {
    // int8 blocks of 32 along the last dim, one f32 scale per block (see convert.ts).
    const cols = w.shape[w.shape.length - 1];
    const values = new Int8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength);
    return dequantizeQ8({ values, scales: w.scales! }, values.length / cols, cols);
  }
  if (w.dtype in FLOAT_BYTES) return bytesToF32(w.data, w.dtype as FloatDType);
  throw new RangeError(`weightToF32: ${w.name} has dtype ${w.dtype}, which has no element-wise decoding`);
}

/** Options of {@link loadCanonicalWeights}. */
export interface LoadCanonicalOptions {
  /** No progress line. */
  quiet?: boolean;
  /** `text` (default): load the decoder only (vision tensors are still checked); `all`: vision too. */
  group?: "text" | "all";
  /** What f16 weights become: f32 (default, exact) or bf16 (half the memory; drops 3 mantissa bits). */
  f16?: "f32" | "bf16";
  /** Force a layout when a directory ships both (default HF). */
  layout?: CheckpointLayout;
}

/** What {@link loadCanonicalWeights} returns. */
export interface LoadedCanonical {
  /** The checkpoint's config; `dtype` is that of the loaded unquantised weights. */
  config: Mistral4Config;
  /** The layout read. */
  layout: CheckpointLayout;
  /** Canonical weights by name (scales folded into their weight's `scales`). */
  weights: Map<string, CanonicalWeight>;
}

const FLOATS: readonly DType[] = ["f32", "bf16", "f16"];

/** The config of an opened checkpoint, with `dtype` set to what unquantised weights are loaded as. */
function readConfig(ckpt: Checkpoint, f16: DType): Mistral4Config {
  let config: Mistral4Config;
  if (ckpt.layout === "hf") {
    config = familyOfHF(ckpt.config).configFromHF(ckpt.config, ckpt.configFile);
    // MODEL.md §1.7: params.json's apply_scale decides the softmax scale when config.json does not say.
    withParamsSoftmaxScale(config, ckpt.config, ckpt.mistralParams);
  } else {
    config = configFromParams(ckpt.config, ckpt.configFile);
    // params.json has no dtype: the tensors are the truth (the final norm is never quantised).
    const norm = ckpt.reader.has("norm.weight") ? ckpt.reader.info("norm.weight").dtype : undefined;
    if (norm && FLOATS.includes(norm)) config.dtype = norm;
  }
  if (config.dtype === "f16") config.dtype = f16;
  return config;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `shape` left-padded with 1s to `rank` dims. */
function padded(shape: readonly number[], rank: number): number[] {
  return [...Array(Math.max(0, rank - shape.length)).fill(1), ...shape];
}

function strides(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

/**
 * Flat index into `src` (shape left-padded to the rank of `dst`, size-1 dims broadcast) of the element at flat
 * index `i` of `dst`.
 */
export function broadcastIndex(i: number, dst: readonly number[], src: readonly number[]): number {
  const s = padded(src, dst.length), ss = strides(s);
  let out = 0;
  for (let d = dst.length - 1; d >= 0; d--) {
    const k = i % dst[d];
    i = (i - k) / dst[d];
    if (s[d] !== 1) out += k * ss[d];
  }
  return out;
}

/**
 * Copies the block `small` (shape `smallShape`, left-padded) to or from `big` at `offset`, `elem` bytes per
 * element: `into` = true writes small into big (a `place` load), false reads it out (what a writer inverts).
 */
export function copyBlock(
  big: Uint8Array,
  bigShape: readonly number[],
  small: Uint8Array,
  smallShape: readonly number[],
  offset: readonly number[],
  elem: number,
  into: boolean,
): void {
  const r = bigShape.length, s = padded(smallShape, r), bs = strides(bigShape);
  const rowBytes = s[r - 1] * elem, rows = numel(s) / Math.max(1, s[r - 1]);
  for (let row = 0; row < rows; row++) {
    let rest = row, at = offset[r - 1];
    for (let d = r - 2; d >= 0; d--) {
      const k = rest % s[d];
      rest = (rest - k) / s[d];
      at += (k + offset[d]) * bs[d];
    }
    const b = big.subarray(at * elem, at * elem + rowBytes), sm = small.subarray(row * rowBytes, (row + 1) * rowBytes);
    if (into) b.set(sm);
    else sm.set(b);
  }
}

/**
 * HF row of canonical row `row` for vision q/k: canonical row h·hd + 2i + j (interleaved pairs) is HF row
 * h·hd + j·hd/2 + i (half-split).
 */
export function ropeHfRow(row: number, rows: number, heads: number): number {
  const hd = rows / heads, h = Math.floor(row / hd), r = row % hd;
  return h * hd + (r % 2) * (hd / 2) + (r >> 1);
}

/** Applies one load transform: `src` (converted to the canonical dtype) into the canonical buffer `dst`. */
function applyTransform(
  t: LoadTransform,
  dst: Uint8Array,
  canon: readonly number[],
  src: Uint8Array,
  srcShape: readonly number[],
  elem: number,
): void {
  switch (t.kind) {
    case "copy":
      dst.set(src);
      return;
    case "place":
      copyBlock(dst, canon, src, srcShape, t.offset, elem, true);
      return;
    case "broadcast":
      for (let i = 0; i < dst.length / elem; i++) {
        const j = broadcastIndex(i, canon, srcShape);
        dst.set(src.subarray(j * elem, (j + 1) * elem), i * elem);
      }
      return;
    case "rope_unpermute": {
      const rows = canon[0], rowBytes = dst.length / rows;
      for (let r = 0; r < rows; r++) {
        const from = ropeHfRow(r, rows, t.heads) * rowBytes;
        dst.set(src.subarray(from, from + rowBytes), r * rowBytes);
      }
      return;
    }
  }
}

/** `data` of float dtype `from` re-encoded as `to` (exact when widening; RNE when narrowing). */
function convert(data: Uint8Array, from: DType, to: DType): Uint8Array {
  if (from === to) return data;
  return f32ToBytes(bytesToF32(data, from as FloatDType), to as FloatDType);
}

/**
 * How a canonical tensor is held while loading: the dtype its buffer is in, and the dtypes the checkpoint may
 * ship it as. Quantised codes must come as they are (FP8 weights, NVFP4 packed bytes and f8 block scales); every
 * float (unquantised weights, FP8 and NVFP4 global scales) may be any float, converted.
 */
function holding(t: CanonicalTensor): { buffer: DType; accepts: DType | readonly DType[] } {
  if (t.dtype === "nvfp4") return { buffer: "u8", accepts: "u8" };
  if (t.dtype === "f8e4m3") return { buffer: "f8e4m3", accepts: "f8e4m3" };
  return { buffer: t.kind === "scale" ? "f32" : t.dtype, accepts: FLOATS };
}

function elemBytes(dtype: DType): number {
  return dtype === "u8" ? 1 : FLOAT_BYTES[dtype as FloatDType];
}

/**
 * Loads a checkpoint directory into canonical weights. Every problem with the tensor set (missing, extra, wrong
 * shape or dtype, truncated file) is a `CheckpointError` naming the tensor and the file. f16 weights are widened to
 * f32 (or narrowed to bf16 with `f16: "bf16"`); other float weights are converted to the config's dtype.
 *
 * @example
 * ```ts ignore
 * const { config, weights } = await loadCanonicalWeights("/models/tiny-ckpt");
 * const norm = weightToF32(weights.get("norm")!);
 * ```
 */
export async function loadCanonicalWeights(dir: string, options: LoadCanonicalOptions = {}): Promise<LoadedCanonical> {
  const ckpt = await openCheckpoint(dir, { layout: options.layout });
  const { layout, reader } = ckpt;
  const config = readConfig(ckpt, options.f16 ?? "f32");
  const canon = new Map(canonicalTensors(config).map((t) => [t.name, t]));
  const sources = checkpointTensors(config, layout);
  const source = new Map(sources.map((s) => [s.checkpointName, s]));
  const specs: TensorSpec[] = sources.map((s) => ({
    name: s.checkpointName,
    shape: s.shape,
    dtype: holding(canon.get(s.canonicalName)!).accepts,
  }));
  const check = {
    normalizeName: (n: string) => normalizeCheckpointName(config, layout, n),
    ignore: isIgnoredCheckpointTensor,
  };
  const wanted = (s: TensorSpec) =>
    options.group === "all" || canon.get(source.get(s.name)!.canonicalName)!.group === "text";
  // Check the whole checkpoint first, so a broken vision tower is reported even when only text is loaded.
  const skipped = new Set(checkTensors(reader, specs, check).filter((m) => !wanted(m.spec)).map((m) => m.info.name));

  const buffers = new Map<string, Uint8Array>();
  const written = new Map<string, number>();
  await loadTensors(reader, specs.filter(wanted), ({ spec, info, data }) => {
    const s = source.get(spec.name)!, t = canon.get(s.canonicalName)!, dt = holding(t).buffer;
    const elem = elemBytes(dt), shape = storedShape(t);
    const src = convert(data, info.dtype!, dt);
    let dst = buffers.get(t.name);
    if (!dst && s.transform.kind === "copy") dst = src; // the whole tensor: adopt it, no copy
    else {
      dst ??= new Uint8Array(numel(shape) * elem);
      applyTransform(s.transform, dst, shape, src, info.shape, elem);
    }
    buffers.set(t.name, dst);
    const n = s.transform.kind === "broadcast" ? numel(shape) : numel(info.shape);
    written.set(t.name, (written.get(t.name) ?? 0) + n);
  }, { ...check, ignore: (n) => check.ignore(n) || skipped.has(n), quiet: options.quiet, label: `loading ${dir}` });

  const weights = new Map<string, CanonicalWeight>();
  for (const t of canon.values()) {
    if (options.group !== "all" && t.group !== "text") continue;
    const data = buffers.get(t.name);
    if (!data || written.get(t.name) !== numel(storedShape(t))) {
      throw new Error(`loadCanonicalWeights: ${t.name} was not fully written (a checkpoint table bug)`);
    }
    if (t.kind === "scale") continue;
    weights.set(t.name, { name: t.name, shape: [...t.shape], dtype: t.dtype, data });
  }
  const f32 = (name: string) => {
    let b = buffers.get(name)!;
    if (b.byteOffset % 4 !== 0) b = b.slice(); // a view into a shard read need not be 4-aligned
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  for (const t of canon.values()) {
    const w = t.kind === "scale" && weights.get(t.scaleOf!);
    if (!w) continue;
    if (w.dtype !== "nvfp4") w.scales = f32(t.name);
    else if (t.name === `${w.name}.global_scale`) {
      // Folded now, once, so decoding needs no division (and matches dequantizeNvfp4 bit for bit).
      w.globalScales = f32(t.name);
      w.scales = foldNvfp4Scales(buffers.get(`${w.name}.scale`)!, w.globalScales);
      buffers.delete(`${w.name}.scale`); // the f8 codes are in `scales` now; free them as we go
    }
  }
  return { config, layout, weights };
}
