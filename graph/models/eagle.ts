/**
 * The EAGLE draft head of a Mistral 4 model (MODEL.md §7; the release is `mistralai/Mistral-Small-4-119B-2603-eagle`):
 * `fc(concat(embed(token), target_hidden))` → the draft's decoder layers (MLA, with a dense or MoE FFN as its config
 * says) → final norm → the **target's** head. Embedding and head are the target's: the draft graph declares them
 * under the target's names, so a shared residency holds them once.
 *
 * A draft's config is a {@link Mistral4Config} read from its own `params.json` / `config.json` with the same readers
 * as a decoder's, with `eagle` set (the loader sets it when the checkpoint has `eagle_linear.weight` or HF
 * `fc.weight`). Its checkpoint names are the decoder's minus embedding and head, plus the input projection:
 *
 * | canonical | shape | HF | Mistral |
 * |---|---|---|---|
 * | `eagle.fc` | [D, 2D] | `model.fc.weight` (or `fc.weight`) | `eagle_linear.weight` (+ `qscale_weight`) |
 * | `layers.i.…` | as the decoder's | `model.layers.{o+i}.…` | `layers.{o+i}.…` |
 * | `norm` | [D] | `model.norm.weight` | `norm.weight` |
 *
 * where `o` is 0 or the target's layer count (the release numbers its two layers 36, 37): the loader takes the
 * lowest layer index the file uses. Layer `i` (from 0) has a dense FFN when `o + i < first_k_dense_replace` of the
 * draft's own config (vLLM numbers draft layers from the target's count, MODEL.md §7), MoE otherwise. In the engine every draft name is prefixed `draft.` (weights, caches, nodes).
 *
 * @example
 * ```ts
 * import { eaglePresetConfig } from "./eagle.ts";
 * const { target, draft } = eaglePresetConfig("tiny-eagle");
 * console.log(target, draft.num_hidden_layers, draft.eagle); // tiny 2 { layer_offset: 2 }
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import { sym } from "../ir.ts";
import { concat } from "../../ops/concat.ts";
import { embedding } from "../../ops/embedding.ts";
import { gatherRows } from "../../ops/gather_rows.ts";
import { matmul } from "../../ops/matmul.ts";
import { writeRows } from "../../ops/write_rows.ts";
import { norm } from "../blocks/norm.ts";
import { CheckpointError } from "../checkpoint_error.ts";
import {
  checkBuildable,
  decoderLayers,
  EAGLE_HIDDEN,
  headDtype,
  linearDtype,
  type Mistral4Config,
  type Mistral4IOOptions,
  type Mistral4PresetName,
  presetConfig,
} from "./mistral4.ts";

/** The prefix of every draft weight, cache and node inside the engine. */
export const DRAFT_PREFIX = "draft.";

/** Preset drafts: one per target preset, `<target>-eagle`, with random weights. */
export type EaglePresetName = `${Mistral4PresetName}-eagle`;

/** Layer count and dense layers of each preset draft (the release has 2 layers). */
const PRESET_LAYERS: Readonly<Record<Mistral4PresetName, { layers: number; dense: number }>> = {
  // tiny's first layer is dense so both FFN kinds of a draft are exercised by the unit tests.
  "tiny": { layers: 2, dense: 1 },
  "demo": { layers: 2, dense: 0 },
  "ms4-mini": { layers: 2, dense: 0 },
  "ms4-medium": { layers: 2, dense: 0 },
  "mistral-small-4": { layers: 2, dense: 0 },
};

/**
 * A draft config for `target`: its widths, rope and routing, `layers` decoder layers of which the first `dense` have
 * a dense FFN, numbered after the target's layers in its checkpoint (as the release is said to be).
 */
export function eagleConfig(target: Mistral4Config, o: { layers: number; dense?: number }): Mistral4Config {
  const dense = o.dense ?? 0;
  return {
    ...target,
    num_hidden_layers: o.layers,
    // Counted in the checkpoint's numbering, after the target's layers (`isDenseLayer`).
    first_k_dense_replace: dense > 0 ? target.num_hidden_layers + dense : 0,
    intermediate_size: dense > 0 && target.intermediate_size <= 0
      ? 4 * target.moe_intermediate_size
      : target.intermediate_size,
    vision_config: null,
    eagle: { layer_offset: target.num_hidden_layers },
  };
}

/** True when `name` is a preset draft (`tiny-eagle`, `demo-eagle`, …). */
export function isEaglePresetName(name: string): name is EaglePresetName {
  return name.endsWith("-eagle") && Object.hasOwn(PRESET_LAYERS, name.slice(0, -"-eagle".length));
}

/** The preset draft names. */
export function eaglePresetNames(): EaglePresetName[] {
  return Object.keys(PRESET_LAYERS).map((t) => `${t}-eagle` as EaglePresetName);
}

/** Preset draft `name`: its target preset's name and its config; throws listing the presets when unknown. */
export function eaglePresetConfig(name: string): { target: Mistral4PresetName; draft: Mistral4Config } {
  if (!isEaglePresetName(name)) {
    throw new Error(`unknown draft preset "${name}"; presets: ${eaglePresetNames().join(", ")} (or pass a directory)`);
  }
  const target = name.slice(0, -"-eagle".length) as Mistral4PresetName;
  return { target, draft: eagleConfig(presetConfig(target), PRESET_LAYERS[target]) };
}

/**
 * Checks that `draft` can run on `target`'s hidden states, embedding and head: same hidden size and vocabulary (a
 * `CheckpointError` naming both values otherwise), and that it is a draft at all.
 */
export function checkDraftFits(
  target: Mistral4Config,
  draft: Mistral4Config,
  names: { target: string; draft: string },
): void {
  const bad = (message: string) => {
    throw new CheckpointError({ kind: "bad_config", message, file: names.draft });
  };
  if (!draft.eagle) {
    bad(`--speculative-model ${names.draft}: not an EAGLE draft head (no eagle_linear.weight or fc.weight)`);
  }
  if (draft.hidden_size !== target.hidden_size) {
    bad(
      `--speculative-model ${names.draft}: hidden size ${draft.hidden_size} differs from the target ` +
        `${names.target}'s ${target.hidden_size}; a draft must be made for its target`,
    );
  }
  if (draft.vocab_size !== target.vocab_size) {
    bad(
      `--speculative-model ${names.draft}: vocabulary of ${draft.vocab_size} differs from the target ` +
        `${names.target}'s ${target.vocab_size}; a draft must be made for its target`,
    );
  }
}

/** The draft step's tensors (see {@link buildDraft}). */
export interface EagleIO {
  /** Token ids `i32 [T]`: the token of each row. */
  ids: Tensor;
  /** Rows of `eagle.hidden` each token is conditioned on `i32 [T]`. */
  hiddenRows: Tensor;
  /** Rows of `eagle.hidden` the logits rows' final-norm outputs are written to `i32 [R]` (−1 skips). */
  hiddenOut: Tensor;
  /** Per-layer draft caches (state). */
  caches: Tensor[];
  /** Output `f32 [R, vocab]`. */
  logits: Tensor;
}

/**
 * Declares one draft step: for each token row, `fc(concat(embed(ids), eagle.hidden[hiddenRows]))`, the draft's
 * layers over its own paged caches (`draft.layers.{i}.cache`, the target's block tables and geometry), its final
 * norm; the `logitRows` rows go through the target's head to `logits` and are written back into `eagle.hidden` at
 * `hiddenOut`, so the next chained draft step conditions on them without a read-back. Inputs `pos`, `seq`,
 * `blockTable`, `logitRows` are as in the decoder's step.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { buildDraft, eaglePresetConfig } from "./eagle.ts";
 * import { presetConfig } from "./mistral4.ts";
 * const g = new GraphBuilder();
 * const io = { maxTokens: 8, maxSeqs: 2, numBlocks: 4, blockSize: 16, maxBlocksPerSeq: 2 };
 * buildDraft(g, eaglePresetConfig("tiny-eagle").draft, presetConfig("tiny"), io);
 * ```
 */
export function buildDraft(
  g: GraphBuilder,
  draft: Mistral4Config,
  target: Mistral4Config,
  io: Mistral4IOOptions,
): EagleIO {
  checkBuildable(draft);
  checkDraftFits(target, draft, { target: "target", draft: "draft" });
  const T = sym("T", io.maxTokens), S = sym("S", io.maxSeqs), R = sym("R", io.maxRows ?? io.maxSeqs);
  const [D, V] = [target.hidden_size, target.vocab_size];
  const ids = g.input("ids", [T], "i32");
  const pos = g.input("pos", [T], "i32");
  const seq = g.input("seq", [T], "i32");
  const blockTable = g.input("blockTable", [S, io.maxBlocksPerSeq], "i32");
  const logitRows = g.input("logitRows", [R], "i32");
  const hiddenRows = g.input("hiddenRows", [T], "i32");
  const hiddenOut = g.input("hiddenOut", [R], "i32");
  const store = g.state(EAGLE_HIDDEN, [io.maxTokens, D], "f32");

  // The target's embedding, as the target declares it (so one buffer serves both graphs).
  const embed = g.weight("embed", [V, D], target.dtype);
  const e = embedding(g, ids, embed, { dtype: "f32", name: "draft.embed.out" }); // [T, D]
  const cond = gatherRows(g, store, hiddenRows, { name: "draft.hidden_in" }); // [T, D]
  const fcIn = concat(g, [e, cond], { name: "draft.fc_in" }); // [T, 2D]
  const fc = g.weight(`${DRAFT_PREFIX}eagle.fc`, [D, 2 * D], linearDtype(draft, io.linearDtype, "attention"));
  let h = matmul(g, fcIn, fc, { name: "draft.fc" }); // [T, D]
  const layers = decoderLayers(g, h, draft, {
    prefix: `${DRAFT_PREFIX}layers`,
    io,
    batch: { pos, seq, blockTable },
    layerBase: target.num_hidden_layers,
  });
  h = layers.h;
  const hn = norm(g, h, {
    weight: `${DRAFT_PREFIX}norm`,
    dim: D,
    dtype: draft.dtype,
    eps: draft.rms_norm_eps,
    name: "draft.norm.out",
  });
  const last = gatherRows(g, hn, logitRows, { name: "draft.last_hidden" }); // [R, D]
  writeRows(g, store, hiddenOut, last, { name: "draft.hidden_rows" });
  // The target's head, declared exactly as the target's graph declares it.
  const head = target.tie_word_embeddings
    ? embed
    : g.weight("lm_head", [V, D], headDtype(target, io.linearDtype, io.headDtype));
  const logits = matmul(g, last, head, { name: "draft.logits" }); // [R, V]
  g.output("logits", logits);
  return { ids, hiddenRows, hiddenOut, caches: layers.caches, logits };
}
