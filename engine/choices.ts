/**
 * Runs the `n` choices of one request through the engine and turns tokens into output pieces: token ids → a text
 * stage (the chat parser, or plain detokenizing for completions) → stop strings → events. Streaming and whole
 * responses use the same path, so a streamed answer always concatenates to the non-streamed one.
 *
 * @module
 */

import { type PieceText, StopMatcher } from "./stop.ts";
import type {
  EndReason,
  Engine,
  GeneratedToken,
  GenerateRequest,
  Generation,
  ImageInput,
  SamplingParams,
} from "./types.ts";

/** Turns token ids into pieces, holding back what it cannot decide yet. */
export interface TextStage<P> {
  push(id: number): P[];
  finish(): P[];
}

/** Why a choice ended, as the API reports it (`tool_calls` is decided by the chat route). */
export type FinishReason = "stop" | "length" | "abort";

/** Pieces that became certain, with the tokens consumed since the previous event (for logprobs). */
export interface PiecesEvent<P> {
  type: "pieces";
  choice: number;
  pieces: P[];
  tokens: GeneratedToken[];
}

/** The end of one choice. */
export interface EndEvent {
  type: "end";
  choice: number;
  finishReason: FinishReason;
  /** The stop string or stop token id that ended it (vLLM's `stop_reason`); null for `</s>` and length. */
  stopReason: string | number | null;
  /** Tokens the model generated for this choice, an ending `</s>` or stop id included (as vLLM counts). */
  completionTokens: number;
  /** Tokens consumed since the last pieces event (their pieces were empty or cut by a stop string). */
  tokens: GeneratedToken[];
  cachedTokens: number;
}

/** What {@link runChoices} yields. */
export type ChoiceEvent<P> = PiecesEvent<P> | EndEvent;

/** Everything {@link runChoices} needs. */
export interface RunOptions<P> {
  engine: Engine;
  /** One engine request per choice, in choice order. */
  requests: Omit<GenerateRequest, "signal">[];
  stops: readonly string[];
  makeStage: () => TextStage<P>;
  pieceText: PieceText<P>;
  /** Aborts every choice (client gone). */
  signal: AbortSignal;
  /** Receives the gap between a choice's tokens (the server's `/metrics`); absent: not measured. */
  metrics?: { interTokenLatency(seconds: number): void };
  /** Called once, at the first token of any choice. */
  onFirstToken?: () => void;
}

/** One prompt of a request with its token budget. */
export interface PromptSpec {
  ids: number[];
  maxTokens: number;
}

/** What the engine requests of a request's choices are made of. */
export interface ChoiceSpec {
  prompts: PromptSpec[];
  images: ImageInput[];
  sampling: SamplingParams;
  /** Top-logprobs count, or null for none. */
  logprobs: number | null;
  /** Choices per prompt. */
  n: number;
  stopIds: number[];
}

/** One engine request per choice, in choice order (choice `p·n + k` is choice k of prompt p). */
export function choiceRequests(spec: ChoiceSpec): RunOptions<unknown>["requests"] {
  const base = spec.logprobs === null ? spec.sampling : { ...spec.sampling, logprobs: spec.logprobs };
  const requests: RunOptions<unknown>["requests"] = [];
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
  return requests;
}

function endReason(reason: EndReason): FinishReason {
  return reason === "length" ? "length" : reason === "abort" ? "abort" : "stop";
}

/** One choice: engine tokens through the text stage and the stop matcher. */
async function* runChoice<P>(options: RunOptions<P>, choice: number): AsyncGenerator<ChoiceEvent<P>> {
  const { engine, metrics } = options;
  const gen: Generation = engine.generate({ ...options.requests[choice], signal: options.signal });
  const stage = options.makeStage();
  const matcher = new StopMatcher(options.stops, options.pieceText);
  let tokens: GeneratedToken[] = [];
  let count = 0;
  let last = 0;
  try {
    let r = await gen.next();
    while (!r.done) {
      const now = performance.now();
      if (count === 0) options.onFirstToken?.();
      else metrics?.interTokenLatency((now - last) / 1000);
      last = now;
      count++;
      tokens.push(r.value);
      const pieces = matcher.push(stage.push(r.value.id));
      if (matcher.stopped !== null) {
        await gen.return({ reason: "abort", cachedTokens: 0 });
        yield { type: "pieces", choice, pieces, tokens };
        yield {
          type: "end",
          choice,
          finishReason: "stop",
          stopReason: matcher.stopped,
          completionTokens: count,
          tokens: [],
          cachedTokens: 0,
        };
        return;
      }
      if (pieces.length > 0) {
        yield { type: "pieces", choice, pieces, tokens };
        tokens = [];
      }
      r = await gen.next();
    }
    const end = r.value;
    const rest = matcher.push(stage.finish());
    const pieces = matcher.stopped === null ? [...rest, ...matcher.finish()] : rest;
    if (pieces.length > 0) {
      yield { type: "pieces", choice, pieces, tokens };
      tokens = [];
    }
    const byStopId = end.reason === "stop" && end.stopId !== undefined;
    yield {
      type: "end",
      choice,
      finishReason: matcher.stopped !== null ? "stop" : endReason(end.reason),
      stopReason: matcher.stopped ?? (byStopId ? end.stopId! : null),
      completionTokens: count + (end.reason === "eos" || end.reason === "stop" ? 1 : 0),
      tokens,
      cachedTokens: end.cachedTokens,
    };
  } finally {
    // Reached on early exit too (client gone, consumer stopped): the engine frees the sequence.
    await gen.return({ reason: "abort", cachedTokens: 0 });
  }
}

/**
 * Runs the choices concurrently and yields their events as they come (interleaved). Each choice is at most one
 * token ahead of the consumer, so a slow client slows generation instead of filling a buffer. Stopping the
 * iteration early ends every choice.
 *
 * @example
 * ```ts
 * for await (const ev of runChoices(options)) {
 *   if (ev.type === "pieces") send(ev.choice, ev.pieces);
 * }
 * ```
 */
export async function* runChoices<P>(options: RunOptions<P>): AsyncGenerator<ChoiceEvent<P>> {
  const runs = options.requests.map((_, k) => runChoice(options, k));
  const next = (k: number) => runs[k].next().then((r) => ({ k, r }));
  const pending = new Map(runs.map((_, k) => [k, next(k)]));
  try {
    while (pending.size > 0) {
      const { k, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(k);
        continue;
      }
      pending.set(k, next(k));
      yield r.value;
    }
  } finally {
    if (pending.size > 0) {
      // A choice failed or the consumer left: stop the others and let their engine sequences go. Their pending
      // steps may still reject; nobody awaits them any more, so mark them handled.
      for (const p of pending.values()) p.catch(() => {});
      await Promise.allSettled(runs.map((run) => run.return(undefined)));
    }
  }
}
