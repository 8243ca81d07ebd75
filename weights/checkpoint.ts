/**
 * Opening a checkpoint directory (Hugging Face or Mistral layout) and streaming its tensors against the list the
 * model family expects. Memory stays at one tensor (two with prefetch) whatever the checkpoint size.
 *
 * @module
 */

import { join } from "node:path";
import type { DType } from "../graph/dtype.ts";
import { listFiles, readTextFile } from "../graph/files.ts";
import { CheckpointError, type CheckpointProblem } from "./errors.ts";
import { LoadProgress } from "./progress.ts";
import { openSafetensors, type SafetensorsReader, type TensorInfo } from "./safetensors.ts";

/** Which file layout a checkpoint uses (MODEL.md §2). */
export type CheckpointLayout = "hf" | "mistral";

/** An opened checkpoint: its layout, raw config JSON, and a tensor reader (headers parsed, no data read). */
export interface Checkpoint {
  /** The directory. */
  dir: string;
  /** Chosen layout. */
  layout: CheckpointLayout;
  /** Raw JSON of the chosen layout's config (`config.json` or `params.json`). */
  config: Record<string, unknown>;
  /** Path of that config file. */
  configFile: string;
  /** `config.json`, when present (whatever the layout). */
  hfConfig?: Record<string, unknown>;
  /** `params.json`, when present (whatever the layout; it carries e.g. `yarn.apply_scale`). */
  mistralParams?: Record<string, unknown>;
  /** Tensors of the chosen layout. */
  reader: SafetensorsReader;
}

/** Options of {@link openCheckpoint}. */
export interface OpenCheckpointOptions {
  /** Force a layout when a directory ships both (the official repo does). Default: `hf` when both are present. */
  layout?: CheckpointLayout;
}

const SHARD = /^model-\d+-of-\d+\.safetensors$/;
const CONSOLIDATED = /^consolidated.*\.safetensors$/;

/** The safetensors source of each layout found in `names` (an index, one file, or a shard list). */
function findWeights(dir: string, names: Set<string>): Partial<Record<CheckpointLayout, string | string[]>> {
  const found: Partial<Record<CheckpointLayout, string | string[]>> = {};
  const sorted = [...names].sort();
  if (names.has("config.json")) {
    const shards = sorted.filter((n) => SHARD.test(n));
    if (names.has("model.safetensors.index.json")) found.hf = join(dir, "model.safetensors.index.json");
    else if (names.has("model.safetensors")) found.hf = join(dir, "model.safetensors");
    else if (shards.length) found.hf = shards.map((n) => join(dir, n));
  }
  if (names.has("params.json")) {
    const files = sorted.filter((n) => CONSOLIDATED.test(n));
    if (names.has("consolidated.safetensors.index.json")) {
      found.mistral = join(dir, "consolidated.safetensors.index.json");
    } else if (files.length) found.mistral = files.map((n) => join(dir, n));
  }
  return found;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readTextFile(path));
  } catch (e) {
    throw new CheckpointError({
      kind: "bad_config",
      file: path,
      message: `${path}: cannot read config (${(e as Error).message})`,
    });
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new CheckpointError({ kind: "bad_config", file: path, message: `${path}: config is not a JSON object` });
  }
  return raw as Record<string, unknown>;
}

/**
 * Opens a checkpoint directory: HF (`config.json` + `model.safetensors.index.json`, `model.safetensors` or
 * `model-*-of-*.safetensors`) or Mistral (`params.json` + `consolidated*.safetensors`, with or without
 * `consolidated.safetensors.index.json`). Parses configs and safetensors headers only.
 *
 * @example
 * ```ts
 * const ckpt = await openCheckpoint("/models/Mistral-Small-4-119B-2603");
 * console.log(ckpt.layout, ckpt.reader.tensors.length);
 * ```
 */
export async function openCheckpoint(dir: string, options: OpenCheckpointOptions = {}): Promise<Checkpoint> {
  const names = new Set<string>();
  try {
    for (const name of await listFiles(dir)) names.add(name);
  } catch (e) {
    throw new CheckpointError({
      kind: "not_found",
      file: dir,
      message: `${dir}: cannot list checkpoint directory (${(e as Error).message}); pass --model a directory`,
    });
  }
  const found = findWeights(dir, names);
  const layout = options.layout ?? (found.hf ? "hf" : found.mistral ? "mistral" : undefined);
  const source = layout && found[layout];
  if (!layout || !source) {
    const want = options.layout === "mistral"
      ? "params.json + consolidated*.safetensors (Mistral layout)"
      : options.layout === "hf"
      ? "config.json + model*.safetensors (Hugging Face layout)"
      : "config.json + model*.safetensors (Hugging Face) or params.json + consolidated*.safetensors (Mistral)";
    const has = [...names].filter((n) => /\.(json|safetensors|bin|pt|pth|gguf)$/.test(n)).sort().slice(0, 8);
    throw new CheckpointError({
      kind: "not_found",
      file: dir,
      message: `${dir}: no checkpoint found: expected ${want}; found ${has.length ? has.join(", ") : "no such files"}` +
        ` (only safetensors weights are supported)`,
    });
  }
  const hfConfig = names.has("config.json") ? await readJson(join(dir, "config.json")) : undefined;
  const mistralParams = names.has("params.json") ? await readJson(join(dir, "params.json")) : undefined;
  const reader = await openSafetensors(source);
  const configFile = join(dir, layout === "hf" ? "config.json" : "params.json");
  const config = (layout === "hf" ? hfConfig : mistralParams)!;
  return { dir, layout, config, configFile, hfConfig, mistralParams, reader };
}

/** One tensor the model expects. */
export interface TensorSpec {
  /** Checkpoint name (after `normalizeName`, when given). */
  name: string;
  /** Expected shape; `[]` accepts any one-element shape (`[]` or `[1]`), as scalar scales come both ways. */
  shape: readonly number[];
  /** Expected dtype, or the dtypes accepted (scales may be any float); omitted: any. */
  dtype?: DType | readonly DType[];
  /** Absent is fine (e.g. biases of some variants). */
  optional?: boolean;
}

/** Options of {@link checkTensors} and {@link loadTensors}. */
export interface CheckOptions {
  /** Maps a stored name to the spec name (e.g. the HF prefix variants); default identity. */
  normalizeName?: (name: string) => string;
  /** Stored tensors to skip silently (activation scales, rope caches); by stored name. */
  ignore?: (name: string) => boolean;
  /** Skip every tensor no spec asks for instead of reporting it. Default false. */
  allowExtra?: boolean;
}

/** A spec matched to the tensor that satisfies it. */
export interface MatchedTensor {
  /** What the model asked for. */
  spec: TensorSpec;
  /** Where it is stored (its `name` is the stored name). */
  info: TensorInfo;
}

function shapeOk(want: readonly number[], got: readonly number[]): boolean {
  if (want.length === 0) return got.length === 0 || (got.length === 1 && got[0] === 1);
  return want.length === got.length && want.every((d, i) => d === got[i]);
}

function fmtDtype(d: DType | readonly DType[]): string {
  return typeof d === "string" ? d : d.join(" or ");
}

/**
 * Checks a checkpoint against the expected tensor list and returns the matches in file order. Collects every
 * problem (missing, extra, duplicate, wrong shape, wrong dtype) into one {@link CheckpointError} naming tensor and
 * file.
 *
 * @example
 * ```ts
 * const matched = checkTensors(ckpt.reader, [{ name: "norm.weight", shape: [4096], dtype: "bf16" }]);
 * ```
 */
export function checkTensors(
  reader: SafetensorsReader,
  specs: readonly TensorSpec[],
  options: CheckOptions = {},
): MatchedTensor[] {
  const bySpec = new Map<string, TensorSpec>();
  for (const s of specs) {
    if (bySpec.has(s.name)) throw new Error(`checkTensors: spec "${s.name}" listed twice`); // a model-family bug
    bySpec.set(s.name, s);
  }
  const problems: CheckpointProblem[] = [];
  const found = new Map<string, TensorInfo>();
  const matched: MatchedTensor[] = [];
  for (const info of reader.tensors) {
    if (options.ignore?.(info.name)) continue;
    const name = options.normalizeName ? options.normalizeName(info.name) : info.name;
    const spec = bySpec.get(name);
    const where = `tensor "${info.name}" in ${info.file}`;
    const p = (kind: CheckpointProblem["kind"], message: string) =>
      problems.push({ kind, message, tensor: info.name, file: info.file });
    if (!spec) {
      if (!options.allowExtra) p("extra_tensor", `unexpected ${where}: the model has no such tensor (wrong model?)`);
      continue;
    }
    const other = found.get(name);
    if (other) {
      p("duplicate_tensor", `${where} and "${other.name}" in ${other.file} both provide "${name}"`);
      continue;
    }
    found.set(name, info);
    if (!shapeOk(spec.shape, info.shape)) {
      p(
        "shape",
        `${where}: shape [${info.shape}] but the model expects [${spec.shape}] (config and checkpoint differ)`,
      );
      continue;
    }
    const want = spec.dtype;
    if (
      want !== undefined &&
      !(info.dtype && (typeof want === "string" ? want === info.dtype : want.includes(info.dtype)))
    ) {
      p("dtype", `${where}: dtype ${info.storage} but the model expects ${fmtDtype(want)}`);
      continue;
    }
    matched.push({ spec, info });
  }
  for (const s of specs) {
    if (!found.has(s.name) && !s.optional) {
      const d = s.dtype === undefined ? "" : `${fmtDtype(s.dtype)} `;
      problems.push({
        kind: "missing_tensor",
        tensor: s.name,
        file: reader.source,
        message: `missing tensor "${s.name}" (${d}[${s.shape}]) in ${reader.source}`,
      });
    }
  }
  if (problems.length) throw new CheckpointError(problems);
  return matched;
}

/** One tensor handed to the {@link loadTensors} callback. */
export interface LoadedTensor extends MatchedTensor {
  /** Its bytes, little-endian, in a fresh buffer the callback may keep. */
  data: Uint8Array;
}

/** Options of {@link loadTensors}. */
export interface LoadOptions extends CheckOptions {
  /** No progress line. */
  quiet?: boolean;
  /** Progress line prefix. */
  label?: string;
  /** A reporter to use instead of the default stderr one (tests). */
  progress?: LoadProgress;
  /** Read the next tensor while the callback handles this one (two tensors in memory). Default true. */
  prefetch?: boolean;
  /** `file` (default): file and offset order, sequential on disk. `spec`: the order of the spec list. */
  order?: "file" | "spec";
}

/** What {@link loadTensors} did. */
export interface LoadStats {
  /** Tensors delivered. */
  tensors: number;
  /** Bytes delivered. */
  bytes: number;
  /** Wall time in seconds. */
  seconds: number;
}

/**
 * Checks the checkpoint (see {@link checkTensors}), then reads each matched tensor once and passes it to
 * `onTensor`, awaiting it before the next, with a progress line on stderr.
 *
 * @example
 * ```ts
 * const ckpt = await openCheckpoint(dir);
 * const specs = checkpointTensors(config, ckpt.layout).map((t) => ({ name: t.checkpointName, shape: t.shape }));
 * await loadTensors(ckpt.reader, specs, async ({ spec, data }) => {
 *   await backend.write(weights.get(spec.name)!, data);
 * });
 * ```
 */
export async function loadTensors(
  reader: SafetensorsReader,
  specs: readonly TensorSpec[],
  onTensor: (tensor: LoadedTensor) => void | Promise<void>,
  options: LoadOptions = {},
): Promise<LoadStats> {
  const matched = checkTensors(reader, specs, options);
  if (options.order === "spec") {
    const rank = new Map(specs.map((s, i) => [s.name, i]));
    matched.sort((a, b) => rank.get(a.spec.name)! - rank.get(b.spec.name)!);
  }
  const bytes = matched.reduce((a, m) => a + m.info.byteLength, 0);
  const progress = options.progress ??
    new LoadProgress({ totalBytes: bytes, totalTensors: matched.length, quiet: options.quiet, label: options.label });
  const start = performance.now();
  const prefetch = options.prefetch ?? true;
  const read = (i: number) => {
    const p = reader.read(matched[i].info.name);
    p.catch(() => {}); // an error surfaces where it is awaited; this only stops an unhandled-rejection exit
    return p;
  };
  let next = matched.length ? read(0) : undefined;
  for (let i = 0; i < matched.length; i++) {
    const data = await next!;
    next = i + 1 < matched.length && prefetch ? read(i + 1) : undefined;
    await onTensor({ ...matched[i], data });
    progress.add(data.byteLength);
    if (!prefetch && i + 1 < matched.length) next = read(i + 1);
  }
  progress.done();
  return { tensors: matched.length, bytes, seconds: (performance.now() - start) / 1000 };
}
