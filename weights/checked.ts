/**
 * Opening a checkpoint directory for the model it holds, checked before any tensor data is read: the layout, the
 * config (with the dtype unquantised weights load as), and every tensor against `checkpointTensors`. The
 * whole-tensor loader (`load.ts`) and the row-chunk sources (`stream.ts`) both start here, so they accept and
 * reject exactly the same checkpoints with the same messages.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { familyOfHF } from "../graph/models/mod.ts";
import {
  type CanonicalTensor,
  canonicalTensors,
  type CheckpointLayout,
  type CheckpointTensor,
  checkpointTensors,
  configFromParams,
  type EagleSettings,
  isIgnoredCheckpointTensor,
  type Mistral4Config,
  normalizeCheckpointName,
  withParamsSoftmaxScale,
} from "../graph/models/mistral4.ts";
import {
  type CheckOptions,
  type Checkpoint,
  checkTensors,
  type MatchedTensor,
  openCheckpoint,
  type TensorSpec,
} from "./checkpoint.ts";
import { bytesToF32, f32ToBytes, FLOAT_BYTES, type FloatDType } from "./codecs.ts";
import type { SafetensorsReader } from "./safetensors.ts";

/** Options shared by every way of loading a checkpoint directory. */
export interface CheckedOptions {
  /** `text` (default): load the decoder only (vision tensors are still checked); `all`: vision too. */
  group?: "text" | "all";
  /** What f16 weights become: f32 (default, exact) or bf16 (half the memory; drops 3 mantissa bits). */
  f16?: "f32" | "bf16";
  /** Force a layout when a directory ships both (default HF). */
  layout?: CheckpointLayout;
}

/** A checkpoint whose every tensor matched the model's list; no tensor data read yet. */
export interface CheckedCheckpoint {
  /** The directory. */
  dir: string;
  /** The layout read. */
  layout: CheckpointLayout;
  /** The checkpoint's tensors. */
  reader: SafetensorsReader;
  /** The checkpoint's config; `dtype` is that of the loaded unquantised weights. */
  config: Mistral4Config;
  /** Canonical tensors (weights and scales) by name. */
  canon: Map<string, CanonicalTensor>;
  /** Expected checkpoint tensors by checkpoint name (the spec names). */
  tensors: Map<string, CheckpointTensor>;
  /** What `checkTensors` was given: one spec per expected tensor, dtypes as {@link holding} accepts them. */
  specs: TensorSpec[];
  /** The name normalisation and ignore list the check used. */
  check: Required<Pick<CheckOptions, "normalizeName" | "ignore">>;
  /** Every expected tensor matched to its stored tensor, in file order. */
  matched: MatchedTensor[];
  /** True when canonical tensor `name` belongs to the loaded group. */
  wanted(name: string): boolean;
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
  const eagle = eagleSettings(ckpt);
  if (eagle) config.eagle = eagle;
  return config;
}

/**
 * An EAGLE draft head is told apart by its input projection (`eagle_linear.weight`, HF `fc.weight`); its layers'
 * numbering starts at the lowest layer index its tensor names use (0, or after the target's layers).
 */
function eagleSettings(ckpt: Checkpoint): EagleSettings | null {
  const names = ckpt.reader.tensors.map((t) => t.name);
  const fc = ckpt.layout === "mistral" ? ["eagle_linear.weight"] : ["fc.weight", "model.fc.weight"];
  if (!names.some((n) => fc.includes(n))) return null;
  let first = Infinity;
  for (const n of names) {
    const m = /(?:^|\.)layers\.(\d+)\./.exec(n);
    if (m) first = Math.min(first, Number(m[1]));
  }
  return { layer_offset: Number.isFinite(first) ? first : 0 };
}

/**
 * How a canonical tensor is held while loading: the dtype its buffer is in, and the dtypes the checkpoint may
 * ship it as. Quantised codes must come as they are (FP8 weights, NVFP4 packed bytes and f8 block scales); every
 * float (unquantised weights, FP8 and NVFP4 global scales) may be any float, converted.
 */
export function holding(t: CanonicalTensor): { buffer: DType; accepts: DType | readonly DType[] } {
  if (t.dtype === "nvfp4") return { buffer: "u8", accepts: "u8" };
  if (t.dtype === "f8e4m3") return { buffer: "f8e4m3", accepts: "f8e4m3" };
  return { buffer: t.kind === "scale" ? "f32" : t.dtype, accepts: FLOATS };
}

/** Bytes per element of a holding buffer dtype (u8 or a float). */
export function elemBytes(dtype: DType): number {
  return dtype === "u8" ? 1 : FLOAT_BYTES[dtype as FloatDType];
}

/** `data` of float dtype `from` re-encoded as `to` (exact when widening; RNE when narrowing). */
export function toHolding(data: Uint8Array, from: DType, to: DType): Uint8Array {
  if (from === to) return data;
  return f32ToBytes(bytesToF32(data, from as FloatDType), to as FloatDType);
}

/**
 * Opens `dir` and checks every tensor against the model its config describes. Every problem with the tensor set
 * (missing, extra, wrong shape or dtype, truncated file) is a `CheckpointError` naming the tensor and the file;
 * vision tensors are checked even when only text is wanted, so a broken tower is reported either way.
 *
 * @example
 * ```ts ignore
 * const c = await openCheckedCheckpoint("/models/tiny-ckpt", { group: "text" });
 * console.log(c.layout, c.matched.length);
 * ```
 */
export async function openCheckedCheckpoint(dir: string, options: CheckedOptions = {}): Promise<CheckedCheckpoint> {
  const ckpt = await openCheckpoint(dir, { layout: options.layout });
  const { layout, reader } = ckpt;
  const config = readConfig(ckpt, options.f16 ?? "f32");
  const canon = new Map(canonicalTensors(config).map((t) => [t.name, t]));
  const tensors = new Map(checkpointTensors(config, layout).map((s) => [s.checkpointName, s]));
  const specs: TensorSpec[] = [...tensors.values()].map((s) => ({
    name: s.checkpointName,
    shape: s.shape,
    dtype: holding(canon.get(s.canonicalName)!).accepts,
  }));
  const check = {
    normalizeName: (n: string) => normalizeCheckpointName(config, layout, n),
    ignore: isIgnoredCheckpointTensor,
  };
  const matched = checkTensors(reader, specs, check);
  const wanted = (name: string) => options.group === "all" || canon.get(name)!.group === "text";
  return { dir, layout, reader, config, canon, tensors, specs, check, matched, wanted };
}
