/**
 * Sampling on the backend: the engine's half of `Model.sampleStep`. Packs one step's per-row settings (temperature,
 * top-k, top-p, a uniform from each sequence's own seeded generator, and each constrained sequence's allowed-id
 * mask), and takes each sampled id back into the sequence's sampling state. Only `R` token ids leave the backend;
 * the logits never do.
 *
 * Draws match the host sampler's: one uniform per sampled token, only when not greedy, from the same generator,
 * so a seed reproduces the same tokens. Greedy ids equal the host's exactly (argmax over the allowed ids, lowest id
 * on ties); sampled ids agree up to f32 versus f64 rounding at a boundary.
 *
 * @example
 * ```ts
 * // const batch = new BackendSampling(vocab, model.limits.maxRows);
 * // const sampling = batch.pack(seqs, rows);          // before the step: masks filled for constrained rows
 * // const ids = await model.sampleStep(input, sampling);
 * // const token = batch.accept(seq, ids[r]);          // after it: the matcher advanced
 * ```
 *
 * @module
 */

import type { GeneratedToken, SamplingParams } from "./types.ts";
import type { StepSampling } from "./model.ts";
import type { Sequence } from "./sequence.ts";
import { maskWords } from "../ops/sample.ts";

/**
 * Whether the backend's `sample` op implements every setting of `p`: temperature, top-k, top-p and a constraint.
 * Penalties and min-p change logits or cut by a rule it lacks; logprobs need the distribution on the host.
 */
export function samplesOnBackend(p: SamplingParams): boolean {
  return p.minP === 0 && p.presencePenalty === 0 && p.frequencyPenalty === 0 &&
    (p.repetitionPenalty ?? 1) === 1 && p.logprobs === undefined;
}

/** Packs steps for `Model.sampleStep`, reusing one mask buffer of `rows × ceil(vocab / 32)` words. */
export class BackendSampling {
  readonly #words: number;
  readonly #masks: Uint32Array;

  /** Room for `rows` sampled rows over a vocabulary of `vocab` ids. */
  constructor(vocab: number, rows: number) {
    this.#words = maskWords(vocab);
    this.#masks = new Uint32Array(rows * this.#words);
  }

  /**
   * The settings of `rows` logit rows, the first `seqs.length` of them those sequences' (rows past them, which the
   * step computes but nobody reads, are greedy). A constrained sequence's mask is filled here; an unconstrained
   * row uploads none.
   */
  pack(seqs: readonly Sequence[], rows: number): StepSampling {
    const temperature = new Float32Array(rows), topK = new Int32Array(rows), topP = new Float32Array(rows).fill(1);
    const uniform = new Float32Array(rows), maskRow = new Int32Array(rows).fill(-1);
    const w = this.#words;
    let masks = 0;
    seqs.forEach((seq, r) => {
      const p = seq.sampling.params;
      temperature[r] = p.temperature;
      topK[r] = p.topK;
      topP[r] = p.topP;
      // The host sampler draws only when it samples (not greedy): the same draws keep seeds reproducible.
      if (p.temperature > 0) uniform[r] = seq.sampling.rng.uniform();
      const matcher = seq.sampling.matcher;
      if (matcher) {
        matcher.fillMask(this.#masks.subarray(masks * w, (masks + 1) * w), seq.remaining);
        maskRow[r] = masks++;
      }
    });
    return { temperature, topK, topP, uniform, maskRow, masks: this.#masks.subarray(0, masks * w) };
  }

  /** Takes a sampled id into `seq`'s state (statistics, constraint), as the host sampler does after its pick. */
  accept(seq: Sequence, id: number): GeneratedToken {
    if (id < 0) throw new Error("sampler: the constraint allows no token (a bug)");
    seq.sampling.observe(id);
    seq.sampling.matcher?.advance(id, seq.remaining);
    return { id };
  }
}
