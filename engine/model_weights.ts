/**
 * Where a model's weights come from, as one {@link WeightSource} per graph weight: a preset's seeded random weights
 * (generated chunk by chunk) or a checkpoint directory (read chunk by chunk from its safetensors files), converted
 * to the dtype the graph declares (`--dtype`) chunk by chunk. Each call of `source` gives a fresh stream, so a
 * weight held by two backends is read twice rather than kept: the host never holds the model.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import type { WeightDecl } from "../graph/ir.ts";
import { LINEAR_GROUPS, type Mistral4Config } from "../graph/models/mistral4.ts";
import type { ResolvedModel } from "../graph/models/mod.ts";
import { convertSource } from "../weights/convert_source.ts";
import { configForDtype, randomWeightSources } from "../weights/random.ts";
import type { WeightSource } from "../weights/source.ts";
import { openWeightSources } from "../weights/stream.ts";

/** A model's weights, ready to stream. */
export interface ModelWeights {
  /** The config the weights are for (a preset's after `configForDtype`, a checkpoint's own). */
  config: Mistral4Config;
  /** The dtype the step graph must declare for the quantisable linears (undefined: the config's own). */
  linearDtype: DType | undefined;
  /** A fresh source of `decl`, converted to `decl.dtype`. */
  source(decl: WeightDecl): WeightSource;
  /** Releases what the sources hold open. */
  close(): void;
}

/** Options of {@link openModelWeights}. */
export interface ModelWeightOptions {
  dtype?: DType;
  seed?: number;
  /** `text`: the decoder only; `all`: the vision tower and projector too. */
  group: "text" | "all";
  quiet?: boolean;
}

/** Global-scale runs of every text linear a checkpoint could store in NVFP4 (one per source linear), by name. */
function nvfp4Runs(resolved: ResolvedModel): Map<string, number> {
  const q = { weight_dtype: "nvfp4" as const, activation_scheme: "dynamic" as const, linears: [...LINEAR_GROUPS] };
  const runs = new Map<string, number>();
  for (const t of resolved.family.canonicalTensors({ ...resolved.config, quantization: q })) {
    if (t.name.endsWith(".global_scale")) runs.set(t.scaleOf!, t.shape.reduce((a, b) => a * b, 1));
  }
  return runs;
}

/** Opens the weights of a resolved `--model`. */
export async function openModelWeights(resolved: ResolvedModel, o: ModelWeightOptions): Promise<ModelWeights> {
  let runs: Map<string, number> | undefined;
  const lookup = (sources: ReadonlyMap<string, WeightSource>) => (decl: WeightDecl) => {
    const s = sources.get(decl.name);
    if (!s) throw new Error(`model ${resolved.name}: no weight ${decl.name} in its ${resolved.source}`);
    if (decl.dtype !== "nvfp4" || s.dtype === "nvfp4") return convertSource(s, decl.dtype);
    // NVFP4 made at load as a checkpoint makes it: one global scale per source linear (gate and up apart).
    runs ??= nvfp4Runs(resolved);
    return convertSource(s, decl.dtype, runs.get(decl.name));
  };
  if (resolved.source === "preset") {
    // Random weights are made in a checkpoint dtype; q8 and q4 are load-time re-encodings of those. nvfp4 is the
    // release's mix (graph linearDtype): the routed experts are made NVFP4, the other linears re-encoded to FP8 at load.
    const made = o.dtype === "q8" || o.dtype === "q4" ? undefined : o.dtype;
    const seed = o.seed ?? 0;
    let config = configForDtype(resolved.config, made);
    if (made === "nvfp4" && resolved.config.quantization?.weight_dtype !== "nvfp4") {
      config = { ...config, quantization: { ...config.quantization!, linears: ["routed_experts"] } };
    }
    const random = randomWeightSources(config, {
      seed,
      group: o.group,
      preset: resolved.name,
    });
    return {
      config: random.config,
      linearDtype: made !== undefined && made !== "nvfp4" ? undefined : o.dtype,
      source: lookup(random.sources),
      close() {},
    };
  }
  const opened = await openWeightSources(resolved.name, { quiet: o.quiet, group: o.group });
  return { config: opened.config, linearDtype: o.dtype, source: lookup(opened.sources), close: () => opened.close() };
}
