/**
 * Loading a checkpoint directory into canonical weights: open it (HF or Mistral layout), read its config, check every
 * tensor against `checkpointTensors`, then stream tensors one at a time through their load transforms (place into
 * fused gate ‖ up and experts, broadcast expert scales, undo HF's vision rope permutation), then fold NVFP4 block
 * scales by their global scales. Peak memory is the canonical weights plus about one tensor (NVFP4: plus its f8 block
 * scales until folded); `openWeightSources` (`stream.ts`) gives the same weights as row chunks instead, for loaders
 * that must not hold the model on the host.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import {
  type CheckpointLayout,
  type LoadTransform,
  type Mistral4Config,
  storedShape,
} from "../graph/models/mistral4.ts";
import { loadTensors, type TensorSpec } from "./checkpoint.ts";
import { type CheckedOptions, elemBytes, holding, openCheckedCheckpoint, toHolding } from "./checked.ts";
import {
  bytesToF32,
  dequantizeFp8,
  dequantizeNvfp4Folded,
  dequantizeQ4,
  dequantizeQ8,
  FLOAT_BYTES,
  type FloatDType,
  foldNvfp4Scales,
} from "./codecs.ts";
import { broadcastIndex, copyBlock, numel, ropeHfRow } from "./transforms.ts";

export { broadcastIndex, copyBlock, ropeHfRow } from "./transforms.ts";

/** One canonical tensor as loaded: stored encoding + per-block dequant scales, convertible to f32. */
export interface CanonicalWeight {
  /** Canonical name (`graph/models/mistral4_weights.ts`). */
  name: string;
  /** Row-major logical shape (NVFP4: elements, not bytes). */
  shape: number[];
  /** Stored element type: f32, bf16, f16, f8e4m3, nvfp4, q8 or q4. */
  dtype: DType;
  /**
   * Little-endian elements of `dtype`; NVFP4: E2M1 codes two per byte, even element in the low nibble; q4: blocks of
   * 16 bytes per 32 inputs, element j low and j + 16 high (`quantizeQ4`).
   */
  data: Uint8Array;
  /**
   * FP8: the canonical `<name>.scale` values, one per contiguous block, `W = fp8 · scale`. q8, q4: one per 32 inputs.
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
  if (w.dtype === "q4") {
    // Split-nibble blocks of 32 along the last dim, one f16-valued scale per block (see codecs.ts).
    const cols = w.shape[w.shape.length - 1], rows = w.shape.reduce((a, b) => a * b, 1) / cols;
    return dequantizeQ4({ packed: w.data, scales: w.scales! }, rows, cols);
  }
  if (w.dtype in FLOAT_BYTES) return bytesToF32(w.data, w.dtype as FloatDType);
  throw new RangeError(`weightToF32: ${w.name} has dtype ${w.dtype}, which has no element-wise decoding`);
}

/** Options of {@link loadCanonicalWeights}. */
export interface LoadCanonicalOptions extends CheckedOptions {
  /** No progress line. */
  quiet?: boolean;
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
  const { reader, layout, config, canon, tensors: source, specs, check, matched, wanted: want } =
    await openCheckedCheckpoint(dir, options);
  const wanted = (s: TensorSpec) => want(source.get(s.name)!.canonicalName);
  const skipped = new Set(matched.filter((m) => !wanted(m.spec)).map((m) => m.info.name));

  const buffers = new Map<string, Uint8Array>();
  const written = new Map<string, number>();
  await loadTensors(reader, specs.filter(wanted), ({ spec, info, data }) => {
    const s = source.get(spec.name)!, t = canon.get(s.canonicalName)!, dt = holding(t).buffer;
    const elem = elemBytes(dt), shape = storedShape(t);
    const src = toHolding(data, info.dtype!, dt);
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
    if (!want(t.name)) continue;
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
