/**
 * The engine's image encodes: which sequences' images are being encoded, their image-store rows, and how much
 * encoder work each engine step carries. A sequence starts its encode at its first step whose chunk still has
 * image tokens ahead (it takes its store rows then, or waits for them); its prefill may run up to, not into, its
 * first image token until the encode is done. Encodes run first in first out, a unit at a time (see
 * `engine/vision_job.ts`), and each engine step runs units until the next one would pass `flopsPerStep` (at
 * least one), so a large picture is encoded over many steps while the other sequences keep decoding.
 *
 * Why FLOPs: the budget must not depend on timing (the same requests cut the same way on any machine, and tests
 * can count on it), and FLOPs are what the ops already report. The default is one decoded token's FLOPs: a step
 * then carries at most about one more token of arithmetic for the encoder; decode is bound by memory bandwidth
 * and the encoder by arithmetic, so on hardware near its peak that costs less time than the decode itself.
 *
 * @example
 * ```ts
 * // const encodes = new ImageEncodes({ model, flopsPerStep: model.decodeFlops });
 * // encodes.start(chunks); await encodes.advance(fail); chunks = chunks.map((c) => encodes.limit(c)) …
 * ```
 *
 * @module
 */

import type { Model } from "./model.ts";
import type { Chunk } from "./batching.ts";
import type { Sequence } from "./sequence.ts";
import { ImageStoreRows } from "./image_store.ts";
import type { ImageJob } from "./vision_job.ts";

/** Options of {@link ImageEncodes}. */
export interface ImageEncodesOptions {
  /** The model (its image store's rows, its encoder). */
  model: Model;
  /** Encoder FLOPs per engine step (at least one unit runs when any encode is pending). */
  flopsPerStep: number;
}

/** Image encodes in progress and the image store's rows (see the module doc). */
export class ImageEncodes {
  /** The store's rows, handed out per sequence. */
  readonly store: ImageStoreRows;
  /** Encoder FLOPs per engine step. */
  readonly flopsPerStep: number;
  /** Images whose vectors are in the store since start. */
  imagesEncoded = 0;
  /** Encoder units run since start. */
  unitsRun = 0;
  /** Steps a sequence's prefill stopped short of its images because the store had no room for them. */
  storeWaits = 0;
  readonly #model: Model;
  /** Sequences whose images are being encoded, first in first out. */
  readonly #jobs = new Map<Sequence, ImageJob>();

  /** No encodes yet; every store row free. */
  constructor(o: ImageEncodesOptions) {
    if (!(o.flopsPerStep > 0)) throw new RangeError(`vision: flopsPerStep ${o.flopsPerStep} must be > 0`);
    this.#model = o.model;
    this.store = new ImageStoreRows(o.model.limits.imageStoreRows);
    this.flopsPerStep = o.flopsPerStep;
  }

  /** Sequences whose images are being encoded now. */
  get encoding(): number {
    return this.#jobs.size;
  }

  /**
   * Starts the encode of each chunk's sequence whose images are still ahead and not started: takes its store rows
   * (or counts a wait) and queues its job.
   */
  start(chunks: readonly Chunk[]): void {
    for (const { seq, start } of chunks) {
      if (!seq.needsImages(start, Infinity)) continue;
      const at = this.store.take(seq.imageRows);
      if (at < 0) {
        this.storeWaits++;
        continue;
      }
      seq.imageStart = at;
      // The images follow one another in the store.
      let row = at;
      const starts = seq.images.map((im) => (row += im.positions.length) - im.positions.length);
      this.#jobs.set(seq, this.#model.imageJob(seq.images, { starts, flopsPerUnit: this.flopsPerStep }));
    }
  }

  /**
   * Runs this step's encoder units: first in first out, until the next unit would pass the budget (one at least).
   * A failing encode fails its sequence only (`fail`), and a cancelled one is dropped.
   */
  async advance(fail: (seq: Sequence, error: unknown) => void): Promise<void> {
    let left = this.flopsPerStep, ran = false;
    for (const [seq, job] of this.#jobs) {
      while (!job.done && (!ran || job.nextFlops <= left)) {
        try {
          left -= await job.runNext();
        } catch (e) {
          this.#jobs.delete(seq);
          fail(seq, e);
          break;
        }
        ran = true;
        this.unitsRun++;
      }
      if (!job.done) return; // out of budget: the rest wait their turn
      if (this.#jobs.delete(seq)) this.imagesEncoded += seq.images.length; // not if cancelled meanwhile
    }
  }

  /**
   * `chunk` cut before its sequence's first image token whose vector is not ready (null when nothing of it can
   * run yet); the chunk itself when its images are ready or behind it.
   */
  limit(chunk: Chunk): Chunk | null {
    const { seq, start, count } = chunk;
    if (seq.images.length === 0 || (seq.imageStart !== null && !this.#jobs.has(seq))) return chunk;
    let first = Infinity;
    for (const im of seq.images) for (const p of im.positions) if (p >= start && p < first) first = p;
    if (first >= start + count) return chunk;
    return first > start ? { seq, start, count: first - start, samples: false } : null;
  }

  /** Gives a sequence's store rows back and drops its encode (finished, failed, cancelled or preempted). */
  release(seq: Sequence): void {
    const job = this.#jobs.get(seq);
    if (job) {
      job.cancel();
      this.#jobs.delete(seq);
    }
    if (seq.imageStart === null) return;
    this.store.give(seq.imageStart, seq.imageRows);
    seq.imageStart = null;
  }
}
