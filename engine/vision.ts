/**
 * Host-side preparation of a batch of images for the vision graph (MODEL.md §3): the 14×14 convolution with
 * stride 14 is a matmul over unfolded patches, so the pixels are unfolded here in the conv weight's (c, ky, kx)
 * order; plus each patch's (row, col) for the 2-D rope, its image (the attention segment), and the patch rows
 * each merged token gathers (`patch_merge`'s index, j = dy·merge + dx).
 *
 * @example
 * ```ts
 * import { visionBatch } from "./vision.ts";
 * const pixels = new Float32Array(3 * 28 * 56); // one image of 1×2 tokens, CHW
 * const b = visionBatch([{ pixels, grid: { rows: 1, cols: 2 } }], { patchSize: 14, mergeSize: 2, channels: 3 });
 * b.patches.length; // 8 patches · 588
 * b.tokens; // [2]
 * ```
 *
 * @module
 */

import { GraphBuilder } from "../graph/builder.ts";
import type { Mistral4Config, VisionStage } from "../graph/models/mistral4.ts";
import type { ModelFamily } from "../graph/models/mod.ts";
import type { Graph } from "../graph/ir.ts";

/** One preprocessed image: normalised CHW pixels of `(patch·merge·rows) × (patch·merge·cols)`, and its grid. */
export type VisionImage = { pixels: Float32Array; grid: { rows: number; cols: number } };

/** Patch geometry (from the vision config). */
export type VisionGeometry = { patchSize: number; mergeSize: number; channels: number };

/** The vision graph's inputs for a batch of images, and the merged-token count of each image. */
export type VisionBatch = {
  /** `[P, channels·patch·patch]`, patches of each image row-major, images in order. */
  patches: Float32Array;
  /** `i32 [P, 2]`: (row, col) of each patch within its image. */
  pos: Int32Array;
  /** `i32 [P]`: index of each patch's image. */
  segment: Int32Array;
  /** `i32 [M, merge²]`: the patch rows merged into each token (tokens row-major per image). */
  mergeIndex: Int32Array;
  /** Patch count P. */
  numPatches: number;
  /** Merged tokens per image (`rows · cols`). */
  tokens: number[];
};

/** Builds the vision graph's inputs for `images`, in order. */
export function visionBatch(images: readonly VisionImage[], geo: VisionGeometry): VisionBatch {
  const { patchSize: p, mergeSize: m, channels: C } = geo;
  const k = C * p * p;
  const numPatches = images.reduce((s, im) => s + im.grid.rows * im.grid.cols * m * m, 0);
  const tokens = images.map((im) => im.grid.rows * im.grid.cols);
  const patches = new Float32Array(numPatches * k);
  const pos = new Int32Array(numPatches * 2), segment = new Int32Array(numPatches);
  const mergeIndex = new Int32Array(tokens.reduce((a, b) => a + b, 0) * m * m);
  let base = 0, t = 0;
  images.forEach((im, s) => {
    const ph = im.grid.rows * m, pw = im.grid.cols * m; // patch grid
    const w = pw * p, h = ph * p;
    if (im.pixels.length !== C * h * w) {
      throw new Error(
        `image ${s}: ${im.pixels.length} pixels for a ${im.grid.rows}×${im.grid.cols} grid (${C}×${h}×${w})`,
      );
    }
    for (let r = 0; r < ph; r++) {
      for (let c = 0; c < pw; c++) {
        const row = base + r * pw + c;
        pos[2 * row] = r;
        pos[2 * row + 1] = c;
        segment[row] = s;
        let o = row * k;
        // (channel, ky, kx): the row-major flattening of the conv weight [hidden, C, p, p].
        for (let ch = 0; ch < C; ch++) {
          for (let ky = 0; ky < p; ky++) {
            const src = ch * h * w + (r * p + ky) * w + c * p;
            patches.set(im.pixels.subarray(src, src + p), o);
            o += p;
          }
        }
      }
    }
    for (let tr = 0; tr < im.grid.rows; tr++) {
      for (let tc = 0; tc < im.grid.cols; tc++, t++) {
        for (let dy = 0; dy < m; dy++) {
          for (let dx = 0; dx < m; dx++) mergeIndex[t * m * m + dy * m + dx] = base + (tr * m + dy) * pw + tc * m + dx;
        }
      }
    }
    base += ph * pw;
  });
  return { patches, pos, segment, mergeIndex, numPatches, tokens };
}

/** Patches of the largest image the config accepts: `(ceil(image_size / (patch·merge)) · merge)²`. */
export function maxImagePatches(config: Mistral4Config): number {
  const v = config.vision_config;
  if (!v) throw new Error("model has no vision_config");
  const side = Math.ceil(v.image_size / (v.patch_size * v.spatial_merge_size)) * v.spatial_merge_size;
  return side * side;
}

/**
 * The whole vision graph (encoder + projector in one graph) of `config` for batches of up to the largest image,
 * writing into an image store of `imageStoreRows` rows when that is set (see `buildVision`). The model runs the
 * encoder by stages ({@link visionStageGraphs}), which give the same vectors; this one is for inspection and tests.
 */
export function visionGraph(family: ModelFamily, config: Mistral4Config, imageStoreRows: number): Graph {
  const g = new GraphBuilder();
  family.buildVision(g, config, { maxPatches: maxImagePatches(config), imageStoreRows });
  return g.build();
}

/** Patch rows a stage unit takes at most (the stage graphs' `Q`): what sizes their arenas. */
export const MAX_UNIT_ROWS = 1024;

/**
 * The stage graphs of `config`'s encoder in run order (embed; keys and layer per block; project), for batches of
 * up to the largest image and units of up to `maxRows` patch rows, the last writing into an image store of
 * `imageStoreRows` rows when that is set (see `buildVisionStage`).
 */
export function visionStageGraphs(
  family: ModelFamily,
  config: Mistral4Config,
  o: { imageStoreRows: number; maxRows?: number },
): { stage: VisionStage; graph: Graph }[] {
  const maxPatches = maxImagePatches(config), layers = config.vision_config!.num_hidden_layers;
  const maxRows = Math.min(maxPatches, o.maxRows ?? MAX_UNIT_ROWS);
  const stages: VisionStage[] = [{ kind: "embed" }];
  for (let layer = 0; layer < layers; layer++) stages.push({ kind: "keys", layer }, { kind: "layer", layer });
  stages.push({ kind: "project" });
  return stages.map((stage) => {
    const g = new GraphBuilder();
    family.buildVisionStage(g, config, { maxPatches, maxRows, imageStoreRows: o.imageStoreRows, stage });
    return { stage, graph: g.build() };
  });
}

/** The name of a stage, for load reports: `embed`, `keys 3`, `layer 3`, `project`. */
export function stageName(stage: VisionStage): string {
  return "layer" in stage ? `${stage.kind} ${stage.layer}` : stage.kind;
}
