/**
 * A chat completion's output in OpenAI's shapes: the streamed chunks (`chat.completion.chunk`) and the whole
 * response (`chat.completion`), with reasoning (as both `reasoning` and `reasoning_content`, the names vLLM and
 * others use), tool calls, logprobs and usage. The server sends exactly these objects, and the library
 * ({@link createLLM}) yields them, so a program can switch between the two without changing how it reads them.
 *
 * @module
 */

import { collectDeltas, type Delta, type ToolCall } from "../chat/parse.ts";
import type { Tokenizer } from "../chat/tokenizer.ts";
import type { ChoiceEvent, EndEvent } from "./choices.ts";
import { type ChatLogprob, chatLogprobs } from "./logprobs.ts";
import type { PieceText } from "./stop.ts";
import type { GeneratedToken } from "./types.ts";

/** OpenAI's usage object. */
export interface Usage {
  /** Prompt tokens (each prompt once, however many choices), image tokens included. */
  prompt_tokens: number;
  /** Generated tokens of all choices, an ending `</s>` or stop id included. */
  completion_tokens: number;
  /** The two together. */
  total_tokens: number;
  /** Prompt tokens served from the prefix cache. */
  prompt_tokens_details: { cached_tokens: number };
}

/** Why a choice ended: `tool_calls` when it ended normally after making calls (OpenAI's rule). */
export type ChatFinishReason = "stop" | "length" | "tool_calls" | "abort";

/** One tool call's piece in a streamed delta: `id`, `type` and `name` come once, then `arguments` pieces. */
export interface ChatToolCallDelta {
  /** The call's position among the choice's calls. */
  index: number;
  /** Present in the call's first piece. */
  id?: string;
  /** Present in the call's first piece. */
  type?: "function";
  /** The name (first piece) and a piece of the argument text; the pieces concatenate to the arguments. */
  function: { name?: string; arguments: string };
}

/** A streamed delta: only the keys that changed. */
export interface ChatChunkDelta {
  /** In the first chunk of each choice only. */
  role?: "assistant";
  /** A piece of the answer (null in the role chunk). */
  content?: string | null;
  /** A piece of the reasoning (`[THINK]…[/THINK]`). */
  reasoning?: string;
  /** The same piece under the name DeepSeek and vLLM use. */
  reasoning_content?: string;
  /** Pieces of tool calls. */
  tool_calls?: ChatToolCallDelta[];
}

/** One choice's part of a streamed chunk. */
export interface ChatChunkChoice {
  /** Which choice (0 to n−1). */
  index: number;
  /** What this chunk adds. */
  delta: ChatChunkDelta;
  /** With `logprobs: true`: the tokens this chunk consumed. */
  logprobs: { content: ChatLogprob[] } | null;
  /** Set in the choice's last chunk. */
  finish_reason: ChatFinishReason | null;
  /** In the last chunk: the stop string or stop token id that ended the choice (vLLM's), or null. */
  stop_reason?: string | number | null;
}

/** One streamed chunk, as the server sends it in a `data:` line. */
export interface ChatCompletionChunk {
  /** The completion's id (`chatcmpl-…`), the same in every chunk. */
  id: string;
  /** Always `chat.completion.chunk`. */
  object: "chat.completion.chunk";
  /** Unix seconds. */
  created: number;
  /** The model's name. */
  model: string;
  /** One choice per chunk; none in the usage chunk. */
  choices: ChatChunkChoice[];
  /** With `stream_options.include_usage`: null in every chunk but the last, which has the totals. */
  usage?: Usage | null;
}

/** The message of a whole chat completion. */
export interface ChatCompletionMessage {
  /** Always `assistant`. */
  role: "assistant";
  /** The answer, or null when the model only reasoned or called tools. */
  content: string | null;
  /** The reasoning, or null when there was none. */
  reasoning: string | null;
  /** The same, under the name DeepSeek and vLLM use. */
  reasoning_content: string | null;
  /** Present when the model called tools; `arguments` is the model's JSON text. */
  tool_calls?: ToolCall[];
}

/** One choice of a whole chat completion. */
export interface ChatCompletionChoice {
  /** Which choice (0 to n−1). */
  index: number;
  /** The assistant's message. */
  message: ChatCompletionMessage;
  /** With `logprobs: true`: every generated token. */
  logprobs: { content: ChatLogprob[] } | null;
  /** Why it ended. */
  finish_reason: ChatFinishReason;
  /** The stop string or stop token id that ended it, or null. */
  stop_reason: string | number | null;
}

/** A whole chat completion, as the server answers a request without `stream`. */
export interface ChatCompletion {
  /** `chatcmpl-…`. */
  id: string;
  /** Always `chat.completion`. */
  object: "chat.completion";
  /** Unix seconds. */
  created: number;
  /** The model's name. */
  model: string;
  /** `n` of them. */
  choices: ChatCompletionChoice[];
  /** Token counts. */
  usage: Usage;
}

/** How the stop matcher reads and cuts parser deltas (tool-call deltas by their argument text). */
export const deltaText: PieceText<Delta> = {
  text: (d) => d.type === "tool_call" ? d.arguments ?? "" : d.text,
  withText: (d, text) => d.type === "tool_call" ? { ...d, arguments: text } : { ...d, text },
};

/**
 * Groups parser deltas into chunk deltas, one per run of the same kind, so the order of content, reasoning and
 * tool calls is kept; a call's announcement and its first argument pieces share one entry.
 */
export function toChunkDeltas(pieces: readonly Delta[]): ChatChunkDelta[] {
  const out: ChatChunkDelta[] = [];
  let last: ChatChunkDelta | undefined;
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
function chatFinishReason(end: EndEvent, madeCalls: boolean): ChatFinishReason {
  return end.finishReason === "stop" && madeCalls ? "tool_calls" : end.finishReason;
}

/** What {@link chatChunks} and {@link collectChatCompletion} need besides the events. */
export interface ChatOutputOptions {
  tokenizer: Tokenizer;
  /** The completion's id. */
  id: string;
  /** Unix seconds. */
  created: number;
  /** The model's name. */
  model: string;
  /** Choices. */
  n: number;
  /** Top-logprobs count, or null when logprobs are off. */
  logprobs: number | null;
  /** The usage, final once the events have ended. */
  usage: () => Usage;
}

/**
 * The streamed chunks of a chat completion: first a role chunk per choice, then the pieces as they become certain,
 * a last chunk per choice with its finish reason, and (with `includeUsage`) one with the usage.
 *
 * @example
 * ```ts
 * for await (const chunk of chatChunks(events, { ...options, includeUsage: true })) send(chunk);
 * ```
 */
export async function* chatChunks(
  events: AsyncIterable<ChoiceEvent<Delta>>,
  options: ChatOutputOptions & { includeUsage: boolean },
): AsyncGenerator<ChatCompletionChunk> {
  const { n, logprobs, includeUsage } = options;
  const base = { id: options.id, object: "chat.completion.chunk" as const, created: options.created };
  // With include_usage every chunk carries `usage: null` and a last one the totals, as OpenAI streams it.
  const extra = includeUsage ? { usage: null } : {};
  const chunk = (index: number, delta: ChatChunkDelta, tokens: GeneratedToken[], finish: EndEvent | null) => {
    const lp = logprobs === null ? null : { content: chatLogprobs(options.tokenizer, tokens) };
    const choice: ChatChunkChoice = { index, delta, logprobs: lp, finish_reason: null };
    if (finish !== null) {
      choice.finish_reason = chatFinishReason(finish, madeCalls[index]);
      choice.stop_reason = finish.stopReason;
    }
    return { ...base, model: options.model, choices: [choice], ...extra };
  };
  const madeCalls = new Array<boolean>(n).fill(false);
  // The role comes first and alone, before any token (llama.cpp and vLLM do the same).
  for (let i = 0; i < n; i++) yield chunk(i, { role: "assistant", content: null }, [], null);
  for await (const ev of events) {
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
  if (includeUsage) yield { ...base, model: options.model, choices: [], usage: options.usage() };
}

interface ChoiceState {
  pieces: Delta[];
  tokens: GeneratedToken[];
  end?: EndEvent;
}

/**
 * The whole chat completion: every event collected, each choice's deltas parsed into its message (the same parse
 * the streamed deltas concatenate to).
 */
export async function collectChatCompletion(
  events: AsyncIterable<ChoiceEvent<Delta>>,
  options: ChatOutputOptions,
): Promise<ChatCompletion> {
  const states: ChoiceState[] = Array.from({ length: options.n }, () => ({ pieces: [], tokens: [] }));
  for await (const ev of events) {
    const state = states[ev.choice];
    state.tokens.push(...ev.tokens);
    if (ev.type === "pieces") state.pieces.push(...ev.pieces);
    else state.end = ev;
  }
  const choices = states.map((s, index): ChatCompletionChoice => {
    const parsed = collectDeltas(s.pieces);
    const message: ChatCompletionMessage = {
      role: "assistant",
      content: parsed.content,
      reasoning: parsed.reasoning,
      reasoning_content: parsed.reasoning,
    };
    if (parsed.toolCalls.length > 0) message.tool_calls = parsed.toolCalls;
    return {
      index,
      message,
      logprobs: options.logprobs === null ? null : { content: chatLogprobs(options.tokenizer, s.tokens) },
      finish_reason: chatFinishReason(s.end!, parsed.toolCalls.length > 0),
      stop_reason: s.end!.stopReason,
    };
  });
  return {
    id: options.id,
    object: "chat.completion",
    created: options.created,
    model: options.model,
    choices,
    usage: options.usage(),
  };
}
