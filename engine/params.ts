/**
 * Validation of the request fields that chat and legacy completions share: streaming, sampling, stops, limits.
 * Every range error is an `InvalidRequestError` (the server's 400) with `param` set, worded like OpenAI's own.
 * The server checks `model` itself (a 404); the library serves the one model it loaded.
 *
 * @module
 */

import { badRequest } from "../chat/errors.ts";
import type { RequestContext } from "./request_context.ts";
import type { SamplingParams } from "./types.ts";

/**
 * Sampling defaults. Temperature 0.7 is what Mistral documents for Mistral Small 4 (0.7 with reasoning, up to 0.7
 * without); the rest switch their filter off.
 */
export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 0.7,
  topP: 1,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

/** The shared fields, checked and with defaults applied. */
export interface CommonParams {
  stream: boolean;
  includeUsage: boolean;
  /** `max_completion_tokens` ?? `max_tokens`, if given. */
  maxTokens: number | null;
  n: number;
  sampling: SamplingParams;
  stops: string[];
  stopIds: number[];
}

/** OpenAI allows this many stop strings. */
const MAX_STOPS = 4;
/** OpenAI's limit on `top_logprobs` (chat) and vLLM's on `logprobs` (completions). */
export const MAX_TOP_LOGPROBS = 20;
const MAX_N = 128;

/** Fields that change the output and that this server cannot honour: refusing beats silently ignoring them. */
const UNSUPPORTED: Record<string, string> = {
  logit_bias: "logit_bias is not supported yet",
  functions: "functions is deprecated and not supported; send tools instead",
  function_call: "function_call is deprecated and not supported; send tool_choice instead",
  audio: "audio output is not supported by this model",
  prediction: "predicted outputs are not supported",
  web_search_options: "web search is not supported",
  suffix: "suffix (fill-in-the-middle) is not supported yet",
  best_of: "best_of is not supported; use n",
  guided_json: 'guided_json is not supported; send response_format {"type": "json_schema", ...} instead',
  guided_regex: "guided_regex is not supported; constrained decoding takes JSON schemas (response_format)",
  guided_choice: 'guided_choice is not supported; send response_format with a schema {"enum": [...]} instead',
  guided_grammar: "guided_grammar is not supported; constrained decoding takes JSON schemas (response_format)",
};

/** Values of unsupported fields that mean "not used", so clients that always send them still work. */
function isUnused(key: string, value: unknown, body: Record<string, unknown>): boolean {
  if (value === null || value === undefined) return true;
  if (key === "logit_bias") return typeof value === "object" && Object.keys(value as object).length === 0;
  if (key === "best_of") return value === 1 || value === (body.n ?? 1);
  return false;
}

/** Throws a 400 for a field the server refuses (see {@link UNSUPPORTED}). */
export function rejectUnsupported(body: Record<string, unknown>, ignore: readonly string[] = []): void {
  for (const [key, why] of Object.entries(UNSUPPORTED)) {
    if (ignore.includes(key) || !(key in body) || isUnused(key, body[key], body)) continue;
    throw badRequest(`${why}.`, key, "unsupported_parameter");
  }
}

/** Fields both endpoints read. */
const COMMON_FIELDS = [
  "model",
  "stream",
  "stream_options",
  "max_tokens",
  "n",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "presence_penalty",
  "frequency_penalty",
  "repetition_penalty",
  "seed",
  "stop",
  "stop_token_ids",
  "logprobs",
  // Accepted and ignored: they do not change the output.
  "user",
  "metadata",
  "store",
  "service_tier",
  "safety_identifier",
  "prompt_cache_key",
];

/**
 * Logs the fields the server does not know. They are ignored rather than refused, as vLLM and llama.cpp do,
 * because clients add vendor fields freely; fields that would change the output are refused by
 * {@link rejectUnsupported} instead.
 */
export function warnUnknownFields(
  ctx: RequestContext,
  id: string,
  body: Record<string, unknown>,
  endpointFields: readonly string[],
): void {
  const unknown = Object.keys(body).filter((k) =>
    !COMMON_FIELDS.includes(k) && !endpointFields.includes(k) && !(k in UNSUPPORTED)
  );
  if (unknown.length > 0) ctx.logger.warn(`${id}: ignoring unknown request fields: ${unknown.join(", ")}`);
}

function isAbsent(v: unknown): v is null | undefined {
  return v === undefined || v === null;
}

/** A number field in [min, max] (bounds inclusive unless `openMin`), or the default when absent. */
export function numberField(
  body: Record<string, unknown>,
  key: string,
  fallback: number,
  min: number,
  max: number,
  openMin = false,
): number {
  const v = body[key];
  if (isAbsent(v)) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) throw badRequest(`${key} must be a number.`, key);
  if (v > max || v < min || (openMin && v === min)) {
    const range = `${openMin ? "greater than" : "at least"} ${min} and at most ${max}`;
    throw badRequest(`${key} must be ${range}, got ${v}.`, key, "invalid_value");
  }
  return v;
}

/** An integer field in [min, max], or null when absent. */
export function intField(body: Record<string, unknown>, key: string, min: number, max: number): number | null {
  const v = body[key];
  if (isAbsent(v)) return null;
  if (typeof v !== "number" || !Number.isInteger(v)) throw badRequest(`${key} must be an integer.`, key);
  if (v < min || v > max) {
    throw badRequest(`${key} must be between ${min} and ${max}, got ${v}.`, key, "invalid_value");
  }
  return v;
}

/** A boolean field, or the default when absent. */
export function boolField(body: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = body[key];
  if (isAbsent(v)) return fallback;
  if (typeof v !== "boolean") throw badRequest(`${key} must be true or false.`, key);
  return v;
}

function stopStrings(v: unknown): string[] {
  if (isAbsent(v)) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw badRequest("stop must be a string or a list of strings.", "stop");
  }
  if (list.length > MAX_STOPS) throw badRequest(`stop takes at most ${MAX_STOPS} strings.`, "stop", "invalid_value");
  return (list as string[]).filter((s) => s !== "");
}

function stopTokenIds(ctx: RequestContext, v: unknown): number[] {
  if (isAbsent(v)) return [];
  const vocab = ctx.tokenizer.usedVocabSize;
  if (!Array.isArray(v) || v.some((id) => !Number.isInteger(id) || id < 0 || id >= vocab)) {
    throw badRequest(`stop_token_ids must be a list of token ids in 0..${vocab - 1}.`, "stop_token_ids");
  }
  return v as number[];
}

/**
 * Checks the shared fields. `logprobs` is endpoint-specific and filled in by the caller.
 *
 * @example
 * ```ts
 * const p = commonParams(ctx, { temperature: 0, max_tokens: 8, stop: ["\n"] });
 * // p.sampling.temperature === 0, p.maxTokens === 8, p.stops = ["\n"]
 * ```
 */
export function commonParams(ctx: RequestContext, body: Record<string, unknown>): CommonParams {
  const stream = boolField(body, "stream", false);
  const options = body.stream_options;
  if (!isAbsent(options) && (typeof options !== "object" || Array.isArray(options))) {
    throw badRequest("stream_options must be an object.", "stream_options");
  }
  const includeUsage = boolField((options ?? {}) as Record<string, unknown>, "include_usage", false);
  if (!isAbsent(options) && !stream) {
    throw badRequest("stream_options is only allowed when stream is true.", "stream_options");
  }
  const maxTokens = intField(body, "max_completion_tokens", 1, Number.MAX_SAFE_INTEGER) ??
    intField(body, "max_tokens", 1, Number.MAX_SAFE_INTEGER);
  const d = ctx.defaults;
  const topK = intField(body, "top_k", -1, Number.MAX_SAFE_INTEGER);
  const sampling: SamplingParams = {
    temperature: numberField(body, "temperature", d.temperature, 0, 2),
    topP: numberField(body, "top_p", d.topP, 0, 1, true),
    // vLLM's convention: -1 and 0 both mean "no top-k".
    topK: topK === null ? d.topK : Math.max(0, topK),
    minP: numberField(body, "min_p", d.minP, 0, 1),
    presencePenalty: numberField(body, "presence_penalty", d.presencePenalty, -2, 2),
    frequencyPenalty: numberField(body, "frequency_penalty", d.frequencyPenalty, -2, 2),
  };
  const repetition = numberField(body, "repetition_penalty", d.repetitionPenalty ?? 1, 0, 2, true);
  if (repetition !== 1) sampling.repetitionPenalty = repetition;
  const seed = intField(body, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (seed !== null) sampling.seed = seed;
  return {
    stream,
    includeUsage,
    maxTokens,
    n: intField(body, "n", 1, MAX_N) ?? 1,
    sampling,
    stops: stopStrings(body.stop),
    stopIds: stopTokenIds(ctx, body.stop_token_ids),
  };
}

/**
 * The server's default limit (`--max-tokens-default`) when it is what bounds a request: the request set no
 * `max_tokens` and the endpoint fell back on it (`fallback`); else null. A choice stopped there logs one line.
 */
export function defaultLimit(ctx: RequestContext, requested: number | null, fallback: number | null): number | null {
  const limit = ctx.maxTokensDefault ?? null;
  return requested === null && limit !== null && fallback === limit ? fallback : null;
}

/**
 * The token budget of a request, as vLLM decides it: a prompt that leaves no room is a 400; `max_tokens` that
 * would run past the context is a 400 (not clamped); no `max_tokens` means "the rest of the context" (or
 * `fallback` when the endpoint has one, clamped to the context).
 */
export function tokenBudget(
  ctx: RequestContext,
  promptTokens: number,
  maxTokens: number | null,
  fallback: number | null,
  promptParam: string,
): number {
  const limit = ctx.engine.maxModelLen;
  if (promptTokens >= limit) {
    throw badRequest(
      `This model's maximum context length is ${limit} tokens. However, your request has ${promptTokens} input ` +
        `tokens, which leaves no room to generate. Please reduce the length of the input.`,
      promptParam,
      "context_length_exceeded",
    );
  }
  const room = limit - promptTokens;
  if (maxTokens === null) return Math.min(fallback ?? room, room);
  if (maxTokens > room) {
    throw badRequest(
      `max_tokens is too large: ${maxTokens}. This model's maximum context length is ${limit} tokens and your ` +
        `request has ${promptTokens} input tokens (${maxTokens} > ${limit} - ${promptTokens}). Lower max_tokens ` +
        `(or max_completion_tokens) or shorten the input.`,
      "max_tokens",
      "context_length_exceeded",
    );
  }
  return maxTokens;
}
