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
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import type { ModelFamily } from "../graph/models/mod.ts";
import type { Graph } from "../graph/ir.ts";
import type { PlanExecutor } from "../runtime/plan_executor.ts";

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
 * The vision graph (encoder + projector) of `config` for batches of up to the largest image, writing into an image
 * store of `imageStoreRows` rows when that is set (see `buildVision`).
 */
export function visionGraph(family: ModelFamily, config: Mistral4Config, imageStoreRows: number): Graph {
  const g = new GraphBuilder();
  family.buildVision(g, config, { maxPatches: maxImagePatches(config), imageStoreRows });
  return g.build();
}

/**
 * Runs the vision graph for batches of images on its executor (planned and loaded with the model, over the model's
 * backends, sharing the step plan's residency and so its image store). `store` writes the vectors into the store on
 * the backend (the step graph reads them there); `encode` reads them back instead (tests, tools).
 */
export class VisionRunner {
  readonly #config: Mistral4Config;
  readonly #executor: PlanExecutor;
  readonly #storeRows: number;
  /** Max patches per run (symbol `P`). */
  readonly maxPatches: number;

  /** `executor` runs `visionGraph(…, imageStoreRows)`. */
  constructor(init: { config: Mistral4Config; executor: PlanExecutor; imageStoreRows: number }) {
    this.#config = init.config;
    this.#executor = init.executor;
    this.#storeRows = init.imageStoreRows;
    this.maxPatches = maxImagePatches(init.config);
  }

  /** One `f32 [rows·cols, hidden_size]` array per image, in order; images are packed into runs of ≤ maxPatches. */
  async encode(images: readonly VisionImage[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [], D = this.#config.hidden_size;
    await this.#runs(images, null, (features, tokens) => {
      let o = 0;
      for (const n of tokens) out.push(features!.slice(o * D, (o + n) * D)), o += n;
    });
    return out;
  }

  /** Writes image `i`'s vectors into the image store at rows `starts[i]`…; nothing is read back. */
  async store(images: readonly VisionImage[], starts: readonly number[]): Promise<void> {
    const rows = this.#storeRows;
    if (rows === 0) throw new Error("vision: the model has no image store");
    if (starts.length !== images.length) {
      throw new Error(`vision: ${starts.length} store rows for ${images.length} images`);
    }
    images.forEach((im, i) => {
      const n = im.grid.rows * im.grid.cols;
      if (!(starts[i] >= 0 && starts[i] + n <= rows)) {
        throw new RangeError(`vision: image ${i} (${n} vectors) at store row ${starts[i]} outside 0..${rows}`);
      }
    });
    await this.#runs(images, starts, () => {});
  }

  /** Runs the graph over batches of ≤ maxPatches patches: `starts` null reads the features back, else stores them. */
  async #runs(
    images: readonly VisionImage[],
    starts: readonly number[] | null,
    done: (features: Float32Array | null, tokens: number[]) => void,
  ): Promise<void> {
    const v = this.#config.vision_config!;
    const geo = { patchSize: v.patch_size, mergeSize: v.spatial_merge_size, channels: v.num_channels };
    const perImage = (im: VisionImage) => im.grid.rows * im.grid.cols * geo.mergeSize ** 2;
    for (let i = 0; i < images.length;) {
      let j = i, patches = 0;
      while (j < images.length && patches + perImage(images[j]) <= this.maxPatches) patches += perImage(images[j++]);
      if (j === i) throw new Error(`image ${i}: ${perImage(images[i])} patches exceed ${this.maxPatches}`);
      const batch = visionBatch(images.slice(i, j), geo);
      // Each vector's store row, or −1 (written nowhere) when reading the features back.
      const slots = new Int32Array(batch.tokens.reduce((a, b) => a + b, 0)).fill(-1);
      if (starts) {
        let o = 0;
        batch.tokens.forEach((n, k) => {
          for (let r = 0; r < n; r++) slots[o + r] = starts[i + k] + r;
          o += n;
        });
      }
      const inputs = { patches: batch.patches, pos: batch.pos, segment: batch.segment, mergeIndex: batch.mergeIndex };
      const res = await this.#executor.run({
        inputs: this.#storeRows ? { ...inputs, slots } : inputs,
        outputs: starts ? [] : ["features"],
      });
      done(starts ? null : res.features as Float32Array, batch.tokens);
      i = j;
    }
  }

  /** The backends the vision graph runs on, most nodes first: `wasm`, or e.g. `webgpu,wasm` after a fallback. */
  get backendName(): string {
    const count = new Map<string, number>();
    for (const s of this.#executor.plan.segments) count.set(s.backend, (count.get(s.backend) ?? 0) + s.nodes.length);
    return [...count].sort((a, b) => b[1] - a[1]).map(([n]) => n).join(",");
  }

  /** Frees the vision graph's buffers (its weights and the store live in the shared residency). */
  dispose(): void {
    this.#executor.dispose();
  }
}
