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
import type { Mistral4Config } from "../graph/models/mistral4.ts";
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

/** Opens the weights of a resolved `--model`. */
export async function openModelWeights(resolved: ResolvedModel, o: ModelWeightOptions): Promise<ModelWeights> {
  const lookup = (sources: ReadonlyMap<string, WeightSource>) => (decl: WeightDecl) => {
    const s = sources.get(decl.name);
    if (!s) throw new Error(`model ${resolved.name}: no weight ${decl.name} in its ${resolved.source}`);
    return convertSource(s, decl.dtype);
  };
  if (resolved.source === "preset") {
    // Random weights are made in a checkpoint dtype; q8 and q4 are load-time re-encodings of those.
    const made = o.dtype === "q8" || o.dtype === "q4" ? undefined : o.dtype;
    const seed = o.seed ?? 0;
    const random = randomWeightSources(configForDtype(resolved.config, made), {
      seed,
      group: o.group,
      preset: resolved.name,
    });
    return {
      config: random.config,
      linearDtype: made !== undefined ? undefined : o.dtype,
      source: lookup(random.sources),
      close() {},
    };
  }
  const opened = await openWeightSources(resolved.name, { quiet: o.quiet, group: o.group });
  return { config: opened.config, linearDtype: o.dtype, source: lookup(opened.sources), close: () => opened.close() };
}
