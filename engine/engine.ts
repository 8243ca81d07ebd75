/**
 * The inference engine: continuous batching of many generations over one {@link Model}.
 *
 * One async loop runs the model one step at a time. Each step mixes decode tokens of running sequences with chunks
 * of prompts being prefilled (the {@link BatchPolicy} decides under a token budget, admits queued requests as cache
 * blocks allow, reuses cached prompt prefixes, and preempts by recompute when blocks run out). Rows that sample are
 * sampled on the backend when the model ends its step with the sampler and every row's settings are ones it has
 * (temperature, top-k, top-p, constraint masks uploaded per step: only token ids come back); otherwise the step
 * returns their logits and each is sampled on the host ({@link Sampler}). Either way the token is delivered to that
 * request's stream. The loop sleeps on a promise when there is no work: no timers, no spinning.
 *
 * @example
 * ```ts
 * import { loadModel } from "./model.ts";
 * import { ModelEngine } from "./engine.ts";
 * const model = await loadModel("tiny", { backend: "reference", quiet: true });
 * const engine = await ModelEngine.create(model, { eosId: 2 });
 * const sampling = { temperature: 0, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0 };
 * for await (const t of engine.generate({ promptIds: [1, 3, 1500], sampling, maxTokens: 8 })) console.log(t.id);
 * await engine.close();
 * model.dispose();
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers/promises";
import type { Engine, EngineStats, GeneratedToken, GenerateRequest, Generation, VisionSettings } from "./types.ts";
import type { DraftModel, Model, StepInput } from "./model.ts";
import { argmax, Sampler, SamplingState } from "./sampler.ts";
import { acceptProposal, sampleFrom, sampleResidual } from "./speculative.ts";
import { BatchPolicy, type Chunk } from "./batching.ts";
import { Sequence } from "./sequence.ts";
import { TokenStream } from "./stream.ts";
import { BackendSampling, samplesOnBackend } from "./backend_sampling.ts";
import { ImageEncodes } from "./image_encodes.ts";
import { deviceLost } from "../runtime/backend.ts";

/** Longest run of engine steps without a timer turn (which lets sockets be polled). */
const IO_TURN_MS = 5;

/** A step's sampled token of `seq`, at logits row `r`, taken into the sequence's sampling state. */
type Pick = (seq: Sequence, r: number) => GeneratedToken;

/** Options of {@link ModelEngine.create}. */
export interface ModelEngineOptions {
  /** The end-of-sequence id (`</s>`): ends a sequence with `"eos"` and is not yielded. */
  eosId: number;
  /** Most sequences generating at once (default and upper bound: the model's `maxSeqs`). */
  maxNumSeqs?: number;
  /** Token budget of one step, decode tokens and prefill chunks together (default and bound: `maxTokens`). */
  maxTokensPerStep?: number;
  /** Reuse cached blocks of earlier prompts that share a prefix (default true). */
  prefixCaching?: boolean;
  /**
   * Vision encoder work per engine step, in FLOPs (default: the model's `decodeFlops`, one decoded token's): a
   * large image is encoded over many steps, a unit at a time, while other sequences decode (see
   * `engine/image_encodes.ts`).
   */
  visionFlopsPerStep?: number;
  /**
   * Sample on the backend (`Model.sampleStep`: only token ids come back) in steps whose every row asks only for
   * what the backend sampler does: temperature, top-k, top-p, a constraint (default true, where the model has the
   * sampler). False always reads the logits back and samples on the host.
   */
  backendSampling?: boolean;
  /**
   * Most generated tokens a stream holds unread (default 64): a sequence whose reader falls this far behind is
   * paused, keeping its slot and blocks, until the reader catches up, so a slow reader never makes the engine buffer
   * a whole generation. The server's SSE responses pull from the stream only as the client takes data.
   */
  streamBufferTokens?: number;
  /**
   * Speculative decoding with the model's draft head (`Model.draft`, loaded with `speculative`): default on when
   * the model has one. Per step the draft proposes up to its `numTokens` per decoding sequence and one target
   * forward verifies them (see `engine/speculative.ts`).
   */
  speculative?: boolean;
}

/** Default of {@link ModelEngineOptions.streamBufferTokens}. */
export const DEFAULT_STREAM_BUFFER_TOKENS = 64;

/** {@link EngineStats} plus counters only this engine has. */
export interface ModelEngineStats extends EngineStats {
  /** Sequences preempted (blocks dropped, to be recomputed) since start. */
  preemptions: number;
  /** Steps run since start. */
  steps: number;
  /** Images run through the vision encoder since start. */
  imagesEncoded: number;
  /** Vision encoder units run since start (each engine step runs some while an encode is pending). */
  visionUnits: number;
  /** Sequences whose images are being encoded now. */
  imagesEncoding: number;
  /** Image-store rows held by sequences now. */
  imageStoreRowsUsed: number;
  /** Steps a sequence's prefill stopped short of its images because the image store had no room for them yet. */
  imageStoreWaits: number;
  /** Tokens sampled on the backend (logits never read back) since start. */
  backendSampled: number;
  /** Tokens sampled on the host from logits read back (penalties, min-p, logprobs, or no backend sampler). */
  hostSampled: number;
  /** Sequences paused now because their readers are behind (see {@link ModelEngineOptions.streamBufferTokens}). */
  paused: number;
}

/** Why a generation failed because the engine was closed under it. */
export class EngineClosedError extends Error {
  /** An error saying the engine has been closed. */
  constructor() {
    super("the engine was closed; no more tokens will be generated");
    this.name = "EngineClosedError";
  }
}

/**
 * An {@link Engine} over a loaded {@link Model}. The model stays the caller's: {@link ModelEngine.close} stops the
 * engine but does not dispose the model.
 */
export class ModelEngine implements Engine {
  /** Context length: prompt plus generated tokens of one sequence. */
  readonly maxModelLen: number;
  /** How the model wants its images, or null when it was loaded without vision. */
  readonly vision: VisionSettings | null;
  readonly #model: Model;
  readonly #eosId: number;
  readonly #batching: BatchPolicy;
  readonly #sampler: Sampler;
  readonly #backendSampling: BackendSampling | null;
  readonly #loop: Promise<void>;
  #ready = false;
  #closed = false;
  /** Set when a backend's device was lost: nothing more can run, every request fails with it. */
  #failure: Error | null = null;
  #wakeUp: (() => void) | null = null;
  #lastBatch = 0;
  #tokensProcessed = 0;
  #steps = 0;
  readonly #images: ImageEncodes | null;
  #backendSampled = 0;
  #hostSampled = 0;
  readonly #streamBuffer: number;
  readonly #draft: DraftModel | null;
  /** The target's distribution of the row being verified (used before the next row is looked at). */
  readonly #targetProbs: Float64Array;
  #specProposed = 0;
  #specAccepted = 0;
  #specVerifications = 0;
  #specDraftSteps = 0;

  private constructor(model: Model, options: ModelEngineOptions) {
    const limits = model.limits;
    const maxTokens = clamp(options.maxTokensPerStep ?? limits.maxTokens, 1, limits.maxTokens);
    // Every running sequence must be able to decode in every step, so slots never exceed the token budget.
    const maxNumSeqs = clamp(options.maxNumSeqs ?? limits.maxSeqs, 1, Math.min(limits.maxSeqs, maxTokens));
    this.maxModelLen = limits.maxModelLen;
    const v = model.config.vision_config;
    this.vision = model.vision && v
      ? { patchSize: v.patch_size, mergeSize: v.spatial_merge_size, maxImageSize: v.image_size }
      : null;
    this.#model = model;
    this.#images = model.vision
      ? new ImageEncodes({ model, flopsPerStep: options.visionFlopsPerStep ?? model.decodeFlops })
      : null;
    this.#eosId = options.eosId;
    const buffer = options.streamBufferTokens ?? DEFAULT_STREAM_BUFFER_TOKENS;
    if (!Number.isInteger(buffer) || buffer < 1) {
      throw new RangeError(`ModelEngine: streamBufferTokens must be an integer ≥ 1, got ${buffer}`);
    }
    this.#streamBuffer = buffer;
    this.#batching = new BatchPolicy({
      pool: model.pool,
      maxNumSeqs,
      maxTokens,
      prefixCaching: options.prefixCaching ?? true,
      // The draft's cache entry at a hit's last position holds the next token of the block's first writer.
      rerunLastCached: (options.speculative ?? true) && model.draft !== null,
      // Recomputed from the start, it encodes its images again: its store rows go back meanwhile.
      onPreempt: (seq) => this.#releaseImages(seq),
    });
    this.#sampler = new Sampler(model.config.vocab_size);
    this.#backendSampling = model.samplesOnBackend && (options.backendSampling ?? true)
      ? new BackendSampling(model.config.vocab_size, limits.maxRows)
      : null;
    this.#draft = options.speculative ?? true ? model.draft : null;
    this.#targetProbs = new Float64Array(this.#draft ? model.config.vocab_size : 0);
    this.#loop = this.#run();
    // A device lost while idle: stop serving (and /health say so) without waiting for the next step to fail.
    for (const b of model.backends) b.lost?.then((e) => !this.#closed && this.#failed([], e));
  }

  /** Starts an engine over `model`; it is ready when this resolves. */
  static create(model: Model, options: ModelEngineOptions): Promise<ModelEngine> {
    const engine = new ModelEngine(model, options);
    engine.#ready = true;
    return Promise.resolve(engine);
  }

  /** True from creation until {@link ModelEngine.close}, or until a device is lost ({@link ModelEngine.failure}). */
  get ready(): boolean {
    return this.#ready && !this.#closed && !this.#failure;
  }

  /**
   * Why this engine can no longer generate (a backend's device was lost: a `DeviceLostError` naming the backend and
   * the call), or null. Once set, running and queued sequences have failed with it and new ones fail at once; only
   * a new process (a restart) serves again.
   */
  get failure(): Error | null {
    return this.#failure;
  }

  /** Starts one sequence; it is queued at once, whether or not the caller has started reading. */
  generate(req: GenerateRequest): Generation {
    // The callback may run during construction (an already-aborted signal), before the sequence exists.
    const ref: { seq?: Sequence } = {};
    const stream = new TokenStream(() => ref.seq && this.#cancel(ref.seq), req.signal, {
      limit: this.#streamBuffer,
      onDrain: () => this.#wake(),
    });
    const problem = this.#closed ? new EngineClosedError() : this.#failure ?? this.#validate(req);
    if (problem) {
      stream.fail(problem);
      return stream;
    }
    const seq = ref.seq = new Sequence(req, stream, { maxModelLen: this.maxModelLen });
    if (stream.closed) return stream; // aborted before it started
    if (seq.maxGenerated === 0) {
      stream.finish({ reason: "length" });
      return stream;
    }
    this.#batching.add(seq);
    this.#wake();
    return stream;
  }

  /** Current load and counters. */
  stats(): ModelEngineStats {
    const pool = this.#model.pool;
    return {
      running: this.#batching.running.length,
      waiting: this.#batching.waiting.length,
      batchSize: this.#lastBatch,
      cacheBlocksUsed: pool.usedBlocks,
      cacheBlocksTotal: pool.numBlocks,
      tokensProcessed: this.#tokensProcessed,
      preemptions: this.#batching.preemptions,
      steps: this.#steps,
      imagesEncoded: this.#images?.imagesEncoded ?? 0,
      visionUnits: this.#images?.unitsRun ?? 0,
      imagesEncoding: this.#images?.encoding ?? 0,
      imageStoreRowsUsed: this.#images ? this.#images.store.capacity - this.#images.store.free : 0,
      imageStoreWaits: this.#images?.storeWaits ?? 0,
      backendSampled: this.#backendSampled,
      hostSampled: this.#hostSampled,
      paused: [...this.#batching.running, ...this.#batching.waiting].filter((seq) => seq.paused).length,
      ...(this.#draft
        ? {
          speculative: {
            numTokens: this.#draft.numTokens,
            proposed: this.#specProposed,
            accepted: this.#specAccepted,
            verifications: this.#specVerifications,
            draftSteps: this.#specDraftSteps,
          },
        }
        : {}),
    };
  }

  /**
   * Stops the loop: pending and running generations fail with {@link EngineClosedError} and their blocks are
   * released. Resolves once a step in flight has finished and the loop has exited. Safe to call twice.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      const s = this.#batching;
      for (const seq of [...s.running, ...s.waiting]) this.#fail(seq, new EngineClosedError());
      this.#wake();
    }
    await this.#loop;
  }

  /** {@link ModelEngine.close} without waiting for it. */
  dispose(): void {
    void this.close();
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #validate(req: GenerateRequest): Error | null {
    const n = req.promptIds.length;
    if (n === 0) return new RangeError("generate: the prompt is empty");
    if (n > this.maxModelLen) {
      return new RangeError(`generate: ${n} prompt tokens exceed maxModelLen ${this.maxModelLen}`);
    }
    const vocab = this.#model.config.vocab_size;
    for (const id of req.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        return new RangeError(`generate: prompt id ${id} out of range`);
      }
    }
    return this.#validateImages(req);
  }

  #validateImages(req: GenerateRequest): Error | null {
    const images = req.images ?? [];
    if (images.length === 0) return null;
    if (!this.vision) return new RangeError(`generate: model ${this.#model.name} was loaded without vision`);
    const { patchSize, mergeSize } = this.vision;
    const rows = images.reduce((n, im) => n + im.grid.rows * im.grid.cols, 0), capacity = this.#images!.store.capacity;
    if (rows > capacity) {
      return new RangeError(
        `generate: the prompt's images need ${rows} rows of the image store, which holds ${capacity}: fewer or ` +
          `smaller images, or load the model with imageStoreRows ≥ ${rows}`,
      );
    }
    let last = -1;
    for (const [i, im] of images.entries()) {
      const { rows, cols } = im.grid, side = patchSize * mergeSize;
      if (im.pixels.length !== 3 * rows * side * cols * side) {
        return new RangeError(`generate: image ${i} has ${im.pixels.length} values for a ${rows}×${cols} grid`);
      }
      if (im.positions.length !== rows * cols || im.key.length === 0) {
        return new RangeError(`generate: image ${i} needs ${rows * cols} positions and a key`);
      }
      for (const p of im.positions) {
        if (!Number.isInteger(p) || p <= last || p >= req.promptIds.length) {
          return new RangeError(`generate: image ${i} position ${p} is not increasing within the prompt`);
        }
        last = p;
      }
    }
    return null;
  }

  #lastIoTurn = 0;

  async #run(): Promise<void> {
    const s = this.#batching;
    while (!this.#closed) {
      // Nothing to do, or every sequence is paused on its reader: sleep until a request or a read wakes the loop.
      if (!s.hasWork) {
        await new Promise<void>((resolve) => this.#wakeUp = resolve);
        continue;
      }
      try {
        const { chunks, failed } = s.next();
        for (const seq of failed) seq.stream.fail(this.#tooLong(seq));
        if (chunks.length > 0) await this.#step(chunks);
      } catch (e) {
        // A bug rather than a request's fault: fail every sequence instead of leaving their streams hanging.
        this.#failed([...s.running, ...s.waiting], e);
      }
      // Let I/O (new requests, disconnects, streamed chunks) in between steps. Only a timer turn polls sockets in
      // Deno (setImmediate does not); a timer costs ~2 ms, so fast steps take one at most every 5 ms.
      if (!this.#closed) {
        if (performance.now() - this.#lastIoTurn >= IO_TURN_MS) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          this.#lastIoTurn = performance.now();
        } else await setImmediate();
      }
    }
  }

  #tooLong(seq: Sequence): RangeError {
    const { numBlocks, blockSize } = this.#model.pool;
    return new RangeError(
      `generate: a sequence of ${seq.tokens.length} tokens and growing does not fit in the KV cache ` +
        `(${numBlocks} blocks of ${blockSize} tokens); load the model with more cache blocks or a shorter maxModelLen`,
    );
  }

  /** Runs one step over the planned chunks (and this step's encoder units) and hands out its tokens. */
  async #step(chunks: Chunk[]): Promise<void> {
    const images = this.#images;
    if (images) {
      images.start(chunks);
      await images.advance((seq, e) => this.#failed([seq], e));
      // Failed sequences are gone; a prefill stops short of images whose vectors are not ready.
      chunks = chunks.flatMap((c) => c.seq.status === "running" ? images.limit(c) ?? [] : []);
    }
    if (chunks.length === 0) return;
    const input = stepInput(chunks);
    const sampling = chunks.filter((c) => c.samples).map((c) => c.seq);
    // Verifying proposals takes the target's distribution at every verified row: their logits come back.
    const verifying = chunks.some((c) => c.draft);
    let pick: Pick;
    let logits: Float32Array | null = null;
    try {
      const backend = this.#backendSampling;
      if (backend && !verifying && sampling.every((seq) => samplesOnBackend(seq.sampling.params))) {
        pick = await this.#sampleOnBackend(backend, input, sampling);
      } else {
        logits = await this.#model.step(input);
        pick = this.#pickOnHost(logits);
      }
    } catch (e) {
      this.#failed(chunks.map((c) => c.seq), e);
      return;
    }
    this.#steps++;
    this.#lastBatch = chunks.length;
    this.#tokensProcessed += input.ids.length;
    this.#batching.commit(chunks);
    // Past its last image token, a sequence's vectors are in the KV cache: its store rows go back.
    for (const { seq } of chunks) if (seq.computed > seq.lastImagePosition) this.#releaseImages(seq);
    let row = 0;
    for (const { seq, samples, draft } of chunks) {
      if (!samples) continue;
      const r = row;
      row += 1 + (draft?.proposals.length ?? 0);
      // Removed during the step (cancelled, or the engine closed): its row is dropped.
      if (seq.status !== "running") continue;
      try {
        if (draft) this.#verify(seq, draft, logits!, r);
        else this.#deliver(seq, pick(seq, r));
      } catch (e) {
        this.#fail(seq, e);
      }
    }
    if (this.#draft) {
      try {
        await this.#propose(this.#draft, chunks);
      } catch (e) {
        this.#failed(chunks.map((c) => c.seq).filter((seq) => seq.status === "running"), e);
      }
    }
  }

  /**
   * Speculative verification of one sequence's proposals against the target's rows `r … r + K` (module docs of
   * `engine/speculative.ts`): each accepted proposal is taken as the sampler would have taken it (penalties,
   * constraint, logprobs of the target) and delivered; the first rejection is replaced by a draw from the residual,
   * or after K acceptances the bonus token is drawn from the last row. A constraint's mask is part of the target's
   * distribution, so a proposal it forbids is always rejected.
   */
  #verify(seq: Sequence, draft: NonNullable<Chunk["draft"]>, logits: Float32Array, r: number): void {
    const vocab = this.#model.config.vocab_size, state = seq.sampling, K = draft.proposals.length;
    const rowOf = (j: number) => logits.subarray((r + j) * vocab, (r + j + 1) * vocab);
    this.#specVerifications++;
    this.#specProposed += K;
    this.#hostSampled++;
    for (let j = 0; j <= K; j++) {
      const row = rowOf(j), p = this.#sampler.distribution(row, state, seq.remaining, this.#targetProbs);
      let id: number;
      if (j < K) {
        const d = draft.proposals[j], q = draft.probs[j];
        if (acceptProposal(p, q, d, state.rng.uniform())) {
          this.#specAccepted++;
          this.#deliver(seq, this.#sampler.record(row, state, d, seq.remaining));
          if (seq.status !== "running") return; // ended on it (eos, a stop id, its length, a complete constraint)
          continue;
        }
        id = sampleResidual(p, q, d, state.rng.uniform());
      } else id = sampleFrom(p, state.rng.uniform());
      // The accepted proposals' cache entries stay; the rejected ones' are dropped (overwritten later).
      this.#batching.advance(seq, j);
      this.#deliver(seq, this.#sampler.record(row, state, id, seq.remaining));
      return;
    }
  }

  /**
   * Runs the draft head after a step: first over every token the step made final (catch-up: position p takes token
   * p + 1 and the target's hidden state at p, so the draft's cache follows the target's), which also proposes the
   * first token for each decoding sequence; then K − 1 chained single-token steps, each conditioned on the draft's
   * own previous hidden state, for the rest. The proposals wait on the sequence for the next step.
   */
  async #propose(draft: DraftModel, chunks: readonly Chunk[]): Promise<void> {
    const ids: number[] = [], pos: number[] = [], seqIndex: number[] = [], hiddenRows: number[] = [];
    const blockTables: number[][] = [], logitRows: number[] = [];
    const proposers: { seq: Sequence; table: number[]; end: number; k: number }[] = [];
    let stepRow = 0;
    for (const chunk of chunks) {
      const { seq, start } = chunk;
      const base = stepRow;
      stepRow += chunk.count + (chunk.draft?.proposals.length ?? 0);
      seq.spec = null;
      // Only rows the target just computed and kept: a sequence removed meanwhile or not advanced is skipped.
      if (seq.status !== "running" || seq.computed <= start) continue;
      const end = Math.min(seq.computed, seq.tokens.length - 1);
      const table = seq.blocks!.blockTable.slice();
      const s = blockTables.length;
      blockTables.push(table);
      for (let p = start; p < end; p++) {
        ids.push(seq.tokens[p + 1]);
        pos.push(p);
        seqIndex.push(s);
        hiddenRows.push(base + p - start);
      }
      // A decoding sequence proposes: at most what it may still emit after the next token, within the cache, and
      // only into empty blocks (fewer when they are short): proposing never evicts a cached prefix.
      let k = seq.pending === 1 && end === seq.computed ? Math.min(draft.numTokens, seq.remaining - 1) : 0;
      while (k >= 1 && !this.#model.pool.growFromEmpty(seq.blocks!, end + k)) k--;
      if (k >= 1) {
        logitRows.push(ids.length - 1);
        proposers.push({ seq, table: seq.blocks!.blockTable.slice(), end, k });
      }
    }
    if (ids.length === 0) return;
    const rows = logitRows.length > 0 ? logitRows : [ids.length - 1]; // a step returns at least one row
    let logits = await draft.step({
      ids,
      pos,
      seq: seqIndex,
      blockTables,
      logitRows: rows,
      hiddenRows,
      hiddenOut: logitRows.length > 0 ? rows.map((_, i) => i) : [-1],
    });
    this.#specDraftSteps++;
    if (proposers.length === 0) return;
    const vocab = this.#model.config.vocab_size;
    const specs = proposers.map(() => ({ proposals: [] as number[], probs: [] as (Float64Array | null)[] }));
    // Chained steps: proposal j of each sequence still proposing, at position end + j − 1.
    const lastRow = proposers.map((_, i) => i); // the row of eagle.hidden each sequence's latest draft state is in
    let active = proposers.map((_, i) => i);
    for (let j = 0;; j++) {
      active.forEach((i, r) => {
        const { proposals, probs } = specs[i];
        const { seq } = proposers[i];
        const row = logits.subarray(r * vocab, (r + 1) * vocab);
        const q = this.#draftDistribution(seq, row, j);
        proposals.push(q === null ? argmax(row) : sampleFrom(q, seq.sampling.rng.uniform()));
        probs.push(q);
        lastRow[i] = r;
      });
      active = active.filter((i) => proposers[i].k > j + 1);
      if (active.length === 0) break;
      logits = await draft.step({
        ids: active.map((i) => specs[i].proposals[j]),
        pos: active.map((i) => proposers[i].end + j),
        seq: active.map((_, r) => r),
        blockTables: active.map((i) => proposers[i].table),
        logitRows: active.map((_, r) => r),
        hiddenRows: active.map((i) => lastRow[i]),
        hiddenOut: active.map((_, r) => r),
      });
      this.#specDraftSteps++;
    }
    proposers.forEach(({ seq }, i) => {
      if (seq.status === "running") seq.spec = specs[i];
    });
  }

  /**
   * The distribution the draft's proposal is drawn from: null for a greedy sequence (the draft's argmax, certain),
   * else the draft's logits under the sequence's temperature, top-k, top-p and min-p (no penalties or constraint:
   * any draft distribution keeps the output exact; the closer to the target's, the more is accepted).
   */
  #draftDistribution(seq: Sequence, row: Float32Array, j: number): Float64Array | null {
    const p = seq.sampling.params;
    if (!(p.temperature > 0)) return null;
    // One buffer per proposal index, kept by the sequence: last step's were read by the verification before this.
    const buffers = seq.draftProbs ??= [];
    const out = buffers[j] ??= new Float64Array(row.length);
    seq.draftSampling ??= new SamplingState({
      temperature: p.temperature,
      topK: p.topK,
      topP: p.topP,
      minP: p.minP,
      presencePenalty: 0,
      frequencyPenalty: 0,
    }, []);
    return this.#sampler.distribution(row, seq.draftSampling, Infinity, out);
  }

  /** Runs the step with the sampler on the backend: masks and draws go up, `R` ids come back, no logits. */
  async #sampleOnBackend(backend: BackendSampling, input: StepInput, seqs: readonly Sequence[]): Promise<Pick> {
    const ids = await this.#model.sampleStep(input, backend.pack(seqs, input.logitRows.length));
    return (seq, r) => {
      this.#backendSampled++;
      return backend.accept(seq, ids[r]);
    };
  }

  /** Samples each row of a step's logits on the host with every setting. */
  #pickOnHost(logits: Float32Array): Pick {
    const vocab = this.#model.config.vocab_size;
    return (seq, r) => {
      this.#hostSampled++;
      return this.#sampler.sample(logits.subarray(r * vocab, (r + 1) * vocab), seq.sampling, seq.remaining);
    };
  }

  /** Gives a sequence's image-store rows back (and drops its encode, if running). */
  #releaseImages(seq: Sequence): void {
    this.#images?.release(seq);
  }

  /** Delivers a sequence's sampled token, or ends the sequence. */
  #deliver(seq: Sequence, token: GeneratedToken): void {
    if (token.id === this.#eosId) return this.#finish(seq, "eos");
    if (seq.stopIds.has(token.id)) return this.#finish(seq, "stop", token.id);
    seq.tokens.push(token.id);
    seq.stream.push(token);
    // A complete constrained output allows nothing but </s>: end now rather than spend a step sampling it.
    if (seq.sampling.matcher?.done) this.#finish(seq, "eos");
    else if (seq.remaining <= 0) this.#finish(seq, "length");
  }

  #finish(seq: Sequence, reason: "eos" | "stop" | "length", stopId?: number): void {
    this.#batching.remove(seq);
    this.#releaseImages(seq);
    seq.stream.finish(stopId === undefined ? { reason } : { reason, stopId });
  }

  /**
   * Work for `seqs` failed with `error`: they fail with it. A lost device fails every sequence, running or queued,
   * and the engine stops serving ({@link ModelEngine.failure}): its weights and cache are gone with the device.
   */
  #failed(seqs: readonly Sequence[], error: unknown): void {
    const lost = deviceLost(error);
    if (lost) {
      this.#failure ??= lost;
      const s = this.#batching;
      for (const seq of [...s.running, ...s.waiting]) this.#fail(seq, lost);
    } else for (const seq of seqs) this.#fail(seq, error);
  }

  #fail(seq: Sequence, error: unknown): void {
    this.#batching.remove(seq);
    this.#releaseImages(seq);
    seq.stream.fail(error);
  }

  /**
   * The consumer ended the stream. Its blocks are released now even if a step using them is in flight: the pool is
   * only bookkeeping, no block can be handed out again before that step ends (scheduling happens between steps),
   * and the step's results for a removed sequence are dropped.
   */
  #cancel(seq: Sequence): void {
    this.#batching.remove(seq);
    this.#releaseImages(seq);
  }

  #wake(): void {
    const wakeUp = this.#wakeUp;
    this.#wakeUp = null;
    wakeUp?.();
  }
}

/**
 * The step's inputs: each chunk's tokens and positions, one block table per sequence, a logits row per sampler, and
 * the vectors of the image tokens the chunks cover.
 */
function stepInput(chunks: readonly Chunk[]): StepInput {
  const ids: number[] = [], pos: number[] = [], seqIndex: number[] = [], logitRows: number[] = [];
  const blockTables: number[][] = [];
  const imageRows: number[] = [], imageSlots: number[] = [];
  for (const { seq, start, count, samples, draft } of chunks) {
    const s = blockTables.length;
    if (seq.imageStart !== null) {
      // The chunk's [IMG] tokens and the store rows holding their vectors (the images follow one another there).
      let slot = seq.imageStart;
      for (const im of seq.images) {
        for (const p of im.positions) {
          if (p >= start && p < start + count) imageRows.push(ids.length + p - start), imageSlots.push(slot);
          slot++;
        }
      }
    }
    // A copy: the table must not change under a step in flight if the sequence is cancelled meanwhile.
    blockTables.push(seq.blocks!.blockTable.slice());
    for (let j = start; j < start + count; j++) {
      ids.push(seq.tokens[j]);
      pos.push(j);
      seqIndex.push(s);
    }
    if (samples) logitRows.push(ids.length - 1);
    // Proposals follow the chunk's last token, each with its logits row: one forward verifies them all.
    for (const [j, id] of (draft?.proposals ?? []).entries()) {
      ids.push(id);
      pos.push(start + count + j);
      seqIndex.push(s);
      logitRows.push(ids.length - 1);
    }
  }
  // A step must return at least one row; when only mid-prompt chunks run, one is computed and ignored.
  if (logitRows.length === 0) logitRows.push(ids.length - 1);
  if (imageRows.length === 0) return { ids, pos, seq: seqIndex, blockTables, logitRows };
  return { ids, pos, seq: seqIndex, blockTables, logitRows, imageRows, imageSlots };
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(Math.max(Math.floor(x), lo), hi);
}
