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
import type { Backend } from "../runtime/backend.ts";
import { PlanExecutor, type WeightSources } from "../runtime/plan_executor.ts";
import { schedule } from "../runtime/schedule.ts";

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
 * Runs the vision graph (encoder + projector) for batches of images. Built on first use and scheduled like the step
 * graph, over the model's backends in their order (an op the first cannot run falls back, reported through `log`);
 * its weights stream from the model's sources then.
 */
export class VisionRunner {
  readonly #config: Mistral4Config;
  readonly #family: ModelFamily;
  readonly #backends: readonly Backend[];
  readonly #weights: WeightSources;
  readonly #log: (line: string) => void;
  #executor: PlanExecutor | null = null;
  /** Max patches per run (symbol `P`). */
  readonly maxPatches: number;

  /** `weights`: sources of the vision weights (`vision.*`, `projector.*`), read when the graph is first built. */
  constructor(init: {
    config: Mistral4Config;
    family: ModelFamily;
    backends: readonly Backend[];
    weights: WeightSources;
    log?: (line: string) => void;
  }) {
    this.#config = init.config;
    this.#family = init.family;
    this.#backends = init.backends;
    this.#weights = init.weights;
    this.#log = init.log ?? (() => {});
    this.maxPatches = maxImagePatches(init.config);
  }

  /** One `f32 [rows·cols, hidden_size]` array per image, in order; images are packed into runs of ≤ maxPatches. */
  async encode(images: readonly VisionImage[]): Promise<Float32Array[]> {
    const v = this.#config.vision_config!;
    const geo = { patchSize: v.patch_size, mergeSize: v.spatial_merge_size, channels: v.num_channels };
    const perImage = (im: VisionImage) => im.grid.rows * im.grid.cols * geo.mergeSize ** 2;
    const out: Float32Array[] = [];
    for (let i = 0; i < images.length;) {
      let j = i, patches = 0;
      while (j < images.length && patches + perImage(images[j]) <= this.maxPatches) patches += perImage(images[j++]);
      if (j === i) throw new Error(`image ${i}: ${perImage(images[i])} patches exceed ${this.maxPatches}`);
      const batch = visionBatch(images.slice(i, j), geo);
      const ex = await this.#ensure();
      const res = await ex.run({
        inputs: { patches: batch.patches, pos: batch.pos, segment: batch.segment, mergeIndex: batch.mergeIndex },
      });
      const features = res.features as Float32Array, D = this.#config.hidden_size;
      let o = 0;
      for (const n of batch.tokens) {
        out.push(features.slice(o * D, (o + n) * D));
        o += n;
      }
      i = j;
    }
    return out;
  }

  /**
   * The backends the vision graph runs on, most nodes first (null until the first `encode` builds it): `wasm`, or
   * e.g. `webgpu,wasm` when some vision op fell back.
   */
  get backendName(): string | null {
    if (!this.#executor) return null;
    const count = new Map<string, number>();
    for (const s of this.#executor.plan.segments) count.set(s.backend, (count.get(s.backend) ?? 0) + s.nodes.length);
    return [...count].sort((a, b) => b[1] - a[1]).map(([n]) => n).join(",");
  }

  /** Frees the vision graph's buffers. */
  dispose(): void {
    this.#executor?.dispose();
    this.#executor = null;
  }

  async #ensure(): Promise<PlanExecutor> {
    if (this.#executor) return this.#executor;
    const g = new GraphBuilder();
    this.#family.buildVision(g, this.#config, { maxPatches: this.maxPatches });
    const graph = g.build();
    const plan = schedule(graph, this.#backends, {});
    for (const f of plan.fallbacks) this.#log(`vision fallback: ${f.op} "${f.name}" ${f.from} → ${f.to} (${f.reason})`);
    this.#executor = await PlanExecutor.create(graph, plan, this.#backends, { weights: this.#weights });
    return this.#executor;
  }
}

/** An image of a prompt: the prompt positions of its `[IMG]` tokens and their vectors `[positions, D]`. */
export type PromptImage = { positions: readonly number[]; features: Float32Array };

/**
 * The image inputs of a prefill chunk covering prompt positions `[from, to)`, placed at step token
 * `stepOffset + (position − from)`: `imageRows` and row-major `imageFeatures` for `Model.step`.
 */
export function chunkImageInputs(
  images: readonly PromptImage[],
  hidden: number,
  from: number,
  to: number,
  stepOffset = 0,
): { imageRows: number[]; imageFeatures: Float32Array } {
  const { imageRows, parts } = chunkImageParts(images, hidden, from, to, stepOffset);
  return { imageRows, imageFeatures: concatVectors(parts, hidden) };
}

/** As {@link chunkImageInputs}, with each row's vector a view into its image's features (no copy yet). */
export function chunkImageParts(
  images: readonly PromptImage[],
  hidden: number,
  from: number,
  to: number,
  stepOffset = 0,
): { imageRows: number[]; parts: Float32Array[] } {
  const imageRows: number[] = [], parts: Float32Array[] = [];
  for (const im of images) {
    im.positions.forEach((p, i) => {
      if (p < from || p >= to) return;
      imageRows.push(stepOffset + p - from);
      parts.push(im.features.subarray(i * hidden, (i + 1) * hidden));
    });
  }
  return { imageRows, parts };
}

/** `hidden`-wide vectors into one row-major array. */
export function concatVectors(parts: readonly Float32Array[], hidden: number): Float32Array {
  const out = new Float32Array(parts.length * hidden);
  parts.forEach((f, i) => out.set(f, i * hidden));
  return out;
}
