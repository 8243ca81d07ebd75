/**
 * Log-probabilities in OpenAI's two shapes: chat's `logprobs.content[]` (token, bytes, logprob, top_logprobs) and
 * the legacy completions' parallel lists (tokens, token_logprobs, top_logprobs, text_offset).
 *
 * @module
 */

import type { Tokenizer } from "../chat/tokenizer.ts";
import type { GeneratedToken } from "./types.ts";

/** One entry of chat's `logprobs.content`. */
export interface ChatLogprob {
  /** The token's text (control tokens by name; a piece of a character shows as U+FFFD). */
  token: string;
  /** Natural log of its probability. */
  logprob: number;
  /** The token's UTF-8 bytes. */
  bytes: number[];
  /** The most likely tokens at this position, most likely first. */
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** The legacy completions `logprobs` object. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
}

const utf8 = new TextEncoder();
const lenient = new TextDecoder(); // a token that is part of a character shows as U+FFFD; `bytes` has the truth

/** A token's text and bytes; control tokens by name, as vLLM shows them. */
export function tokenText(tok: Tokenizer, id: number): { token: string; bytes: number[] } {
  const raw = tok.isSpecial(id) ? utf8.encode(tok.specialName(id)) : tok.tokenBytes(id);
  return { token: lenient.decode(raw), bytes: Array.from(raw) };
}

/** Chat-shaped entries for generated tokens. */
export function chatLogprobs(tok: Tokenizer, tokens: readonly GeneratedToken[]): ChatLogprob[] {
  return tokens.map((t) => ({
    ...tokenText(tok, t.id),
    logprob: t.logprob ?? 0,
    top_logprobs: (t.topLogprobs ?? []).map((alt) => ({ ...tokenText(tok, alt.id), logprob: alt.logprob })),
  }));
}

/**
 * Legacy completions logprobs. `offset` is the text length before the first of these tokens (so offsets stay
 * right across streamed chunks); `withTop` false gives `top_logprobs: null` (request `logprobs: 0`).
 */
export function completionLogprobs(
  tok: Tokenizer,
  tokens: readonly GeneratedToken[],
  offset: number,
  withTop: boolean,
): CompletionLogprobs {
  const out: CompletionLogprobs = {
    tokens: [],
    token_logprobs: [],
    top_logprobs: withTop ? [] : null,
    text_offset: [],
  };
  for (const t of tokens) {
    const { token } = tokenText(tok, t.id);
    out.tokens.push(token);
    out.token_logprobs.push(t.logprob ?? 0);
    out.text_offset.push(offset);
    if (!tok.isSpecial(t.id)) offset += token.length;
    if (out.top_logprobs) {
      const top: Record<string, number> = {};
      for (const alt of t.topLogprobs ?? []) top[tokenText(tok, alt.id).token] ??= alt.logprob;
      out.top_logprobs.push(top);
    }
  }
  return out;
}
