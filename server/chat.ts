/**
 * `POST /v1/chat/completions`: whole and streamed responses in OpenAI's shapes, with reasoning (as both
 * `reasoning` and `reasoning_content`, the names vLLM and others use), tool calls, logprobs and usage.
 *
 * @module
 */

import { collectDeltas, type Delta, OutputStreamParser, type ToolCall } from "../chat/parse.ts";
import type { GeneratedToken } from "../engine/types.ts";
import type { ChoiceEvent, EndEvent } from "./choices.ts";
import { chatParams } from "./chat_request.ts";
import type { RequestRecord, ServerContext } from "./context.ts";
import { badRequest, jsonResponse } from "./errors.ts";
import { promptImages } from "./images.ts";
import { type ChatLogprob, chatLogprobs } from "./logprobs.ts";
import { defaultLimit, tokenBudget } from "./params.ts";
import { Run, streamResponse, type Usage } from "./generation.ts";
import type { PieceText } from "./stop.ts";

const deltaText: PieceText<Delta> = {
  text: (d) => d.type === "tool_call" ? d.arguments ?? "" : d.text,
  withText: (d, text) => d.type === "tool_call" ? { ...d, arguments: text } : { ...d, text },
};

/** A streamed delta: only the keys that changed. */
interface ChunkDelta {
  role?: "assistant";
  content?: string | null;
  reasoning?: string;
  reasoning_content?: string;
  tool_calls?: {
    index: number;
    id?: string;
    type?: "function";
    function: { name?: string; arguments: string };
  }[];
}

/**
 * Groups parser deltas into chunk deltas, one per run of the same kind, so the order of content, reasoning and
 * tool calls is kept; a call's announcement and its first argument pieces share one entry.
 */
function toChunkDeltas(pieces: readonly Delta[]): ChunkDelta[] {
  const out: ChunkDelta[] = [];
  let last: ChunkDelta | undefined;
  for (const p of pieces) {
    if (p.type === "content") {
      if (last?.content !== undefined) last.content += p.text;
      else out.push(last = { content: p.text });
    } else if (p.type === "reasoning") {
      if (last?.reasoning !== undefined) {
        last.reasoning += p.text;
        last.reasoning_content += p.text;
      } else out.push(last = { reasoning: p.text, reasoning_content: p.text });
    } else {
      if (last?.tool_calls === undefined) out.push(last = { tool_calls: [] });
      const calls = last.tool_calls!;
      const tail = calls[calls.length - 1];
      const args = p.arguments ?? "";
      if (p.id !== undefined || p.name !== undefined) {
        calls.push({ index: p.index, id: p.id, type: "function", function: { name: p.name, arguments: args } });
      } else if (tail?.index === p.index) {
        tail.function.arguments += args;
      } else {
        calls.push({ index: p.index, function: { arguments: args } });
      }
    }
  }
  return out;
}

/** `tool_calls` when a choice that ended normally made calls (OpenAI's rule). */
function chatFinishReason(end: EndEvent, madeCalls: boolean): string {
  return end.finishReason === "stop" && madeCalls ? "tool_calls" : end.finishReason;
}

interface ChoiceState {
  pieces: Delta[];
  tokens: GeneratedToken[];
  end?: EndEvent;
}

/** Handles one chat-completions request (body already parsed). */
export async function handleChat(
  ctx: ServerContext,
  record: RequestRecord,
  body: Record<string, unknown>,
  clientSignal: AbortSignal,
): Promise<Response> {
  const params = chatParams(ctx, record.id, body);
  const prompt = await promptImages(ctx, params.promptIds, params.images, { signal: clientSignal });
  const maxTokens = tokenBudget(ctx, prompt.ids.length, params.maxTokens, ctx.maxTokensDefault, "messages");
  const minTokens = params.sampling.constraint?.minTokens ?? 0;
  if (minTokens > maxTokens) {
    throw badRequest(
      `max_tokens is too small: ${maxTokens}. The shortest output that completes the requested JSON or tool call ` +
        `needs up to ${minTokens} tokens; raise max_tokens (or max_completion_tokens).`,
      params.maxTokens === null ? "messages" : "max_tokens",
      "invalid_value",
    );
  }
  const run = new Run<Delta>(ctx, record, {
    ...params,
    images: prompt.images,
    prompts: [{ ids: prompt.ids, maxTokens }],
    defaultLimit: defaultLimit(ctx, params.maxTokens, ctx.maxTokensDefault),
    makeStage: () => new OutputStreamParser(ctx.tokenizer),
    pieceText: deltaText,
  }, clientSignal);
  const created = Math.floor(Date.now() / 1000);
  const base = { id: record.id, object: "chat.completion.chunk", created, model: ctx.modelName };
  if (params.stream) {
    return streamResponse(
      ctx,
      record,
      run,
      streamChunks(ctx, run, base, params.n, params.logprobs, params.includeUsage),
    );
  }

  const states: ChoiceState[] = Array.from({ length: params.n }, () => ({ pieces: [], tokens: [] }));
  for await (const ev of run.events) collect(states[ev.choice], ev);
  const choices = states.map((s, index) => {
    const parsed = collectDeltas(s.pieces);
    const message: {
      role: "assistant";
      content: string | null;
      reasoning: string | null;
      reasoning_content: string | null;
      tool_calls?: ToolCall[];
    } = {
      role: "assistant",
      content: parsed.content,
      reasoning: parsed.reasoning,
      reasoning_content: parsed.reasoning,
    };
    if (parsed.toolCalls.length > 0) message.tool_calls = parsed.toolCalls;
    return {
      index,
      message,
      logprobs: params.logprobs === null ? null : { content: chatLogprobs(ctx.tokenizer, s.tokens) },
      finish_reason: chatFinishReason(s.end!, parsed.toolCalls.length > 0),
      stop_reason: s.end!.stopReason,
    };
  });
  return jsonResponse(
    { id: record.id, object: "chat.completion", created, model: ctx.modelName, choices, usage: run.usage() },
    200,
    { "x-request-id": record.id },
  );
}

function collect(state: ChoiceState, ev: ChoiceEvent<Delta>): void {
  state.tokens.push(...ev.tokens);
  if (ev.type === "pieces") state.pieces.push(...ev.pieces);
  else state.end = ev;
}

/** The SSE chunks of a streamed chat completion. */
async function* streamChunks(
  ctx: ServerContext,
  run: Run<Delta>,
  base: Record<string, unknown>,
  n: number,
  logprobs: number | null,
  includeUsage: boolean,
): AsyncGenerator<unknown> {
  // With include_usage every chunk carries `usage: null` and a last one the totals, as OpenAI streams it.
  const extra = includeUsage ? { usage: null } : {};
  const chunk = (index: number, delta: ChunkDelta, tokens: GeneratedToken[], finish: EndEvent | null) => {
    const lp: { content: ChatLogprob[] } | null = logprobs === null
      ? null
      : { content: chatLogprobs(ctx.tokenizer, tokens) };
    const choice: Record<string, unknown> = { index, delta, logprobs: lp, finish_reason: null };
    if (finish !== null) {
      choice.finish_reason = chatFinishReason(finish, madeCalls[index]);
      choice.stop_reason = finish.stopReason;
    }
    return { ...base, choices: [choice], ...extra };
  };
  const madeCalls = new Array<boolean>(n).fill(false);
  // The role comes first and alone, before any token (llama.cpp and vLLM do the same).
  for (let i = 0; i < n; i++) yield chunk(i, { role: "assistant", content: null }, [], null);
  for await (const ev of run.events) {
    if (ev.type === "pieces") {
      let tokens = ev.tokens;
      for (const delta of toChunkDeltas(ev.pieces)) {
        if (delta.tool_calls !== undefined) madeCalls[ev.choice] = true;
        yield chunk(ev.choice, delta, tokens, null);
        tokens = []; // the step's tokens go with its first chunk
      }
    } else {
      yield chunk(ev.choice, {}, ev.tokens, ev);
    }
  }
  if (includeUsage) yield { ...base, choices: [], usage: run.usage() satisfies Usage };
}
