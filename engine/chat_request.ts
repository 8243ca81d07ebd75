/**
 * A chat-completions request body → prompt ids and generation settings. The prompt comes from the built-in v15
 * encoder (`chat/encode.ts`) or, with `--chat-template`, from the configured Jinja template (`chat/template.ts`).
 *
 * @module
 */

import { type ChatRequest, encodeChat, imagePartParam, imagePartUrl, type ImageRef } from "../chat/encode.ts";
import { badRequest } from "../chat/errors.ts";
import { encodeRenderedPrompt, renderChatTemplate } from "../chat/template.ts";
import { buildConstraint, ConstraintError } from "../grammar/constraint.ts";
import { chatConstraintSpec, parseToolChoice, type ToolChoice } from "../grammar/openai.ts";
import type { ChoiceSpec } from "./choices.ts";
import { promptImages } from "./images.ts";
import type { RequestContext } from "./request_context.ts";
import type { TokenConstraint } from "./types.ts";
import {
  boolField,
  type CommonParams,
  commonParams,
  intField,
  MAX_TOP_LOGPROBS,
  rejectUnsupported,
  tokenBudget,
  warnUnknownFields,
} from "./params.ts";

/** A checked chat request. */
export interface ChatParams extends CommonParams {
  promptIds: number[];
  /** The prompt's `[IMG]` placeholders and their URLs (see `images.ts`). */
  images: ImageRef[];
  /** Top-logprobs count (0 = chosen token only), or null when logprobs are off. */
  logprobs: number | null;
}

/** Chat-only fields the server reads (see `params.ts` for the shared ones). */
const CHAT_FIELDS = [
  "messages",
  "max_completion_tokens",
  "top_logprobs",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "reasoning_effort",
  "response_format",
  "modalities",
];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A constraint problem as the client's 400. */
function constraintError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ConstraintError) throw badRequest(e.message, e.param, e.code);
    throw e;
  }
}

/** Whether reasoning is on: the requested effort, or the tokenizer's default, is not "none". */
function reasoningOn(ctx: RequestContext, requested: unknown): boolean {
  const builder = ctx.tokenizer.modelSettings?.reasoning_effort;
  const fallback = isRecord(builder) && typeof builder.default === "string" ? builder.default : "none";
  const effort = requested ?? fallback;
  return typeof effort === "string" && effort !== "none";
}

/**
 * The request's output constraint (JSON answer, forced tool calls), compiled, or null when the output is free.
 * Built after the prompt so that the encoder has checked the tools' shape.
 */
function outputConstraint(ctx: RequestContext, body: Record<string, unknown>): TokenConstraint | null {
  return constraintError(() => {
    const spec = chatConstraintSpec(body, reasoningOn(ctx, body.reasoning_effort));
    return spec && buildConstraint(ctx.tokenizer, spec);
  });
}

function checkLogprobs(body: Record<string, unknown>): number | null {
  const enabled = boolField(body, "logprobs", false);
  const top = intField(body, "top_logprobs", 0, MAX_TOP_LOGPROBS);
  if (top !== null && !enabled && top > 0) {
    throw badRequest("top_logprobs needs logprobs set to true.", "top_logprobs");
  }
  return enabled ? top ?? 0 : null;
}

/** The prompt: the v15 encoder, or the configured template rendered and tokenized. */
function buildPrompt(ctx: RequestContext, request: ChatRequest): { ids: number[]; images: ImageRef[] } {
  if (ctx.chatTemplate === undefined) {
    const encoded = encodeChat(ctx.tokenizer, request);
    return { ids: encoded.ids, images: encoded.images };
  }
  // The template path has no validator of its own, so check the shape it will iterate over.
  if (!Array.isArray(request.messages) || request.messages.length === 0 || !request.messages.every(isRecord)) {
    throw badRequest("messages must be a non-empty list of message objects.", "messages", "invalid_value");
  }
  const tok = ctx.tokenizer;
  const text = renderChatTemplate(ctx.chatTemplate, request, {
    bosToken: tok.specialName(tok.bosId),
    eosToken: tok.specialName(tok.eosId),
    addGenerationPrompt: true,
  });
  const ids = encodeRenderedPrompt(tok, text);
  return { ids, images: templateImages(ids, request.messages, tok.specialId("[IMG]")) };
}

/**
 * The images of a template-rendered prompt: the template writes one `[IMG]` per image part, in message order, so
 * the n-th `[IMG]` is the n-th image part. A template that drops or repeats images would silently lose them, so a
 * count mismatch is a 400.
 */
function templateImages(ids: readonly number[], messages: ChatRequest["messages"], imgId: number): ImageRef[] {
  const parts: { url: string; param: string }[] = [];
  (messages as unknown[]).forEach((m, i) => {
    const content = isRecord(m) ? m.content : undefined;
    if (!Array.isArray(content)) return;
    content.forEach((part, j) => {
      if (!isRecord(part)) return;
      const at = `messages[${i}].content[${j}]`;
      const url = imagePartUrl(part, at);
      if (url !== null) parts.push({ url, param: imagePartParam(part, at) });
    });
  });
  const positions = ids.flatMap((id, i) => id === imgId ? [i] : []);
  if (positions.length !== parts.length) {
    throw badRequest(
      `The chat template wrote ${positions.length} [IMG] placeholders for ${parts.length} images; ` +
        `use a template that renders each image part as [IMG], or the built-in encoder.`,
      "messages",
      "unsupported_value",
    );
  }
  return positions.map((index, i) => ({ index, ...parts[i] }));
}

/**
 * Checks a chat-completions body and encodes its prompt.
 *
 * @example
 * ```ts
 * const p = chatParams(ctx, "chatcmpl-1", { messages: [{ role: "user", content: "Hi" }], max_tokens: 8 });
 * // p.promptIds starts with <s>; p.maxTokens === 8
 * ```
 */
export function chatParams(ctx: RequestContext, id: string, body: Record<string, unknown>): ChatParams {
  rejectUnsupported(body, ["suffix", "best_of"]);
  warnUnknownFields(ctx, id, body, CHAT_FIELDS);
  const forced = body.tool_choice === "required" || isRecord(body.tool_choice);
  if (body.parallel_tool_calls === false && !forced) {
    ctx.logger.warn(
      `${id}: parallel_tool_calls=false is enforced only with tool_choice "required" or a named function`,
    );
  }
  const common = commonParams(ctx, body);
  const toolChoice: ToolChoice = constraintError(() => parseToolChoice(body.tool_choice));
  const logprobs = checkLogprobs(body);
  if (body.messages === undefined || body.messages === null) {
    throw badRequest("messages is required: a non-empty list of messages.", "messages", "missing_required_parameter");
  }
  if (body.modalities !== undefined && body.modalities !== null) {
    const m = body.modalities;
    if (!Array.isArray(m) || m.some((x) => x !== "text")) {
      throw badRequest('Only text output is supported: modalities must be ["text"].', "modalities");
    }
  }
  const request: ChatRequest = {
    messages: body.messages as ChatRequest["messages"],
    // tool_choice "none": the model is not offered the tools, so it answers in text (the calls in the history stay).
    tools: toolChoice === "none" ? null : body.tools as ChatRequest["tools"],
    reasoning_effort: body.reasoning_effort as string | null | undefined,
  };
  const prompt = buildPrompt(ctx, request);
  const constraint = outputConstraint(ctx, body);
  const sampling = constraint ? { ...common.sampling, constraint } : common.sampling;
  // With tool_choice "none" a call must never come back: the model stops if it starts one anyway.
  const stopIds = toolChoice === "none" ? [...common.stopIds, ctx.tokenizer.specialId("[TOOL_CALLS]")] : common.stopIds;
  return { ...common, sampling, stopIds, promptIds: prompt.ids, images: prompt.images, logprobs };
}

/** A checked chat request with its images loaded and placed and its token budget set: ready to run. */
export interface PreparedChat extends Omit<ChatParams, "promptIds" | "images">, ChoiceSpec {}

/**
 * Checks a chat-completions body, loads its images into the prompt (`options.signal` cancels their downloads) and sets
 * its token budget. Every problem is an `InvalidRequestError` naming the field (the server's 400).
 *
 * @example
 * ```ts
 * const chat = await prepareChat(ctx, "chatcmpl-1", { messages: [{ role: "user", content: "Hi" }] });
 * // chat.prompts[0].maxTokens: ctx.maxTokensDefault, or the rest of the context
 * ```
 */
export async function prepareChat(
  ctx: RequestContext,
  id: string,
  body: Record<string, unknown>,
  options: { signal?: AbortSignal } = {},
): Promise<PreparedChat> {
  const { promptIds, images, ...params } = chatParams(ctx, id, body);
  const prompt = await promptImages(ctx, promptIds, images, options);
  const maxTokens = tokenBudget(ctx, prompt.ids.length, params.maxTokens, ctx.maxTokensDefault ?? null, "messages");
  const minTokens = params.sampling.constraint?.minTokens ?? 0;
  if (minTokens > maxTokens) {
    throw badRequest(
      `max_tokens is too small: ${maxTokens}. The shortest output that completes the requested JSON or tool call ` +
        `needs up to ${minTokens} tokens; raise max_tokens (or max_completion_tokens).`,
      params.maxTokens === null ? "messages" : "max_tokens",
      "invalid_value",
    );
  }
  return { ...params, images: prompt.images, prompts: [{ ids: prompt.ids, maxTokens }] };
}
