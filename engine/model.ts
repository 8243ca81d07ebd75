/**
 * A loaded model: config, compiled step plan, resident weights and paged latent cache.
 *
 * One graph serves every step (prefill chunks, decode batches, mixed): the token count `T`, sequence count `S`
 * and logit-row count `R` are symbols bound per run, so nothing is rebuilt per token.
 *
 * @example
 * ```ts
 * import { loadModel } from "./model.ts";
 * const model = await loadModel("tiny", { backend: "reference" });
 * const logits = await model.forward([1, 3, 1500, 4]); // [4, vocab]
 * model.dispose();
 * ```
 *
 * @module
 */

import { type DType, headDTypeOf } from "../graph/dtype.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { type Graph, tensorTable, type WeightDecl } from "../graph/ir.ts";
import { type ModelFamily, resolveModel } from "../graph/models/mod.ts";
import { type Mistral4Config, type SoftmaxScaleMode, softmaxScaleMode } from "../graph/models/mistral4.ts";
import { DRAFT_PREFIX } from "../graph/models/eagle.ts";
import { DraftModel, openDraft, type SpeculativeOptions } from "./draft_model.ts";

export { checkSpeculativeTokens, DraftModel, MAX_SPECULATIVE_TOKENS } from "./draft_model.ts";
export type { DraftStepInput, SpeculativeOptions } from "./draft_model.ts";
import { alignUp, type Backend, kindOf, tensorBytes, weightBytes } from "../runtime/backend.ts";
import { createBackend, createBackends } from "../runtime/registry.ts";
import { PlanExecutor, Residency, sharedArenaBytes } from "../runtime/plan_executor.ts";
import type { Plan } from "../runtime/schedule.ts";
import { planBackends, scheduleBeside } from "./placement.ts";
import { BlockPool, type SequenceBlocks } from "./kv_cache.ts";
import { bf16ToF32 } from "../weights/codecs.ts";
import { openModelWeights } from "./model_weights.ts";
import { releaseScratch } from "../weights/chunks.ts";
import { stageName, visionStageGraphs } from "./vision.ts";
import { VisionRunner } from "./vision_runner.ts";
import type { ImageJob, VisionJobOptions } from "./vision_job.ts";
import { graphFlops } from "../graph/cost.ts";
import { scatterRowsOp } from "../ops/scatter_rows.ts";
import { maskWords } from "../ops/sample.ts";

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /**
   * Backend name, "auto" (default: the best available), or an ordered preference list (`["webgpu", "wasm"]` or
   * `"webgpu,wasm"`): each op runs on the first backend that supports it and holds its weights; every fallback and
   * copy is reported at load.
   */
  backend?: string | readonly string[];
  /** Refuse any fallback: every op on the first backend of the list, or a load error naming them. */
  strict?: boolean;
  /** Options handed to every backend factory (refused ops for tests, wasm tuning…), besides `threads`. */
  backendOptions?: Omit<import("../runtime/backend.ts").BackendOptions, "threads"> & Record<string, unknown>;
  /** Where the load report goes (one line per fallback and copy); default stderr unless `quiet`. */
  log?: (line: string) => void;
  /**
   * Weight dtype (`--dtype`). For a preset, the dtype its random weights are made in (f32, bf16: every weight;
   * f8e4m3: the text linears). For any model, q8 (and a float dtype other than the checkpoint's) re-encodes the
   * quantisable linears at load. Default: the checkpoint's own (presets: bf16).
   */
  dtype?: DType;
  /**
   * The lm head's stored dtype (`--head-dtype`): q4, q8 or bf16 (another value is an error). Default: as `dtype`,
   * except q8 under `dtype: "q4"`; the checkpoint's own without `dtype`.
   */
  headDType?: DType;
  /** Worker threads for CPU backends (default: all cores). */
  threads?: number;
  /** Seed of the random weights of a preset (default 0). */
  seed?: number;
  /** Longest sequence, prompt plus output (default min(config max, 4096)). */
  maxModelLen?: number;
  /** Tokens per step: the prefill chunk size (default 256). */
  maxTokens?: number;
  /** Sequences per step (default 8). */
  maxSeqs?: number;
  /** Tokens per cache block (default 16). */
  blockSize?: number;
  /** Cache blocks per layer (default enough for `maxSeqs` full-length sequences). */
  numBlocks?: number;
  /** Latent cache dtype (default bf16; f32 for exact cross-backend comparisons). */
  cacheDtype?: DType;
  /**
   * MLA softmax scale (`--softmax-scale`), overriding the checkpoint's: `plain` 1/√qk_head_dim or `deepseek_yarn`
   * (DeepSeek's mscale², as transformers since July 2026 and llama.cpp apply it; MODEL.md §1.7). Default: the
   * config's (`softmax_scale_mode`, or params.json `yarn.apply_scale`; plain when neither says).
   */
  softmaxScale?: SoftmaxScaleMode;
  /** MLA form (default "absorbed"; "naive" for equivalence tests). */
  attention?: "absorbed" | "naive";
  /** No progress output while loading. */
  quiet?: boolean;
  /**
   * Accept images (`encodeImages`, `StepInput.imageRows`). Default: when the config has a vision tower and the
   * backend runs `scatter_rows`; false gives the text-only step graph.
   */
  vision?: boolean;
  /**
   * Rows of the image store (with vision): the images' vectors wait there, on the backend, between the encoder and
   * the steps that place them. Default: room for two images of the largest size the config accepts, at least
   * `maxTokens`.
   */
  imageStoreRows?: number;
  /**
   * End the step graph with the `sample` op, so {@link Model.sampleStep} returns token ids and the logits never
   * leave the backend. Default: when the backend runs `sample`, except on `reference`, which computes on the host
   * anyway (no read-back to save) and whose sampler sorts the vocabulary.
   */
  sampling?: boolean;
  /**
   * Speculative decoding with an EAGLE draft head (`--speculative-model`, `--num-speculative-tokens`): the draft
   * (a preset `<target>-eagle` or a checkpoint directory) is loaded beside the target, sharing its embedding and
   * head, and the step graph keeps its final-norm hidden states on the backend for it (see {@link DraftModel}).
   */
  speculative?: SpeculativeOptions;
  /**
   * With `onnx` first in a backend list (`onnx,wasm`): steps of at most this many tokens (decode, small batches)
   * run a second plan on the other backends alone, where launch overhead and weight bytes matter more than GEMM
   * speed; longer steps (prefill) run the list's plan. Default 64; 0 keeps one plan for every step. Used only when
   * `maxTokens` is larger (otherwise every step would be small and the list's plan is the only one).
   */
  smallStepTokens?: number;
}

/** The plan of small steps: its executor, and the most tokens and logit rows a step it takes may have. */
export type SmallSteps = { executor: PlanExecutor; tokens: number; rows: number };

/** One step: tokens of several sequences, each sequence's block table, and the tokens whose logits are wanted. */
export interface StepInput {
  /** Token ids `[T]`. */
  ids: readonly number[];
  /** Absolute position of each token `[T]`. */
  pos: readonly number[];
  /** Index into `blockTables` of each token's sequence `[T]`. */
  seq: readonly number[];
  /** Cache blocks of each sequence in the step. */
  blockTables: readonly (readonly number[])[];
  /** Indices into the step's tokens whose logits are computed `[R]`. */
  logitRows: readonly number[];
  /** Step tokens (`[IMG]` positions) whose embedding is replaced by an image vector `[I]`. */
  imageRows?: readonly number[];
  /** Rows of the image store holding their vectors `[I]` (see {@link Model.storeImages}). */
  imageSlots?: readonly number[];
}

/**
 * Per-row settings of {@link Model.sampleStep}, one entry per `logitRows` row (the `sample` op's inputs; see
 * `ops/sample.ts` for the exact semantics).
 */
export interface StepSampling {
  /** ≤ 0: greedy (argmax, lowest id on ties); otherwise logits are divided by it. */
  temperature: ArrayLike<number>;
  /** Keep the k most likely ids; 0 = off. */
  topK: ArrayLike<number>;
  /** Nucleus: the shortest prefix of candidates reaching this mass; 1 = off. */
  topP: ArrayLike<number>;
  /** A uniform draw in [0, 1) per row, from the row's own generator (unused when greedy). */
  uniform: ArrayLike<number>;
  /** The row of `masks` each row obeys, or −1 for none. Absent: no row is masked. */
  maskRow?: ArrayLike<number>;
  /**
   * Allowed-id bitmasks, `ceil(vocab / 32)` words each, in `ConstraintMatcher.fillMask`'s layout; only the masks
   * rows refer to, so unconstrained rows upload nothing.
   */
  masks?: Uint32Array;
}

/** {@link StepSampling} that picks every one of `rows` rows greedily (argmax, no mask). */
export function greedySampling(rows: number): StepSampling {
  const zeros = () => new Float32Array(rows);
  return { temperature: zeros(), topK: new Int32Array(rows), topP: zeros().fill(1), uniform: zeros() };
}

/** Resolved geometry of the compiled step. */
export interface ModelLimits {
  /** Longest sequence (prompt plus output). */
  maxModelLen: number;
  /** Tokens per step (`T` max). */
  maxTokens: number;
  /** Sequences per step (`S` max). */
  maxSeqs: number;
  /** Logit rows per step (`R` max). */
  maxRows: number;
  /** Tokens per cache block. */
  blockSize: number;
  /** Cache blocks per layer. */
  numBlocks: number;
  /** Block-table columns: `ceil(maxModelLen / blockSize)`. */
  maxBlocksPerSeq: number;
  /** Rows of the image store (0 without vision). */
  imageStoreRows: number;
}

/** What the engine reads from any family's config. */
export type StepConfig = Pick<
  Mistral4Config,
  "vocab_size" | "hidden_size" | "max_position_embeddings" | "vision_config"
>;

/** A model ready to run steps, generic over its family's config type. */
export class Model<C extends StepConfig = Mistral4Config> {
  /** Model configuration. */
  readonly config: C;
  /** Preset name or checkpoint directory. */
  readonly name: string;
  /** The step graph. */
  readonly graph: Graph;
  /** Step geometry. */
  readonly limits: ModelLimits;
  /** Cache block bookkeeping shared by every sequence of this model. */
  readonly pool: BlockPool;
  /** The backends of the plan, in preference order (the first is the one asked for). */
  readonly backends: readonly Backend[];
  /** Load-time report: one line per fallback and per copy between backends (empty for a one-backend plan). */
  readonly report: readonly string[];
  /**
   * FLOPs of one decoded token at context 1 (every layer's linears, the routed experts a token takes, the head):
   * the engine's default budget of vision encoder work per step.
   */
  readonly decodeFlops: number;
  /** The EAGLE draft head loaded with it ({@link LoadModelOptions.speculative}), or null. */
  draft: DraftModel | null = null;
  readonly #executor: PlanExecutor;
  readonly #small: SmallSteps | null;
  readonly #vision: VisionRunner | null;
  readonly #sampling: boolean;
  readonly #eagleHidden: boolean;
  readonly #release: () => void;

  /** Use {@link loadModel}. */
  constructor(init: {
    config: C;
    name: string;
    graph: Graph;
    limits: ModelLimits;
    executor: PlanExecutor;
    /** The plan for steps of at most `tokens` tokens and `rows` logit rows, when there is one. */
    small?: SmallSteps | null;
    backends: readonly Backend[];
    report?: readonly string[];
    vision?: VisionRunner | null;
    /** See {@link Model.decodeFlops} (default 0). */
    decodeFlops?: number;
    /** Called by `dispose` after the backends are freed (closes weight sources). */
    release?: () => void;
  }) {
    this.config = init.config;
    this.name = init.name;
    this.graph = init.graph;
    this.limits = init.limits;
    this.backends = init.backends;
    this.report = init.report ?? [];
    this.#executor = init.executor;
    this.#small = init.small ?? null;
    this.#vision = init.vision ?? null;
    this.decodeFlops = init.decodeFlops ?? 0;
    this.#release = init.release ?? (() => {});
    this.#sampling = init.graph.outputs.some((o) => o.name === "sampled");
    this.#eagleHidden = init.graph.inputs.some((i) => i.name === "hiddenAt");
    this.pool = new BlockPool({ numBlocks: init.limits.numBlocks, blockSize: init.limits.blockSize });
  }

  /** The first backend of the plan (the one asked for). */
  get backend(): Backend {
    return this.backends[0];
  }

  /** The step plan (segments, fallbacks, copies, memory per backend). */
  get plan(): Plan {
    return this.#executor.plan;
  }

  /**
   * The plan of small steps (see {@link LoadModelOptions.smallStepTokens}) and the most tokens it takes, or null
   * when {@link Model.plan} runs every step.
   */
  get smallStepPlan(): { plan: Plan; tokens: number } | null {
    return this.#small && { plan: this.#small.executor.plan, tokens: this.#small.tokens };
  }

  /** The executor of a step of `tokens` tokens and `rows` logit rows. */
  #executorFor(tokens: number, rows: number): PlanExecutor {
    const s = this.#small;
    return s && tokens <= s.tokens && rows <= s.rows ? s.executor : this.#executor;
  }

  /** Whether the model takes images (see {@link LoadModelOptions.vision}). */
  get vision(): boolean {
    return this.#vision !== null;
  }

  /**
   * The backends the vision graph runs on, most nodes first (`wasm`, or e.g. `webgpu,wasm` after a fallback); null
   * without vision.
   */
  get visionBackend(): string | null {
    return this.#vision?.backendName ?? null;
  }

  /**
   * Runs the vision tower and projector and leaves each image's vectors in the image store, on the backend: image
   * `i`'s `rows·cols` vectors at rows `starts[i]…` (a step then names them in `StepInput.imageSlots`). Nothing is
   * read back.
   */
  storeImages(
    images: readonly { pixels: Float32Array; grid: { rows: number; cols: number } }[],
    starts: readonly number[],
  ): Promise<void> {
    return this.#runner().store(images, starts);
  }

  /**
   * Runs the vision tower and projector: one `f32 [rows·cols, hidden_size]` array per preprocessed image
   * (`chat/image.ts` `preprocessImage`), a vector per `[IMG]` token in row-major grid order.
   */
  encodeImages(
    images: readonly { pixels: Float32Array; grid: { rows: number; cols: number } }[],
  ): Promise<Float32Array[]> {
    return this.#runner().encode(images);
  }

  /**
   * An encode of `images` cut into units of about `flopsPerUnit` FLOPs each, to run one at a time between steps
   * (the engine does); with `starts` the vectors go into the image store there (as {@link Model.storeImages}), with
   * `starts: null` they are read back (`job.features`). One encode's batch runs at a time: the units share the
   * encoder's state on the backend.
   *
   * @example
   * ```ts
   * // const job = model.imageJob([image], { starts: [0], flopsPerUnit: model.decodeFlops });
   * // while (!job.done) await job.runNext();
   * ```
   */
  imageJob(
    images: readonly { pixels: Float32Array; grid: { rows: number; cols: number } }[],
    options: VisionJobOptions,
  ): ImageJob {
    return this.#runner().job(images, options);
  }

  #runner(): VisionRunner {
    if (!this.#vision) throw new Error(`model ${this.name} was loaded without vision`);
    return this.#vision;
  }

  /**
   * What the step plan sizes on all its backends together: weights, state (the latent cache), the arenas of
   * intermediates (at the largest step shape) and per-run I/O buffers, in bytes.
   */
  get plannedMemory(): { weights: number; state: number; arena: number; io: number } {
    const sum = { weights: 0, state: 0, arena: 0, io: 0 };
    const plans = [this.#executor.plan, ...(this.draft ? [this.draft.plan] : [])];
    for (const plan of plans) {
      for (const m of Object.values(plan.memory.perBackend)) {
        // The draft's plan counts none of the target's weights it reads where the target has them (embedding,
        // head: one buffer each); a copy elsewhere is its own.
        sum.weights += m.weightBytes;
        sum.state += m.stateBytes;
        sum.arena += m.arenaBytes;
        sum.io += m.ioBytes;
      }
    }
    if (this.draft) {
      // The state the draft shares with the target (eagle.hidden) is the target's buffer: its own caches only.
      const own = new Set(this.#executor.plan.state.map((s) => `${s.backend}\u0000${s.name}`));
      const table = tensorTable(this.draft.graph);
      for (const s of this.draft.plan.state) {
        if (!own.has(`${s.backend}\u0000${s.name}`)) continue;
        const b = this.backends.find((x) => x.name === s.backend)!;
        sum.state -= alignUp(tensorBytes(b.caps, table[s.tensor]), b.caps.alignment);
      }
    }
    const small = this.#small?.executor.plan;
    if (small) {
      // Its own arenas and I/O; the state is the same buffers; weights only where the main plan has none.
      for (const m of Object.values(small.memory.perBackend)) sum.arena += m.arenaBytes + m.ioBytes;
      const main = new Map(this.plan.weights.map((w) => [w.tensor, new Set(w.backends)]));
      for (const w of small.weights) {
        const decl = this.graph.weights.find((d) => d.id === w.tensor)!;
        for (const b of w.backends) {
          if (!main.get(w.tensor)?.has(b)) {
            sum.weights += weightBytes(this.backends.find((x) => x.name === b)!, decl.shape, decl.dtype);
          }
        }
      }
    }
    return sum;
  }

  /** Whether the step graph ends with the sampler, so {@link Model.sampleStep} is available. */
  get samplesOnBackend(): boolean {
    return this.#sampling;
  }

  /**
   * Runs one step and returns logits `[logitRows.length, vocab]`. Cache entries of every token are written. With
   * the sampler in the graph it still runs, greedily (an argmax per row: far less than the head's matmul).
   */
  async step(input: StepInput): Promise<Float32Array> {
    const R = input.logitRows.length;
    const sampler = this.#sampling ? this.#samplerInputs(R, greedySampling(R)) : {};
    const out = await this.#executorFor(input.ids.length, R).run({
      inputs: { ...this.stepInputs(input), ...sampler },
      outputs: ["logits"],
    });
    return out.logits as Float32Array;
  }

  /**
   * Runs one step and samples one token id per `logitRows` row on the backend, with per-row settings and
   * constraint masks: only `R` ids come back, never the logits. Needs {@link Model.samplesOnBackend}. A masked row
   * whose mask allows no id gives −1.
   *
   * @example
   * ```ts
   * // const [id] = await model.sampleStep(input, { temperature: [0.7], topK: [0], topP: [0.9], uniform: [rng.uniform()] });
   * ```
   */
  async sampleStep(input: StepInput, sampling: StepSampling): Promise<Int32Array> {
    if (!this.#sampling) throw new Error(`sampleStep: model ${this.name} was loaded without the backend sampler`);
    const inputs = { ...this.stepInputs(input), ...this.#samplerInputs(input.logitRows.length, sampling) };
    const executor = this.#executorFor(input.ids.length, input.logitRows.length);
    return (await executor.run({ inputs, outputs: ["sampled"] })).sampled as Int32Array;
  }

  /** The `sample` op's inputs for `R` rows, checked. */
  #samplerInputs(R: number, s: StepSampling): Record<string, ArrayBufferView> {
    const words = maskWords(this.config.vocab_size);
    const masks = s.masks ?? new Uint32Array(0), count = masks.length / words;
    const maskRow = s.maskRow ? Int32Array.from(s.maskRow) : new Int32Array(R).fill(-1);
    for (const [name, a] of Object.entries({ ...s, maskRow })) {
      if (name !== "masks" && a.length !== R) throw new Error(`sampleStep: ${a.length} ${name} values for ${R} rows`);
    }
    if (!Number.isInteger(count)) {
      throw new Error(`sampleStep: ${masks.length} mask words, not whole masks of ${words}`);
    }
    if (maskRow.some((m) => m >= count)) throw new Error(`sampleStep: a mask row refers past the ${count} masks`);
    return {
      temperature: Float32Array.from(s.temperature),
      topK: Int32Array.from(s.topK),
      topP: Float32Array.from(s.topP),
      uniform: Float32Array.from(s.uniform),
      maskRow,
      mask: masks, // u32 words uploaded as the graph's i32: the same bits
    };
  }

  /** The step graph's inputs for one step, checked (the draft's step reuses them). */
  stepInputs(input: StepInput): Record<string, ArrayBufferView> {
    const { ids, pos, seq, blockTables, logitRows } = input;
    const imageRows = input.imageRows ?? [], imageSlots = input.imageSlots ?? [];
    if (imageSlots.length !== imageRows.length) {
      throw new Error(`step: ${imageSlots.length} image slots for ${imageRows.length} image rows`);
    }
    if (imageRows.length > 0 && !this.#vision) throw new Error(`step: model ${this.name} was loaded without vision`);
    const l = this.limits;
    if (ids.length === 0 || ids.length > l.maxTokens) throw new Error(`step: ${ids.length} tokens (1..${l.maxTokens})`);
    if (pos.length !== ids.length || seq.length !== ids.length) throw new Error("step: ids, pos, seq lengths differ");
    if (blockTables.length === 0 || blockTables.length > l.maxSeqs) {
      throw new Error(`step: ${blockTables.length} sequences (1..${l.maxSeqs})`);
    }
    if (logitRows.length === 0 || logitRows.length > l.maxRows) {
      throw new Error(`step: ${logitRows.length} logit rows (1..${l.maxRows})`);
    }
    const table = new Int32Array(blockTables.length * l.maxBlocksPerSeq); // [S, maxBlocksPerSeq]
    blockTables.forEach((blocks, s) => {
      if (blocks.length > l.maxBlocksPerSeq) throw new Error(`step: sequence ${s} has too many blocks`);
      table.set(blocks, s * l.maxBlocksPerSeq);
    });
    return {
      ids: Int32Array.from(ids),
      pos: Int32Array.from(pos),
      seq: Int32Array.from(seq),
      blockTable: table,
      logitRows: Int32Array.from(logitRows),
      ...(this.#vision ? { imageRows: Int32Array.from(imageRows), imageSlots: Int32Array.from(imageSlots) } : {}),
      // Every token's final-norm output is kept, at its own index, for the draft head's next step.
      ...(this.#eagleHidden ? { hiddenAt: Int32Array.from({ length: ids.length }, (_, i) => i) } : {}),
    };
  }

  /**
   * Logits at every position `[ids.length, vocab]` for one fresh sequence (prefilled in chunks through the
   * paged cache; the cache blocks are released afterwards). For tests and tools; generation asks `step` for
   * the rows it samples only.
   */
  async forward(ids: readonly number[]): Promise<Float32Array> {
    if (ids.length === 0) throw new Error("forward: no tokens");
    if (ids.length > this.limits.maxModelLen) {
      throw new Error(`forward: ${ids.length} tokens exceed maxModelLen ${this.limits.maxModelLen}`);
    }
    const seq = this.pool.newSequence();
    try {
      if (!this.pool.grow(seq, ids.length)) throw new Error("forward: not enough free cache blocks");
      const vocab = this.config.vocab_size;
      const out = new Float32Array(ids.length * vocab);
      const chunk = Math.min(this.limits.maxTokens, this.limits.maxRows);
      for (let start = 0; start < ids.length; start += chunk) {
        const n = Math.min(chunk, ids.length - start);
        const logits = await this.step(chunkOf(seq, ids, start, n));
        out.set(logits, start * vocab);
      }
      return out;
    } finally {
      this.pool.release(seq);
    }
  }

  /** Reads one layer's latent cache as f32 (for tests and debugging). */
  async readCache(layer: number): Promise<Float32Array> {
    const data = await this.#executor.readState(`layers.${layer}.cache`);
    return data instanceof Uint16Array ? bf16ToF32(data) : data as Float32Array; // a bf16 cache held natively
  }

  /** Frees the backends' memory. */
  dispose(): void {
    this.draft?.dispose();
    this.#vision?.dispose();
    this.#small?.executor.dispose();
    this.#executor.dispose();
    this.#release(); // the shared residency (weights, caches, image store) and the weight sources
    for (const b of this.backends) b.dispose();
  }
}

/** Tokens `[start, start+n)` of one sequence as a step with logits at every token. */
function chunkOf(seq: SequenceBlocks, ids: readonly number[], start: number, n: number): StepInput {
  const range = Array.from({ length: n }, (_, i) => i);
  return {
    ids: ids.slice(start, start + n),
    pos: range.map((i) => start + i),
    seq: range.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: range,
  };
}

/**
 * Loads a model: a preset name (`tiny`, `demo`, `ms4-mini`, `mistral-small-4`) with seeded random weights, or a
 * checkpoint directory (HF `config.json` + safetensors, or Mistral `params.json` + `consolidated.safetensors`).
 * Weights stream from their source into the backends one chunk at a time.
 */
export async function loadModel(spec: string, options: LoadModelOptions = {}): Promise<Model> {
  const scale = options.softmaxScale === undefined ? undefined : softmaxScaleMode(options.softmaxScale, "softmaxScale");
  if (options.headDType !== undefined) headDTypeOf(options.headDType, "headDType");
  const resolved = await resolveModel(spec);
  const log = options.log ?? ((line: string) => options.quiet || console.error(line));
  const backendOptions = { ...options.backendOptions, threads: options.threads };
  // `planBackends` may grow `wasm` into a memory64 instance or several instances.
  // "auto" is the one best backend here (a list names its fallbacks explicitly).
  const which = options.backend ?? "auto";
  let backends = which === "auto"
    ? [await createBackend("auto", backendOptions)]
    : await createBackends(which, backendOptions);
  let release = () => {};
  try {
    // Images need the vision tower's weights and `scatter_rows` on some backend of the plan.
    const vision = resolved.config.vision_config !== null &&
      (options.vision ?? (backends.some((b) => runsScatterRows(b)) && runsVisionTower(backends, resolved)));
    const weights = await openModelWeights(resolved, {
      dtype: options.dtype,
      seed: options.seed,
      group: vision ? "all" : "text",
      quiet: options.quiet,
    });
    release = () => weights.close();
    const config = scale === undefined ? weights.config : { ...weights.config, softmax_scale_mode: scale };
    const limits = resolveLimits(config, options, vision);
    const draft = options.speculative
      ? await openDraft(options.speculative, config, resolved.name, options, limits, weights.linearDtype)
      : null;
    if (draft) {
      const prevRelease = release;
      release = () => (draft.weights.close(), prevRelease());
    }
    // Small steps get a plan of their own on the other backends when onnx leads the list (see smallStepTokens).
    const smallTokens = options.smallStepTokens ?? 64;
    const others = backends.filter((b) => kindOf(b.name) !== "onnx");
    const bucketed = backends[0].name === "onnx" && others.length > 0 && smallTokens > 0 &&
      limits.maxTokens > smallTokens;
    // The sampler ends the step where the first backend runs it (unless turned off); elsewhere the host samples
    // logits. The reference computes on the host anyway (no read-back to save) and its sampler sorts the vocabulary.
    // With small steps apart, their first backend decides: decode is where sampling on the backend pays.
    const first = bucketed ? others[0] : backends[0];
    const build = (sampling: boolean, l = limits) =>
      buildStepGraph(resolved.family, config, l, {
        ...options,
        dtype: weights.linearDtype,
        vision,
        sampling,
        eagleHidden: draft !== null,
      });
    let graph = build(options.sampling ?? first.name !== "reference");
    if (graph.outputs.some((o) => o.name === "sampled") && options.sampling === undefined) {
      if (!runsNode(first, graph, "sampled")) graph = build(false);
    }
    const sampling = graph.outputs.some((o) => o.name === "sampled");
    const smallLimits = { ...limits, maxTokens: smallTokens, maxRows: Math.min(limits.maxRows, smallTokens) };
    const smallGraph = bucketed ? build(sampling, smallLimits) : null;
    // The vision encoder's stage graphs are planned with the step graph, within what it leaves, and loaded with it.
    const stages = vision ? visionStageGraphs(resolved.family, config, { imageStoreRows: limits.imageStoreRows }) : [];
    // The draft's graph comes last: the step graph decides where the state they share (eagle.hidden) lives.
    const graphs = [graph, ...stages.map((s) => s.graph), ...(draft ? [draft.graph] : [])];
    const isStage = (i: number) => i > 0 && i <= stages.length;
    // The stages run one at a time: their executors share one set of arenas.
    const arenaGroups = graphs.map((_, i) => isStage(i) ? "vision" : undefined);
    const planned = await planBackends(graphs, backends, { strict: options.strict, backendOptions, log, arenaGroups });
    backends = planned.backends;
    const [plan, ...rest] = planned.plans;
    const stagePlans = rest.slice(0, stages.length), draftPlan = rest[stages.length];
    const report = [
      ...planReport(plan, graph),
      ...stagePlans.flatMap((p, i) =>
        planReport(p, stages[i].graph).map((l) => `vision ${stageName(stages[i].stage)} ${l}`)
      ),
      ...(draftPlan ? planReport(draftPlan, draft!.graph).map((l) => `draft ${l}`) : []),
    ];
    let smallPlan: Plan | null = null;
    if (smallGraph) {
      const rest = backends.filter((b) => kindOf(b.name) !== "onnx");
      smallPlan = scheduleBeside(smallGraph, rest, { graphs, plans: planned.plans, all: backends }, options);
      report.push(
        `steps of more than ${smallTokens} tokens run on ${backends.map((b) => b.name).join(",")}, steps of at most ` +
          `${smallTokens} on ${rest.map((b) => b.name).join(",")} (smallStepTokens)`,
        ...planReport(smallPlan, smallGraph).map((l) => `small steps ${l}`),
      );
    }
    for (const line of report) log(line);
    checkSharedState(smallPlan ? [...planned.plans, smallPlan] : planned.plans);
    // One residency for every plan: the image store, and the encoder's state between its stages, are one buffer each.
    const residency = new Residency();
    const prev = release;
    release = () => (residency.dispose(), prev());
    // Draft weights come from the draft's checkpoint under their canonical names; the embedding and head it
    // declares under the target's names are the target's own buffers (the residency holds each name once).
    const source = (d: WeightDecl) =>
      draft && d.name.startsWith(DRAFT_PREFIX)
        ? draft.weights.source({ ...d, name: d.name.slice(DRAFT_PREFIX.length) })
        : weights.source(d);
    const executors: PlanExecutor[] = [];
    const sharedArenas = { key: "vision", bytes: sharedArenaBytes(stagePlans) };
    let small: SmallSteps | null = null;
    try {
      for (const [i, p] of planned.plans.entries()) {
        const o = { weights: source, residency, ...(isStage(i) ? { sharedArenas } : {}) };
        executors.push(await PlanExecutor.create(graphs[i], p, backends, o));
      }
      if (smallGraph && smallPlan) {
        const executor = await PlanExecutor.create(smallGraph, smallPlan, backends, { weights: source, residency });
        small = { executor, tokens: smallLimits.maxTokens, rows: smallLimits.maxRows };
      }
    } catch (e) {
      for (const ex of executors) ex.dispose();
      throw e;
    }
    const [executor, ...restExecutors] = executors;
    const stageExecutors = restExecutors.slice(0, stages.length);
    const runner = vision
      ? new VisionRunner({
        config,
        stages: stages.map((s, i) => ({ ...s, executor: stageExecutors[i] })),
        imageStoreRows: limits.imageStoreRows,
      })
      : null;
    releaseScratch(); // the loads' f32 temporaries
    const model = new Model({
      config,
      name: resolved.name,
      graph,
      limits,
      executor,
      small,
      backends,
      report,
      vision: runner,
      decodeFlops: decodeFlops(resolved.family, config, weights.linearDtype, options.headDType),
      release,
    });
    if (draft) {
      model.draft = new DraftModel({
        config: draft.config,
        name: draft.name,
        numTokens: options.speculative!.numTokens,
        executor: restExecutors[stages.length],
        target: model,
      });
    }
    return model;
  } catch (e) {
    for (const b of backends) b.dispose();
    release();
    throw e;
  }
}

/**
 * Plans sharing a state tensor (the image store between the step and the encoder; the encoder's hidden state, keys
 * and values between its stages) must keep it on one backend: they share its buffer.
 */
function checkSharedState(plans: readonly Plan[]): void {
  const home = new Map<string, string>();
  for (const p of plans) {
    for (const s of p.state) {
      const at = home.get(s.name);
      if (at === undefined) home.set(s.name, s.backend);
      else if (at !== s.backend) {
        throw new Error(
          `state ${s.name} would live on ${at} for one graph but on ${s.backend} for another: the ops that read ` +
            `and write it (write_rows, gather_rows) must run on one backend`,
        );
      }
    }
  }
}

/** See {@link Model.decodeFlops}: the step graph for one token, one sequence, one cache position. */
function decodeFlops(
  family: ModelFamily,
  config: Mistral4Config,
  linearDtype: DType | undefined,
  headDtype: DType | undefined,
): number {
  const g = new GraphBuilder();
  const one = { maxTokens: 1, maxSeqs: 1, numBlocks: 1, blockSize: 1, maxBlocksPerSeq: 1 };
  family.build(g, config, { ...one, linearDtype, headDtype });
  return graphFlops(g.build(), { T: 1, S: 1, R: 1 });
}

/**
 * One line per fallback and per distinct copy of a plan (what `--backend a,b` changed), for the load report; when
 * segments run on several backends, one `segments:` line per backend saying which ops it runs (from `graph`).
 */
export function planReport(plan: Plan, graph?: Graph): string[] {
  const lines = plan.fallbacks.map((f) => `fallback: ${f.op} "${f.name}" ${f.from} → ${f.to} (${f.reason})`);
  for (const c of plan.copies) lines.push(`copy: ${c.name} ${c.from} → ${c.to} (${c.bytes} B per step at most)`);
  const used = [...new Set(plan.segments.map((s) => s.backend))];
  if (graph && used.length > 1) {
    const opOf = new Map(graph.nodes.map((n) => [n.id, n.op]));
    for (const b of used) {
      const mine = plan.segments.filter((s) => s.backend === b), ops = new Map<string, number>();
      for (const s of mine) for (const n of s.nodes) ops.set(opOf.get(n)!, (ops.get(opOf.get(n)!) ?? 0) + 1);
      const list = [...ops].map(([op, n]) => `${op} ×${n}`).join(", ");
      lines.push(`segments: ${b} runs ${mine.length} segment(s): ${list}`);
    }
  }
  return lines;
}

function resolveLimits(config: Mistral4Config, o: LoadModelOptions, vision: boolean): ModelLimits {
  const maxModelLen = o.maxModelLen ?? Math.min(config.max_position_embeddings, 4096);
  const maxTokens = o.maxTokens ?? 256;
  const maxSeqs = o.maxSeqs ?? 8;
  const blockSize = o.blockSize ?? 16;
  const maxBlocksPerSeq = Math.ceil(maxModelLen / blockSize);
  return {
    maxModelLen,
    maxTokens,
    maxSeqs,
    // Logit rows: one per sequence when generating, or a whole chunk for `forward` (bounded: [R, vocab] is big);
    // with speculation, each sequence's K + 1 verified tokens.
    maxRows: Math.max(maxSeqs * (1 + (o.speculative?.numTokens ?? 0)), Math.min(maxTokens, 64)),
    blockSize,
    numBlocks: o.numBlocks ?? maxSeqs * maxBlocksPerSeq,
    maxBlocksPerSeq,
    // Two of the largest images (each merge² patches per vector), and at least a step's worth of tokens.
    imageStoreRows: !vision ? 0 : o.imageStoreRows ?? Math.max(maxTokens, 2 * maxImageTokens(config)),
  };
}

/** Vectors (tokens) of the largest image the config accepts. */
function maxImageTokens(config: Mistral4Config): number {
  const v = config.vision_config;
  return v ? (Math.ceil(v.image_size / (v.patch_size * v.spatial_merge_size))) ** 2 : 0;
}

function buildStepGraph(
  family: ModelFamily,
  config: Mistral4Config,
  l: ModelLimits,
  o: LoadModelOptions & { eagleHidden?: boolean },
): Graph {
  const g = new GraphBuilder();
  family.build(g, config, {
    maxTokens: l.maxTokens,
    maxSeqs: l.maxSeqs,
    maxRows: l.maxRows,
    numBlocks: l.numBlocks,
    blockSize: l.blockSize,
    maxBlocksPerSeq: l.maxBlocksPerSeq,
    linearDtype: o.dtype,
    headDtype: o.headDType,
    attention: o.attention,
    cacheDtype: o.cacheDtype,
    maxImageRows: o.vision ? l.maxTokens : 0,
    imageStoreRows: l.imageStoreRows,
    sample: o.sampling,
    eagleHidden: o.eagleHidden,
  });
  return g.build();
}

/** Whether `backend` runs the node named `name` of `graph`. */
function runsNode(backend: Backend, graph: Graph, name: string): boolean {
  const table = tensorTable(graph), node = graph.nodes.find((n) => n.name === name)!;
  return backend.supports(node, node.inputs.map((i) => table[i]));
}

/**
 * Whether every op of the vision tower's stage graphs runs on some backend of `backends` (a GPU backend may feed
 * image rows to the decoder yet not run the tower itself: then the model loads without images unless another
 * backend of the list runs what it lacks).
 */
function runsVisionTower(backends: readonly Backend[], resolved: { family: ModelFamily; config: Mistral4Config }) {
  for (const { graph } of visionStageGraphs(resolved.family, resolved.config, { imageStoreRows: 1 })) {
    const table = tensorTable(graph);
    for (const node of graph.nodes) {
      const inputs = node.inputs.map((i) => table[i]);
      if (!backends.some((b) => b.supports(node, inputs))) return false;
    }
  }
  return true;
}

/** Whether `backend` runs `scatter_rows` on f32 embeddings (the op that feeds image vectors to the decoder). */
function runsScatterRows(backend: Backend): boolean {
  const t = (id: number, shape: number[], dtype: "f32" | "i32") => ({
    id,
    kind: "input" as const,
    name: "",
    shape,
    dtype,
  });
  const inputs = [t(0, [2, 4], "f32"), t(1, [1], "i32"), t(2, [1, 4], "f32")];
  const node = {
    id: 3,
    op: scatterRowsOp.name,
    inputs: [0, 1, 2],
    attrs: {},
    shape: [2, 4],
    dtype: "f32" as const,
    name: "",
  };
  return backend.supports(node, inputs);
}
