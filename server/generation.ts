/**
 * What chat and legacy completions share around a generation: one engine request per choice, the abort wiring
 * (client gone → engine sequences freed), timing and usage bookkeeping, and the SSE response with error reporting.
 *
 * @module
 */

import type { ImageInput, SamplingParams } from "../engine/types.ts";
import { type ChoiceEvent, runChoices, type RunOptions, type TextStage } from "./choices.ts";
import type { RequestRecord, ServerContext } from "./context.ts";
import { toApiError } from "./errors.ts";
import type { PieceText } from "./stop.ts";
import { sseResponse } from "./sse.ts";

/** OpenAI's usage object. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** One prompt of a request with its token budget. */
export interface PromptSpec {
  ids: number[];
  maxTokens: number;
}

/** One generation request, ready to run: `n` choices per prompt. */
export interface GenerationSpec<P> {
  prompts: PromptSpec[];
  images: ImageInput[];
  sampling: SamplingParams;
  /** Top-logprobs count, or null for none. */
  logprobs: number | null;
  n: number;
  stops: string[];
  stopIds: number[];
  makeStage: () => TextStage<P>;
  pieceText: PieceText<P>;
}

/**
 * A running generation: iterate `events` (choice `p·n + k` is choice k of prompt p); `usage()` is final once they
 * end. Aborts when `clientSignal` fires (the client went away, or the server's shutdown grace is over) or
 * {@link Run.abort} is called; the choices then end with finish reason `abort`.
 */
export class Run<P> {
  readonly events: AsyncGenerator<ChoiceEvent<P>>;
  readonly #controller = new AbortController();
  readonly #record: RequestRecord;
  readonly #ctx: ServerContext;
  readonly #promptTokens: number;
  #completionTokens = 0;
  #cachedTokens = 0;
  #onClientAbort = () => this.abort();
  #clientSignal: AbortSignal;

  constructor(ctx: ServerContext, record: RequestRecord, spec: GenerationSpec<P>, clientSignal: AbortSignal) {
    this.#ctx = ctx;
    this.#record = record;
    // Usage counts each prompt once, however many choices it has (as OpenAI and vLLM do).
    this.#promptTokens = spec.prompts.reduce((sum, p) => sum + p.ids.length, 0);
    this.#clientSignal = clientSignal;
    clientSignal.addEventListener("abort", this.#onClientAbort, { once: true });
    if (clientSignal.aborted) this.abort();
    record.promptTokens = this.#promptTokens;
    const base = spec.logprobs === null ? spec.sampling : { ...spec.sampling, logprobs: spec.logprobs };
    const requests: RunOptions<P>["requests"] = [];
    for (const prompt of spec.prompts) {
      for (let k = 0; k < spec.n; k++) {
        // Choice k of a seeded request uses seed + k: reproducible, yet the choices differ.
        const sampling = base.seed === undefined ? base : { ...base, seed: base.seed + k };
        requests.push({
          promptIds: prompt.ids,
          sampling,
          maxTokens: prompt.maxTokens,
          stopIds: spec.stopIds,
          images: spec.images,
        });
      }
    }
    const options: RunOptions<P> = {
      engine: ctx.engine,
      requests,
      stops: spec.stops,
      makeStage: spec.makeStage,
      pieceText: spec.pieceText,
      signal: this.#controller.signal,
      metrics: ctx.metrics,
      onFirstToken: () => {
        if (record.ttftMs !== undefined) return;
        record.ttftMs = performance.now() - record.start;
        ctx.metrics.timeToFirstToken(record.ttftMs / 1000);
      },
    };
    this.events = this.#track(runChoices(options));
  }

  /** Stops every choice and frees their engine sequences. */
  abort(): void {
    this.#controller.abort();
  }

  /** Usage so far (final after the events end). */
  usage(): Usage {
    return {
      prompt_tokens: this.#promptTokens,
      completion_tokens: this.#completionTokens,
      total_tokens: this.#promptTokens + this.#completionTokens,
      prompt_tokens_details: { cached_tokens: this.#cachedTokens },
    };
  }

  async *#track(events: AsyncGenerator<ChoiceEvent<P>>): AsyncGenerator<ChoiceEvent<P>> {
    try {
      for await (const ev of events) {
        if (ev.type === "end") {
          this.#completionTokens += ev.completionTokens;
          this.#cachedTokens = Math.max(this.#cachedTokens, ev.cachedTokens);
        }
        yield ev;
      }
    } finally {
      this.#clientSignal.removeEventListener("abort", this.#onClientAbort);
      this.#record.completionTokens = this.#completionTokens;
      this.#ctx.metrics.tokens(this.#promptTokens, this.#completionTokens);
      this.#ctx.metrics.requestLatency((performance.now() - this.#record.start) / 1000);
    }
  }
}

/**
 * Streams `chunks` as SSE. A failure mid-stream becomes one OpenAI-shaped error event before `[DONE]` (the status
 * line has already gone out); the client leaving aborts `run`.
 */
export function streamResponse<P>(
  ctx: ServerContext,
  record: RequestRecord,
  run: Run<P>,
  chunks: AsyncGenerator<unknown>,
): Response {
  let resolveDone!: () => void;
  record.done = new Promise((resolve) => resolveDone = resolve);
  async function* guarded(): AsyncGenerator<unknown> {
    try {
      yield* chunks;
    } catch (e) {
      const err = toApiError(e);
      record.status = err.status;
      if (err.status >= 500) ctx.logger.error(`request ${record.id} failed mid-stream`, e);
      yield err.toJSON();
    }
  }
  const onCancel = () => {
    // nginx's "client closed request": the log and metrics show streams the client abandoned.
    record.status = 499;
    run.abort();
  };
  return sseResponse(guarded(), { onCancel, onClose: resolveDone }, { "x-request-id": record.id });
}
