/**
 * The model's vision encoder at run time: the stage graphs' executors (planned and loaded with the model), the lock
 * on the state they share, and encodes cut into units ({@link VisionJob}).
 *
 * @example
 * ```ts
 * // const runner = new VisionRunner({ config, stages, imageStoreRows }); // stages: visionStageGraphs + executors
 * // const [vectors] = await runner.encode([image]);
 * ```
 *
 * @module
 */

import type { Mistral4Config } from "../graph/models/mistral4.ts";
import { maxImagePatches, type VisionImage } from "./vision.ts";
import { type StagedEncoder, type StageRun, VisionJob, type VisionJobOptions } from "./vision_job.ts";

/**
 * Runs the encoder's stage graphs (planned and loaded with the model, over the model's backends, sharing the step
 * plan's residency and so its image store): {@link VisionRunner.job} cuts an encode into units for the engine to
 * run between steps; `store` and `encode` run one to the end (the vectors into the store on the backend, or read
 * back: tests, tools).
 */
export class VisionRunner implements StagedEncoder {
  /** The model's config. */
  readonly config: Mistral4Config;
  /** Stage graphs in run order, with their executors. */
  readonly stages: readonly StageRun[];
  /** Rows of the image store (0: none). */
  readonly storeRows: number;
  /** Patches of the largest batch (symbol `P`). */
  readonly maxPatches: number;
  /** Patch rows per unit at most. */
  readonly maxRows: number;
  #holder: VisionJob | null = null;

  /** `stages` from `visionStageGraphs(…, { imageStoreRows })`, each with its executor. */
  constructor(init: { config: Mistral4Config; stages: readonly StageRun[]; imageStoreRows: number }) {
    this.config = init.config;
    this.stages = init.stages;
    this.storeRows = init.imageStoreRows;
    this.maxPatches = maxImagePatches(init.config);
    const q = init.stages[0].graph.inputs.find((i) => i.name === "rows")!.shape[0];
    this.maxRows = typeof q === "number" ? q : q.max;
  }

  /** An encode of `images`, unit by unit (see `VisionJob`); checks the store rows when storing. */
  job(images: readonly VisionImage[], o: VisionJobOptions): VisionJob {
    if (o.starts) this.#checkStarts(images, o.starts);
    return new VisionJob(this, images, o);
  }

  /** One `f32 [rows·cols, hidden_size]` array per image, in order. */
  async encode(images: readonly VisionImage[]): Promise<Float32Array[]> {
    const job = this.job(images, { starts: null });
    while (!job.done) await job.runNext();
    return job.features;
  }

  /** Writes image `i`'s vectors into the image store at rows `starts[i]`…; nothing is read back. */
  async store(images: readonly VisionImage[], starts: readonly number[]): Promise<void> {
    const job = this.job(images, { starts });
    while (!job.done) await job.runNext();
  }

  /** Takes the stages' shared state (hidden rows, keys, values) for `job`'s batch. */
  lock(job: VisionJob): void {
    if (this.#holder && this.#holder !== job) {
      throw new Error("vision: another encode holds the encoder mid-batch; run it to the end or cancel it first");
    }
    this.#holder = job;
  }

  /** Gives the shared state back. */
  unlock(job: VisionJob): void {
    if (this.#holder === job) this.#holder = null;
  }

  #checkStarts(images: readonly VisionImage[], starts: readonly number[]): void {
    const rows = this.storeRows;
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
  }

  /** The backends the stage graphs run on, most nodes first: `wasm`, or e.g. `webgpu,wasm` after a fallback. */
  get backendName(): string {
    const count = new Map<string, number>();
    for (const { executor } of this.stages) {
      for (const s of executor.plan.segments) count.set(s.backend, (count.get(s.backend) ?? 0) + s.nodes.length);
    }
    return [...count].sort((a, b) => b[1] - a[1]).map(([n]) => n).join(",");
  }

  /** Frees the stage graphs' buffers (their weights, state and the store live in the shared residency). */
  dispose(): void {
    for (const { executor } of this.stages) executor.dispose();
  }
}
