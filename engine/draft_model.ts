/**
 * The EAGLE draft head loaded beside a target model for speculative decoding (`LoadModelOptions.speculative`): its
 * options, its step (`DraftModel`), and how it is opened and declared next to the target (`openDraft`).
 *
 * @module
 */

import { BITS_PER_ELEMENT, type DType } from "../graph/dtype.ts";
import { GraphBuilder } from "../graph/builder.ts";
import type { Graph, Shape } from "../graph/ir.ts";
import { resolveModel } from "../graph/models/mod.ts";
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import { buildDraft, checkDraftFits, DRAFT_PREFIX } from "../graph/models/eagle.ts";
import type { PlanExecutor } from "../runtime/plan_executor.ts";
import type { Plan } from "../runtime/schedule.ts";
import type { LoadModelOptions, Model, ModelLimits, StepInput } from "./model.ts";
import { type ModelWeights, openModelWeights } from "./model_weights.ts";

/** Options of speculative decoding (vLLM's names: `--speculative-model`, `--num-speculative-tokens`). */
export interface SpeculativeOptions {
  /** The draft head: a preset (`tiny-eagle`, `demo-eagle`, …) or a checkpoint directory. */
  model: string;
  /** Tokens the draft proposes per step and sequence, 1..16. */
  numTokens: number;
}

/** Most tokens a draft may propose per step (`--num-speculative-tokens`). */
export const MAX_SPECULATIVE_TOKENS = 16;

/** Checks `--num-speculative-tokens`; returns it, or throws a RangeError saying what is allowed. */
export function checkSpeculativeTokens(k: number, flag = "--num-speculative-tokens"): number {
  if (!Number.isInteger(k) || k < 1 || k > MAX_SPECULATIVE_TOKENS) {
    throw new RangeError(`${flag} must be an integer from 1 to ${MAX_SPECULATIVE_TOKENS}, got ${k}`);
  }
  return k;
}

/**
 * One draft step: like {@link StepInput} (positions and block tables are the target's: the draft's caches have the
 * same geometry), plus where each token's conditioning hidden state lies in `eagle.hidden` and where the logits
 * rows' own hidden states go.
 */
export interface DraftStepInput extends StepInput {
  /** Row of `eagle.hidden` each token is conditioned on `[T]` (a target step's token index, or a draft output row). */
  hiddenRows: readonly number[];
  /** Row of `eagle.hidden` each logits row's final-norm output is written to `[R]` (−1: not kept). */
  hiddenOut: readonly number[];
}

/**
 * The EAGLE draft head loaded beside a target ({@link LoadModelOptions.speculative}): its config, how many tokens
 * it proposes, and its step (logits of its `logitRows`, read back).
 */
export class DraftModel {
  /** The draft's config (`eagle` set). */
  readonly config: Mistral4Config;
  /** The preset name or directory it was loaded from. */
  readonly name: string;
  /** Tokens proposed per step and sequence. */
  readonly numTokens: number;
  readonly #executor: PlanExecutor;
  readonly #target: Model;

  /** Use {@link loadModel} with `speculative`. */
  constructor(
    init: { config: Mistral4Config; name: string; numTokens: number; executor: PlanExecutor; target: Model },
  ) {
    this.config = init.config;
    this.name = init.name;
    this.numTokens = init.numTokens;
    this.#executor = init.executor;
    this.#target = init.target;
  }

  /** The draft's step graph (names of its own weights and caches prefixed `draft.`). */
  get graph(): Graph {
    return this.#executor.graph;
  }

  /** The draft's plan (its caches are its state). */
  get plan(): Plan {
    return this.#executor.plan;
  }

  /** Bytes of the draft's own caches (its graph's `draft.` state; `eagle.hidden` is the target's). */
  get cacheBytes(): number {
    return declaredBytes(this.#executor.graph.inputs.filter((i) => i.state && i.name.startsWith(DRAFT_PREFIX)));
  }

  /** Bytes of the draft's own weights as declared (the embedding and head are the target's). */
  get weightBytes(): number {
    return declaredBytes(this.#executor.graph.weights.filter((w) => w.name.startsWith(DRAFT_PREFIX)));
  }

  /** Runs one draft step and returns its logits `[logitRows.length, vocab]`. */
  async step(input: DraftStepInput): Promise<Float32Array> {
    const base = this.#target.stepInputs(input);
    const R = input.logitRows.length, T = input.ids.length;
    if (input.hiddenRows.length !== T) {
      throw new Error(`draft step: ${input.hiddenRows.length} hidden rows for ${T} tokens`);
    }
    if (input.hiddenOut.length !== R) {
      throw new Error(`draft step: ${input.hiddenOut.length} hidden outputs for ${R} rows`);
    }
    const rows = this.#target.limits.maxTokens;
    for (const r of [...input.hiddenRows, ...input.hiddenOut]) {
      if (!(r >= -1 && r < rows)) throw new Error(`draft step: hidden row ${r} outside 0..${rows - 1}`);
    }
    const { ids, pos, seq, blockTable, logitRows } = base;
    const inputs = {
      ids,
      pos,
      seq,
      blockTable,
      logitRows,
      hiddenRows: Int32Array.from(input.hiddenRows),
      hiddenOut: Int32Array.from(input.hiddenOut),
    };
    return (await this.#executor.run({ inputs, outputs: ["logits"] })).logits as Float32Array;
  }

  /** Frees the draft's executor (the shared residency is the target's). */
  dispose(): void {
    this.#executor.dispose();
  }
}

/** An opened draft head: its weights, config and step graph. */
export interface OpenedDraft {
  name: string;
  config: Mistral4Config;
  weights: ModelWeights;
  graph: Graph;
}

/** Opens the draft head of `speculative` for `target` and declares its step graph (names prefixed `draft.`). */
export async function openDraft(
  speculative: SpeculativeOptions,
  target: Mistral4Config,
  targetName: string,
  options: LoadModelOptions,
  limits: ModelLimits,
  linearDtype: DType | undefined,
): Promise<OpenedDraft> {
  checkSpeculativeTokens(speculative.numTokens, "speculative.numTokens");
  const resolved = await resolveModel(speculative.model);
  const weights = await openModelWeights(resolved, {
    dtype: options.dtype,
    seed: options.seed,
    group: "text",
    quiet: options.quiet,
  });
  try {
    const config = weights.config;
    checkDraftFits(target, config, { target: targetName, draft: speculative.model });
    if (weights.linearDtype !== linearDtype) {
      throw new Error(
        `--speculative-model ${speculative.model}: loads its linears as ${weights.linearDtype}, the target as ${linearDtype}`,
      );
    }
    const g = new GraphBuilder();
    buildDraft(g, config, target, {
      maxTokens: limits.maxTokens,
      maxSeqs: limits.maxSeqs,
      maxRows: limits.maxSeqs,
      numBlocks: limits.numBlocks,
      blockSize: limits.blockSize,
      maxBlocksPerSeq: limits.maxBlocksPerSeq,
      linearDtype,
      headDtype: options.headDType,
      attention: options.attention,
      cacheDtype: options.cacheDtype,
    });
    return { name: speculative.model, config, weights, graph: g.build() };
  } catch (e) {
    weights.close();
    throw e;
  }
}

/** Bytes of concrete-shaped declarations (state, weights) at their dtypes' widths. */
function declaredBytes(decls: readonly { shape: Shape; dtype: DType }[]): number {
  let bytes = 0;
  for (const d of decls) bytes += (d.shape as number[]).reduce((a, b) => a * b, 1) * BITS_PER_ELEMENT[d.dtype] / 8;
  return bytes;
}
