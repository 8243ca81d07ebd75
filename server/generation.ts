/**
 * What chat and legacy completions share around a generation: one engine request per choice, the abort wiring
 * (client gone → engine sequences freed), timing and usage bookkeeping, and the SSE response with error reporting.
 *
 * @module
 */

import {
  type ChoiceEvent,
  choiceRequests,
  type ChoiceSpec,
  runChoices,
  type RunOptions,
  type TextStage,
} from "../engine/choices.ts";
import type { PieceText } from "../engine/stop.ts";
import type { Usage } from "../engine/chat_output.ts";
import type { RequestRecord, ServerContext } from "./context.ts";
import { toApiError } from "./errors.ts";
import { sseResponse } from "./sse.ts";

export type { Usage } from "../engine/chat_output.ts";
export type { PromptSpec } from "../engine/choices.ts";

/** One generation request, ready to run: `n` choices per prompt. */
export interface GenerationSpec<P> extends ChoiceSpec {
  stops: string[];
  makeStage: () => TextStage<P>;
  pieceText: PieceText<P>;
  /** The server's default token limit when it bounds this request (see `defaultLimit`); a choice stopped there logs. */
  defaultLimit?: number | null;
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
  readonly #defaultLimit: number | null;

  constructor(ctx: ServerContext, record: RequestRecord, spec: GenerationSpec<P>, clientSignal: AbortSignal) {
    this.#ctx = ctx;
    this.#record = record;
    // Usage counts each prompt once, however many choices it has (as OpenAI and vLLM do).
    this.#promptTokens = spec.prompts.reduce((sum, p) => sum + p.ids.length, 0);
    this.#clientSignal = clientSignal;
    this.#defaultLimit = spec.defaultLimit ?? null;
    clientSignal.addEventListener("abort", this.#onClientAbort, { once: true });
    if (clientSignal.aborted) this.abort();
    record.promptTokens = this.#promptTokens;
    const options: RunOptions<P> = {
      engine: ctx.engine,
      requests: choiceRequests(spec),
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
    let logged = false;
    try {
      for await (const ev of events) {
        if (ev.type === "end") {
          this.#completionTokens += ev.completionTokens;
          this.#cachedTokens = Math.max(this.#cachedTokens, ev.cachedTokens);
          const limit = this.#defaultLimit;
          if (!logged && ev.finishReason === "length" && ev.completionTokens === limit) {
            // Once per request: an answer cut by the server's default, not by anything the client asked for.
            logged = true;
            this.#ctx.logger.info(
              `${this.#record.id} stopped at ${limit} tokens, the server's limit for requests without max_tokens ` +
                `(--max-tokens-default); send max_tokens for a longer answer`,
            );
          }
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
