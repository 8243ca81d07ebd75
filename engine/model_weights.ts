/**
 * Where a model's weights come from, as one {@link WeightSource} per graph weight: a preset's seeded random weights
 * or a checkpoint directory, converted to the dtype the graph declares (`--dtype`). Each call of `source` gives a
 * fresh stream, so a weight held by two backends is read twice rather than kept.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import type { WeightDecl } from "../graph/ir.ts";
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import type { ResolvedModel } from "../graph/models/mod.ts";
import { memorySource } from "../weights/chunk.ts";
import { loadCanonicalWeights } from "../weights/load.ts";
import { configForDtype, randomWeightSource } from "../weights/random.ts";
import type { WeightSource } from "../weights/source.ts";

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
  if (resolved.source === "preset") {
    // Random weights are made in a checkpoint dtype; q8 is a load-time re-encoding of those.
    const made = o.dtype === "q8" ? undefined : o.dtype;
    const config = configForDtype(resolved.config, made);
    const seed = o.seed ?? 0, random = randomWeightSource(config, { seed, dtype: made, group: o.group });
    const origin = `preset ${resolved.name} seed ${seed}`;
    return {
      config,
      linearDtype: made !== undefined ? undefined : o.dtype,
      source: (decl) => memorySource(random.generate(decl.name), decl.dtype, origin),
      close() {},
    };
  }
  const loaded = await loadCanonicalWeights(resolved.name, { quiet: o.quiet, group: o.group });
  return {
    config: loaded.config,
    linearDtype: o.dtype,
    source(decl) {
      const w = loaded.weights.get(decl.name);
      if (!w) throw new Error(`model ${resolved.name}: weight ${decl.name} was not loaded`);
      return memorySource(w, decl.dtype, resolved.name);
    },
    close: () => loaded.weights.clear(),
  };
}
