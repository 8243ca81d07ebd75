/**
 * One encode of a prompt's images, cut into units the engine runs between its steps. For each batch of images (≤
 * the largest batch's patches), the units are, in order: the patch embedding over row ranges of the batch, then
 * for each encoder block its keys and values over row ranges and then the block itself over row ranges (the
 * block's attention is non-causal: all of its keys are written before any query row runs; each query row then
 * finishes the block alone), then the projector over ranges of merged tokens, which writes the vectors into the
 * image store (or reads them back). Every unit runs one stage graph on its rows; the batch's hidden state, keys and
 * values stay on the backend between units (state tensors), so units of one batch may be spread over many engine
 * steps. Units are sized by a FLOP budget (`flopsPerUnit`), so how a picture is cut does not depend on timing.
 *
 * The stage graphs share one hidden state, so one batch at a time: a job holds the encoder from its batch's first
 * unit to its last (or until cancelled), and another job's batch cannot start meanwhile.
 *
 * @example
 * ```ts
 * // const job = model.imageJob(images, { starts: [0], flopsPerUnit: 5e7 });
 * // while (!job.done) await job.runNext(); // each call runs one unit
 * ```
 *
 * @module
 */

import type { Graph } from "../graph/ir.ts";
import { graphFlops } from "../graph/cost.ts";
import type { Mistral4Config, VisionStage } from "../graph/models/mistral4.ts";
import type { PlanExecutor } from "../runtime/plan_executor.ts";
import { type VisionBatch, visionBatch, type VisionImage } from "./vision.ts";

/**
 * Fewest rows a unit gets, unless its stage has fewer (then one unit takes them all). A backend may pick kernels by
 * row count (wasm's matmul sums in another order at ≤ 8 rows), and the vectors must not depend on the budget: an
 * equal split of ranges of at least 18 rows leaves every unit ≥ 9 rows, as the one-graph encoder has for any batch
 * over 8 patches.
 */
export const MIN_UNIT_ROWS = 18;

/** A stage graph and the executor that runs it (planned and loaded with the model). */
export interface StageRun {
  stage: VisionStage;
  graph: Graph;
  executor: PlanExecutor;
}

/** What a job runs on: the model's stage executors and the lock on the state they share. */
export interface StagedEncoder {
  readonly config: Mistral4Config;
  /** Stage graphs in run order: embed, then keys and layer per block, then project. */
  readonly stages: readonly StageRun[];
  /** Patches of the largest batch (the shared state's rows). */
  readonly maxPatches: number;
  /** Patch rows per unit at most (the stage graphs' `Q`). */
  readonly maxRows: number;
  /** Rows of the image store (0: none). */
  readonly storeRows: number;
  /** Takes the shared state for `job`; throws when another job's batch holds it. */
  lock(job: VisionJob): void;
  /** Gives the shared state back (no-op unless `job` holds it). */
  unlock(job: VisionJob): void;
}

/** Options of a {@link VisionJob}. */
export interface VisionJobOptions {
  /** Image-store row of each image's first vector: the vectors are stored there; null reads them back instead. */
  starts: readonly number[] | null;
  /** The FLOPs a unit aims at (rows per unit follow, within MIN_UNIT_ROWS and the graphs' rows); default: largest. */
  flopsPerUnit?: number;
}

/**
 * An encode of some images in units (`Model.imageJob`): run them one at a time with `runNext` until `done`.
 *
 * @example
 * ```ts
 * // const job = model.imageJob([image], { starts: null, flopsPerUnit: 1e8 });
 * // while (!job.done) await job.runNext();
 * // const [vectors] = job.features;
 * ```
 */
export interface ImageJob {
  /** True once every unit has run (or the job was cancelled). */
  readonly done: boolean;
  /** FLOPs of the next unit (0 when done). */
  readonly nextFlops: number;
  /** Units run so far. */
  readonly unitsRun: number;
  /** Runs the next unit; resolves with its FLOPs. A failure leaves the job cancelled. */
  runNext(): Promise<number>;
  /** Stops here: no more units run, and the encoder is free for other jobs. */
  cancel(): void;
  /** One `f32 [rows·cols, hidden_size]` array per image, once done (`starts: null` only). */
  readonly features: Float32Array[];
}

/** One unit: stage `stage` over rows (tokens for `project`) `[from, to)` of the current batch. */
type Unit = { stage: number; from: number; to: number; flops: number };

/** The encode of some images, unit by unit (see the module doc). */
export class VisionJob implements ImageJob {
  readonly #enc: StagedEncoder;
  readonly #images: readonly VisionImage[];
  readonly #starts: readonly number[] | null;
  readonly #flopsPerUnit: number;
  readonly #batches: [number, number][] = []; // image ranges
  #b = 0;
  #batch: VisionBatch | null = null;
  #slots: Int32Array | null = null;
  #units: Unit[] = [];
  #u = 0;
  #out: Float32Array | null = null; // the batch's vectors when read back
  readonly #features: Float32Array[] = [];
  #cancelled = false;
  #run = 0;

  /** Use `VisionRunner.job` (or `Model.imageJob`). */
  constructor(enc: StagedEncoder, images: readonly VisionImage[], o: VisionJobOptions) {
    this.#enc = enc;
    this.#images = images;
    this.#starts = o.starts;
    this.#flopsPerUnit = o.flopsPerUnit ?? Infinity;
    if (!(this.#flopsPerUnit > 0)) throw new RangeError(`vision: flopsPerUnit ${o.flopsPerUnit} must be > 0`);
    const v = enc.config.vision_config!, perImage = (im: VisionImage) => patchesOf(im, v.spatial_merge_size);
    for (let i = 0; i < images.length;) {
      let j = i, patches = 0;
      while (j < images.length && patches + perImage(images[j]) <= enc.maxPatches) patches += perImage(images[j++]);
      if (j === i) throw new Error(`image ${i}: ${perImage(images[i])} patches exceed ${enc.maxPatches}`);
      this.#batches.push([i, j]);
      i = j;
    }
  }

  /** Units run so far. */
  get unitsRun(): number {
    return this.#run;
  }

  /** True once every unit has run (or the job was cancelled). */
  get done(): boolean {
    return this.#cancelled || this.#b >= this.#batches.length;
  }

  /** FLOPs of the next unit (0 when done). */
  get nextFlops(): number {
    if (this.done) return 0;
    this.#plan();
    return this.#units[this.#u].flops;
  }

  /** Runs the next unit; resolves with its FLOPs. A failure leaves the job cancelled. */
  async runNext(): Promise<number> {
    if (this.done) throw new Error("vision: the job is done");
    this.#plan();
    const unit = this.#units[this.#u];
    if (this.#u === 0) this.#enc.lock(this);
    try {
      await this.#runUnit(unit);
    } catch (e) {
      this.cancel();
      throw e;
    }
    if (this.#cancelled) return unit.flops;
    this.#run++;
    if (++this.#u === this.#units.length) this.#finishBatch();
    return unit.flops;
  }

  /** Stops here: no more units run, and the encoder is free for other jobs. */
  cancel(): void {
    this.#cancelled = true;
    this.#enc.unlock(this);
  }

  /** One `f32 [rows·cols, hidden_size]` array per image, once done (`starts: null` only). */
  get features(): Float32Array[] {
    if (!this.done || this.#cancelled || this.#starts) throw new Error("vision: no features to read back");
    return this.#features;
  }

  /** Plans the current batch's units, once. */
  #plan(): void {
    if (this.#batch) return;
    const [i, j] = this.#batches[this.#b], enc = this.#enc, v = enc.config.vision_config!;
    const geo = { patchSize: v.patch_size, mergeSize: v.spatial_merge_size, channels: v.num_channels };
    const batch = this.#batch = visionBatch(this.#images.slice(i, j), geo);
    const k = geo.mergeSize ** 2, P = batch.numPatches, M = P / k;
    if (enc.storeRows) {
      // Each vector's store row, or −1 (written nowhere) when reading the features back.
      const slots = this.#slots = new Int32Array(M).fill(-1);
      if (this.#starts) {
        let o = 0;
        batch.tokens.forEach((n, t) => {
          for (let r = 0; r < n; r++) slots[o + r] = this.#starts![i + t] + r;
          o += n;
        });
      }
    }
    if (!this.#starts) this.#out = new Float32Array(M * enc.config.hidden_size);
    this.#units = [];
    enc.stages.forEach(({ stage, graph }, s) => {
      const tokens = stage.kind === "project";
      const n = tokens ? M : P, cap = tokens ? Math.floor(enc.maxRows / k) : enc.maxRows;
      const vars = (rows: number) => ({ Q: tokens ? rows * k : rows, M: rows, P });
      const one = graphFlops(graph, vars(1)), perRow = graphFlops(graph, vars(2)) - one;
      const want = Math.floor(this.#flopsPerUnit / Math.max(perRow, 1));
      const parts = Math.ceil(n / Math.min(cap, Math.max(MIN_UNIT_ROWS, want)));
      // Equal parts (the first n mod parts one row longer).
      for (let p = 0, from = 0; p < parts; p++) {
        const to = from + Math.floor(n / parts) + (p < n % parts ? 1 : 0);
        this.#units.push({ stage: s, from, to, flops: one + (to - from - 1) * perRow });
        from = to;
      }
    });
    this.#u = 0;
  }

  async #runUnit(unit: Unit): Promise<void> {
    const batch = this.#batch!, { stage, executor } = this.#enc.stages[unit.stage];
    const { from, to } = unit, v = this.#enc.config.vision_config!;
    const rows = Int32Array.from({ length: to - from }, (_, r) => from + r);
    if (stage.kind === "project") {
      const k = v.spatial_merge_size ** 2;
      const inputs: Record<string, Int32Array> = {
        patchRows: batch.mergeIndex.subarray(from * k, to * k),
        mergeIndex: Int32Array.from({ length: (to - from) * k }, (_, r) => r),
      };
      if (this.#slots) inputs.slots = this.#slots.subarray(from, to);
      const out = await executor.run({ inputs, outputs: this.#out ? ["features"] : [] });
      this.#out?.set(out.features as Float32Array, from * this.#enc.config.hidden_size);
      return;
    }
    const pos = batch.pos.subarray(2 * from, 2 * to), width = batch.patches.length / batch.numPatches;
    const inputs: Record<string, ArrayBufferView> = stage.kind === "embed"
      ? { rows, patches: batch.patches.subarray(from * width, to * width) }
      : stage.kind === "keys"
      ? { rows, pos }
      : { rows, pos, segment: batch.segment };
    await executor.run({ inputs, outputs: [] });
  }

  #finishBatch(): void {
    const batch = this.#batch!, D = this.#enc.config.hidden_size;
    if (this.#out) {
      let o = 0;
      for (const n of batch.tokens) this.#features.push(this.#out.slice(o * D, (o + n) * D)), o += n;
    }
    this.#enc.unlock(this);
    this.#batch = this.#slots = this.#out = null;
    this.#units = [];
    this.#b++;
  }
}

/** Patches of one image: `rows · cols · merge²`. */
function patchesOf(im: VisionImage, merge: number): number {
  return im.grid.rows * im.grid.cols * merge * merge;
}
