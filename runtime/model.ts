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

import type { DType } from "../graph/dtype.ts";
import { GraphBuilder } from "../graph/builder.ts";
import type { Graph } from "../graph/ir.ts";
import { type ModelFamily, resolveModel } from "../graph/models/mod.ts";
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import type { Backend } from "./backend.ts";
import { createBackend } from "./registry.ts";
import { Executor } from "./execute.ts";
import { BlockPool, type SequenceBlocks } from "./kv_cache.ts";
import { convertWeight } from "./weights/convert.ts";
import { type CanonicalWeight, loadCanonicalWeights, weightToF32 } from "./weights/load.ts";
import { configForDtype, randomCanonicalWeights } from "./weights/random.ts";

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** Backend name, or "auto" (default): the best available. */
  backend?: string;
  /**
   * Weight dtype (`--dtype`). For a preset, the dtype its random weights are made in (f32, bf16: every weight;
   * f8e4m3: the text linears). For any model, q8 (and a float dtype other than the checkpoint's) re-encodes the
   * quantisable linears at load. Default: the checkpoint's own (presets: bf16).
   */
  dtype?: DType;
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
  /** MLA form (default "absorbed"; "naive" for equivalence tests). */
  attention?: "absorbed" | "naive";
  /** No progress output while loading. */
  quiet?: boolean;
}

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
}

/** A model ready to run steps. */
export class Model {
  /** Model configuration. */
  readonly config: Mistral4Config;
  /** Preset name or checkpoint directory. */
  readonly name: string;
  /** The step graph. */
  readonly graph: Graph;
  /** Step geometry. */
  readonly limits: ModelLimits;
  /** Cache block bookkeeping shared by every sequence of this model. */
  readonly pool: BlockPool;
  readonly #executor: Executor;

  /** Use {@link loadModel}. */
  constructor(init: {
    config: Mistral4Config;
    name: string;
    graph: Graph;
    limits: ModelLimits;
    executor: Executor;
  }) {
    this.config = init.config;
    this.name = init.name;
    this.graph = init.graph;
    this.limits = init.limits;
    this.#executor = init.executor;
    this.pool = new BlockPool({ numBlocks: init.limits.numBlocks, blockSize: init.limits.blockSize });
  }

  /** The backend the model runs on. */
  get backend(): Backend {
    return this.#executor.backend;
  }

  /** Runs one step and returns logits `[logitRows.length, vocab]`. Cache entries of every token are written. */
  async step(input: StepInput): Promise<Float32Array> {
    const { ids, pos, seq, blockTables, logitRows } = input;
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
    const out = await this.#executor.run({
      inputs: {
        ids: Int32Array.from(ids),
        pos: Int32Array.from(pos),
        seq: Int32Array.from(seq),
        blockTable: table,
        logitRows: Int32Array.from(logitRows),
      },
    });
    return out.logits as Float32Array;
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

  /** Reads one layer's latent cache (for tests and debugging). */
  readCache(layer: number): Promise<Float32Array> {
    return this.#executor.readState(`layers.${layer}.cache`) as Promise<Float32Array>;
  }

  /** Frees the backend's memory. */
  dispose(): void {
    this.#executor.dispose();
    this.#executor.backend.dispose();
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
 */
export async function loadModel(spec: string, options: LoadModelOptions = {}): Promise<Model> {
  const resolved = await resolveModel(spec);
  let config = resolved.config;
  let weights: Map<string, CanonicalWeight>;
  if (resolved.source === "preset") {
    // Random weights are made in a checkpoint dtype; q8 is a load-time re-encoding of those.
    const made = options.dtype === "q8" ? undefined : options.dtype;
    config = configForDtype(config, made);
    weights = randomCanonicalWeights(config, { seed: options.seed ?? 0, dtype: made });
  } else {
    const loaded = await loadCanonicalWeights(spec, { quiet: options.quiet });
    config = loaded.config;
    weights = loaded.weights;
  }
  const limits = resolveLimits(config, options);
  const graph = buildStepGraph(resolved.family, config, limits, options);
  const backend = await createBackend(options.backend ?? "auto", { threads: options.threads });
  try {
    // The reference-style executor takes f32; values pass through the graph's stored dtype first, so they are
    // exactly what a backend holding that dtype computes with.
    const f32 = new Map<string, Float32Array>();
    for (const w of graph.weights) {
      const cw = weights.get(w.name);
      if (!cw) throw new Error(`model ${spec}: weight ${w.name} was not loaded`);
      f32.set(w.name, weightToF32(convertWeight(cw, w.dtype)));
      weights.delete(w.name);
    }
    const executor = await Executor.create(graph, backend, { weights: f32 });
    return new Model({ config, name: resolved.name, graph, limits, executor });
  } catch (e) {
    backend.dispose();
    throw e;
  }
}

function resolveLimits(config: Mistral4Config, o: LoadModelOptions): ModelLimits {
  const maxModelLen = o.maxModelLen ?? Math.min(config.max_position_embeddings, 4096);
  const maxTokens = o.maxTokens ?? 256;
  const maxSeqs = o.maxSeqs ?? 8;
  const blockSize = o.blockSize ?? 16;
  const maxBlocksPerSeq = Math.ceil(maxModelLen / blockSize);
  return {
    maxModelLen,
    maxTokens,
    maxSeqs,
    // Logit rows: one per sequence when generating, or a whole chunk for `forward` (bounded: [R, vocab] is big).
    maxRows: Math.max(maxSeqs, Math.min(maxTokens, 64)),
    blockSize,
    numBlocks: o.numBlocks ?? maxSeqs * maxBlocksPerSeq,
    maxBlocksPerSeq,
  };
}

function buildStepGraph(family: ModelFamily, config: Mistral4Config, l: ModelLimits, o: LoadModelOptions): Graph {
  const g = new GraphBuilder();
  family.build(g, config, {
    maxTokens: l.maxTokens,
    maxSeqs: l.maxSeqs,
    maxRows: l.maxRows,
    numBlocks: l.numBlocks,
    blockSize: l.blockSize,
    maxBlocksPerSeq: l.maxBlocksPerSeq,
    linearDtype: o.dtype,
    attention: o.attention,
  });
  return g.build();
}
