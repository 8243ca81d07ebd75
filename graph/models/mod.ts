/**
 * Model families by `model_type`, registered by static import (no reflection), and the one place that turns a
 * `--model DIR|PRESET` argument into a config.
 *
 * @example
 * ```ts
 * import { resolveModel } from "./mod.ts";
 * const { family, config } = await resolveModel("tiny");
 * console.log(family.modelType, config.hidden_size); // mistral4 64
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { CheckpointError } from "../checkpoint_error.ts";
import { isNotFound, readTextFile } from "../files.ts";
import type { GraphBuilder } from "../builder.ts";
import * as mistral4 from "./mistral4.ts";
import { eaglePresetConfig, isEaglePresetName } from "./eagle.ts";

/**
 * Everything a caller needs from one family, generic over its config type `C`. The step graph's inputs and
 * outputs (`Mistral4IOOptions` / `Mistral4IO`) are the engine's contract with every family.
 */
export interface ModelFamily<C = mistral4.Mistral4Config> {
  /** The HF `model_type` of the text model. */
  modelType: string;
  /** Reads a transformers `config.json` (`where` names the file in errors). */
  configFromHF(json: Record<string, unknown>, where?: string): C;
  /** Reads a Mistral `params.json`. */
  configFromParams(json: Record<string, unknown>, where?: string): C;
  /** Built-in configurations by name. */
  presets: Readonly<Record<string, () => C>>;
  /** The in-engine tensor set. */
  canonicalTensors(config: C): mistral4.CanonicalTensor[];
  /** A checkpoint layout's tensors and their load-time transforms. */
  checkpointTensors(config: C, layout: mistral4.CheckpointLayout): mistral4.CheckpointTensor[];
  /** Declares the forward pass on a graph builder. */
  build(g: GraphBuilder, config: C, io: mistral4.Mistral4IOOptions): mistral4.Mistral4IO;
  /** Declares the vision tower + projector (image batch → text-width features). */
  buildVision(g: GraphBuilder, config: C, io: mistral4.Mistral4VisionIOOptions): mistral4.Mistral4VisionIO;
  /** Declares one stage of the vision tower run a few rows at a time (see `mistral4.buildVisionStage`). */
  buildVisionStage(g: GraphBuilder, config: C, io: mistral4.Mistral4VisionStageOptions): void;
}

/** The families, keyed by text `model_type` (a `mistral3` wrapper resolves through its `text_config`). */
export const families: Readonly<Record<string, ModelFamily>> = {
  mistral4: {
    modelType: "mistral4",
    configFromHF: mistral4.configFromHF,
    configFromParams: mistral4.configFromParams,
    presets: mistral4.presets,
    canonicalTensors: mistral4.canonicalTensors,
    checkpointTensors: mistral4.checkpointTensors,
    build: mistral4.build,
    buildVision: mistral4.buildVision,
    buildVisionStage: mistral4.buildVisionStage,
  },
};

/** A resolved `--model`: the family, its config, and where it came from. */
export interface ResolvedModel {
  /** The family that reads and builds it. */
  family: ModelFamily;
  /** Its configuration. */
  config: mistral4.Mistral4Config;
  /** `preset`, or the file the config was read from. */
  source: "preset" | "config.json" | "params.json";
  /** The checkpoint layout the config file implies (null for presets). */
  layout: mistral4.CheckpointLayout | null;
  /** The preset name or directory. */
  name: string;
}

/** The family of an HF config: its own `model_type`, or its `text_config`'s for a `mistral3` wrapper. */
export function familyOfHF(json: Record<string, unknown>): ModelFamily {
  const text = (json.text_config ?? json) as Record<string, unknown>;
  const type = String(text.model_type ?? json.model_type ?? "");
  const family = families[type];
  if (!family) {
    throw new CheckpointError({
      kind: "bad_config",
      message: `config.json: model_type "${type}" is not supported (supported: ${Object.keys(families).join(", ")})`,
    });
  }
  return family;
}

async function readJson(path: string): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readTextFile(path);
  } catch (e) {
    if (isNotFound(e)) return null;
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError({
      kind: "bad_config",
      message: `${path}: invalid JSON (${(e as Error).message})`,
      file: path,
    });
  }
}

/**
 * Resolves `--model`: a preset name, or a directory holding `config.json` (HF layout, preferred) or
 * `params.json` (Mistral layout).
 */
export async function resolveModel(spec: string): Promise<ResolvedModel> {
  const family = families.mistral4;
  if (mistral4.isPresetName(spec)) {
    return { family, config: mistral4.presetConfig(spec), source: "preset", layout: null, name: spec };
  }
  if (isEaglePresetName(spec)) {
    return { family, config: eaglePresetConfig(spec).draft, source: "preset", layout: null, name: spec };
  }
  const hf = await readJson(join(spec, "config.json"));
  if (hf) {
    const fam = familyOfHF(hf);
    const config = fam.configFromHF(hf, join(spec, "config.json"));
    // As the loader reads it: a params.json beside config.json may decide the softmax scale (MODEL.md §1.7).
    mistral4.withParamsSoftmaxScale(config, hf, await readJson(join(spec, "params.json")), join(spec, "params.json"));
    return {
      family: fam,
      config,
      source: "config.json",
      layout: "hf",
      name: spec,
    };
  }
  const params = await readJson(join(spec, "params.json"));
  if (params) {
    return {
      family,
      config: family.configFromParams(params, join(spec, "params.json")),
      source: "params.json",
      layout: "mistral",
      name: spec,
    };
  }
  throw new CheckpointError({
    kind: "not_found",
    message: `--model ${spec}: not a preset (${Object.keys(mistral4.presets).join(", ")}) nor a directory with ` +
      "config.json or params.json",
    file: spec,
  });
}
