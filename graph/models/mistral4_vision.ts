/**
 * The Mistral 4 family's vision graphs (MODEL.md §3.2–4): {@link buildVision}, the tower and projector over a batch
 * of images in one graph, and {@link buildVisionStage}, the same computation cut into stages that each run a few
 * rows of the batch, so an engine can interleave a large image's encoder with its decoding steps. Stage graphs
 * share the batch's hidden state, the current block's keys and values, and the image store as state tensors (one
 * buffer each, on the backend), so no activation goes through the host between stages.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { buildVisionStage, presetConfig } from "./mistral4.ts";
 * const g = new GraphBuilder();
 * buildVisionStage(g, presetConfig("tiny"), { maxPatches: 64, maxRows: 16, stage: { kind: "layer", layer: 0 } });
 * // inputs rows [Q], pos [Q, 2], segment [P]; state vision.hidden, vision.keys, vision.values
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import { sym } from "../ir.ts";
import { gatherRows } from "../../ops/gather_rows.ts";
import { writeRows } from "../../ops/write_rows.ts";
import { projector } from "../blocks/projector.ts";
import {
  layerKeysValues,
  layerRows,
  patchEmbed,
  visionEncoder,
  type VisionEncoderOptions,
} from "../blocks/vision_encoder.ts";
import type { Mistral4Config, Mistral4VisionConfig } from "./mistral4_config.ts";

/** Sizes of the vision graph: max patches per run (symbol `P`; merged tokens `M` = P / merge²). */
export interface Mistral4VisionIOOptions {
  maxPatches: number;
  /**
   * Rows of the image store (the step graph's `imageStoreRows`): adds input `slots i32 [M]` and writes each
   * token's vector into the state `image_store` at its slot, where the step graph reads it.
   */
  imageStoreRows?: number;
}

/** The vision graph's tensors (inputs as `engine/vision.ts` `visionBatch` makes them; output `features`). */
export interface Mistral4VisionIO {
  /** Unfolded patches `f32 [P, C·p·p]`. */
  patches: Tensor;
  /** (row, col) of each patch `i32 [P, 2]`. */
  pos: Tensor;
  /** Image of each patch `i32 [P]`: attention is block-diagonal over it. */
  segment: Tensor;
  /** Patch rows of each merged token `i32 [M, merge²]`. */
  mergeIndex: Tensor;
  /** Output: one text-width vector per token-grid cell `f32 [M, hidden_size]`. */
  features: Tensor;
  /** Image-store rows of the vectors `i32 [M]` (with `imageStoreRows`). */
  slots?: Tensor;
}

/**
 * Declares the vision tower and projector (MODEL.md §3.2–4) for a batch of images and marks output `features`.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { buildVision, presetConfig } from "./mistral4.ts";
 * const g = new GraphBuilder();
 * buildVision(g, presetConfig("tiny"), { maxPatches: 64 }); // features [M, 64]
 * ```
 */
export function buildVision(g: GraphBuilder, config: Mistral4Config, io: Mistral4VisionIOOptions): Mistral4VisionIO {
  const v = visionOf(config);
  const k = v.spatial_merge_size ** 2;
  if (io.maxPatches % k !== 0) throw new Error(`mistral4: maxPatches ${io.maxPatches} is not a multiple of ${k}`);
  const P = sym("P", io.maxPatches), M = sym("M", io.maxPatches / k);
  const patches = g.input("patches", [P, v.num_channels * v.patch_size ** 2], "f32");
  const pos = g.input("pos", [P, 2], "i32");
  const segment = g.input("segment", [P], "i32");
  const mergeIndex = g.input("mergeIndex", [M, k], "i32");
  const encoded = visionEncoder(g, { patches, pos, segment }, encoderOptions(config));
  const features = project(g, config, encoded, mergeIndex);
  if (!io.imageStoreRows) return { patches, pos, segment, mergeIndex, features };
  const slots = g.input("slots", [M], "i32");
  store(g, config, io.imageStoreRows, slots, features);
  return { patches, pos, segment, mergeIndex, features, slots };
}

/**
 * One stage of the encoder run a few rows at a time, in this order for a batch of P patches: `embed` (patch rows
 * → the hidden state), then for each block `keys` (rows' keys and values) over every row before `layer` (rows'
 * queries against all the block's keys, then the MLP, written back to the hidden state), then `project` (merged
 * tokens → vectors).
 */
export type VisionStage =
  | { kind: "embed" }
  | { kind: "keys"; layer: number }
  | { kind: "layer"; layer: number }
  | { kind: "project" };

/** Sizes of a stage graph: the largest batch (the state's rows) and rows per run (symbol `Q`, `M` tokens). */
export interface Mistral4VisionStageOptions extends Mistral4VisionIOOptions {
  /** Patch rows per run (the max of `Q`; `project` runs up to `maxRows / merge²` tokens). */
  maxRows: number;
  /** Which stage. */
  stage: VisionStage;
}

/**
 * Declares one stage of the encoder (see {@link VisionStage}); every stage shares the state `vision.hidden
 * [maxPatches, hidden]`, `vision.keys` and `vision.values` `[maxPatches, heads, head_dim]` (the current block's).
 * Inputs by stage: `embed` `patches f32 [Q, C·p·p]`, `rows i32 [Q]` (their batch rows); `keys` `rows`, `pos i32
 * [Q, 2]`; `layer` `rows`, `pos`, `segment i32 [P]` (every patch's image: P is the batch); `project` `patchRows
 * i32 [Q]` (the batch rows of the tokens' patches), `mergeIndex i32 [M, merge²]` (into `patchRows`), `slots i32
 * [M]` (with `imageStoreRows`). Outputs: the state each stage writes (`hidden`, or `keys` and `values`: they have
 * buffers of their own, so nothing more is allocated), or `features [M, hidden_size]`.
 */
export function buildVisionStage(g: GraphBuilder, config: Mistral4Config, io: Mistral4VisionStageOptions): void {
  const v = visionOf(config), o = encoderOptions(config), st = io.stage;
  const k = v.spatial_merge_size ** 2;
  if (io.maxRows < k || io.maxRows > io.maxPatches) {
    throw new Error(`mistral4: maxRows ${io.maxRows} outside ${k}..${io.maxPatches}`);
  }
  const Q = sym("Q", io.maxRows);
  const state = (name: string, shape: number[]) => g.state(`vision.${name}`, [io.maxPatches, ...shape], "f32");
  const hidden = state("hidden", [o.hidden]);
  if (st.kind === "project") {
    const M = sym("M", Math.floor(io.maxRows / k));
    const patchRows = g.input("patchRows", [Q], "i32"), mergeIndex = g.input("mergeIndex", [M, k], "i32");
    const x = gatherRows(g, hidden, patchRows, { name: "vision.out_rows" }); // [Q, Hv]
    const features = project(g, config, x, mergeIndex);
    if (io.imageStoreRows) {
      const imageStore = g.state("image_store", [io.imageStoreRows, config.hidden_size], "f32");
      writeRows(g, imageStore, g.input("slots", [M], "i32"), features, { name: "store_images" });
    }
    return;
  }
  const rows = g.input("rows", [Q], "i32");
  if (st.kind === "embed") {
    const patches = g.input("patches", [Q, v.num_channels * v.patch_size ** 2], "f32");
    writeRows(g, hidden, rows, patchEmbed(g, patches, o), { name: "vision.hidden_rows" });
    g.output("hidden", hidden);
    return;
  }
  const pos = g.input("pos", [Q, 2], "i32");
  const h = gatherRows(g, hidden, rows, { name: `vision.layers.${st.layer}.in_rows` }); // [Q, Hv]
  const keys = state("keys", [o.heads, o.headDim]), values = state("values", [o.heads, o.headDim]);
  if (st.kind === "keys") {
    const kv = layerKeysValues(g, h, pos, st.layer, o);
    writeRows(g, keys, rows, kv.k, { name: `vision.layers.${st.layer}.keys_rows` });
    writeRows(g, values, rows, kv.v, { name: `vision.layers.${st.layer}.values_rows` });
    g.output("keys", keys);
    g.output("values", values);
    return;
  }
  const segment = g.input("segment", [sym("P", io.maxPatches)], "i32");
  const out = layerRows(g, h, { pos, rows, segment, k: keys, v: values }, st.layer, o);
  writeRows(g, hidden, rows, out, { name: `vision.layers.${st.layer}.out_rows` });
  g.output("hidden", hidden);
}

function visionOf(config: Mistral4Config): Mistral4VisionConfig {
  const v = config.vision_config;
  if (!v) throw new Error("mistral4: this model has no vision_config");
  if (v.multimodal_projector_bias) throw new Error("mistral4: projector biases are not supported yet");
  return v;
}

function encoderOptions(config: Mistral4Config): VisionEncoderOptions {
  const v = visionOf(config);
  return {
    hidden: v.hidden_size,
    layers: v.num_hidden_layers,
    heads: v.num_attention_heads,
    headDim: v.head_dim,
    width: v.intermediate_size,
    patchSize: v.patch_size,
    channels: v.num_channels,
    ropeTheta: v.rope_theta,
    eps: v.layer_norm_eps,
    dtype: config.dtype,
  };
}

/** The projector over encoder rows `x` (MODEL.md §3.4), marked as output `features`. */
function project(g: GraphBuilder, config: Mistral4Config, x: Tensor, mergeIndex: Tensor): Tensor {
  const v = visionOf(config);
  // transformers' projector norm takes the text rms_norm_eps (Mistral's own code uses 1e-5; the gap is negligible).
  const features = projector(g, x, mergeIndex, {
    visionHidden: v.hidden_size,
    hidden: config.hidden_size,
    merge: v.spatial_merge_size,
    eps: config.rms_norm_eps,
    dtype: config.dtype,
  });
  g.output("features", features);
  return features;
}

/** Writes `features` into the image store at `slots` (output `stored`). */
function store(g: GraphBuilder, config: Mistral4Config, rows: number, slots: Tensor, features: Tensor): void {
  const imageStore = g.state("image_store", [rows, config.hidden_size], "f32");
  g.output("stored", writeRows(g, imageStore, slots, features, { name: "store_images" }));
}
