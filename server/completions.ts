/**
 * `POST /v1/completions` (OpenAI's legacy text completions): raw prompts, no chat protocol, no output parsing —
 * the generated text is the detokenized ids with control tokens skipped, as vLLM returns it.
 *
 * @module
 */

import { StreamDecoder, type Tokenizer } from "../chat/tokenizer.ts";
import type { GeneratedToken } from "../engine/types.ts";
import type { EndEvent } from "../engine/choices.ts";
import type { RequestRecord, ServerContext } from "./context.ts";
import { badRequest, jsonResponse } from "./errors.ts";
import { Run, streamResponse, type Usage } from "./generation.ts";
import { completionLogprobs, tokenText } from "../engine/logprobs.ts";
import {
  boolField,
  commonParams,
  defaultLimit,
  intField,
  MAX_TOP_LOGPROBS,
  rejectUnsupported,
  tokenBudget,
  warnUnknownFields,
} from "../engine/params.ts";
import type { PieceText } from "../engine/stop.ts";

/** OpenAI's default for this endpoint. */
const DEFAULT_MAX_TOKENS = 16;

const plainText: PieceText<string> = { text: (s) => s, withText: (_s, t) => t };

/** The prompts as ids: a string gets `<s>` in front (vLLM adds special tokens); id lists are taken as they are. */
function promptIds(ctx: ServerContext, prompt: unknown): number[][] {
  const tok = ctx.tokenizer;
  const fromText = (s: string) => [tok.bosId, ...tok.encode(s)];
  const isIds = (v: unknown): v is number[] =>
    Array.isArray(v) && v.length > 0 && v.every((id) => Number.isInteger(id) && id >= 0 && id < tok.usedVocabSize);
  if (typeof prompt === "string") return [fromText(prompt)];
  if (isIds(prompt)) return [prompt];
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.every((p) => typeof p === "string")) return prompt.map(fromText);
    if (prompt.every(isIds)) return prompt;
  }
  if (prompt === undefined || prompt === null) {
    throw badRequest("prompt is required.", "prompt", "missing_required_parameter");
  }
  throw badRequest(
    `prompt must be a string, a list of strings, a list of token ids (0..${tok.usedVocabSize - 1}) or a list of ` +
      "such lists, and not empty.",
    "prompt",
  );
}

interface ChoiceState {
  text: string;
  tokens: GeneratedToken[];
  end?: EndEvent;
}

/** What the two response shapes need. */
interface Output {
  tok: Tokenizer;
  run: Run<string>;
  base: Record<string, unknown>;
  /** Number of choices: prompts × n. */
  count: number;
  /** The text echoed in front of a choice ("" without `echo`). */
  echoed: (choice: number) => string;
  /** Top-logprobs count, or null for none. */
  logprobs: number | null;
  includeUsage: boolean;
}

/** The SSE chunks of a streamed completion. */
async function* streamChunks(out: Output): AsyncGenerator<unknown> {
  const { tok, run, base, logprobs } = out;
  const offsets = new Array<number>(out.count).fill(0);
  const started = new Array<boolean>(out.count).fill(false);
  const extra = out.includeUsage ? { usage: null } : {};
  for await (const ev of run.events) {
    let text = ev.type === "pieces" ? ev.pieces.join("") : "";
    if (!started[ev.choice]) {
      started[ev.choice] = true;
      text = out.echoed(ev.choice) + text;
    }
    let lp = null;
    if (logprobs !== null) {
      lp = completionLogprobs(tok, ev.tokens, offsets[ev.choice], logprobs > 0);
      for (const t of ev.tokens) if (!tok.isSpecial(t.id)) offsets[ev.choice] += tokenText(tok, t.id).token.length;
    }
    const choice: Record<string, unknown> = {
      index: ev.choice,
      text,
      logprobs: lp,
      finish_reason: ev.type === "end" ? ev.finishReason : null,
    };
    if (ev.type === "end") choice.stop_reason = ev.stopReason;
    yield { ...base, choices: [choice], ...extra };
  }
  if (out.includeUsage) yield { ...base, choices: [], usage: run.usage() satisfies Usage };
}

/** The body of a non-streamed completion. */
async function wholeBody(out: Output): Promise<Record<string, unknown>> {
  const { tok, run, logprobs } = out;
  const states: ChoiceState[] = Array.from({ length: out.count }, (_, i) => ({ text: out.echoed(i), tokens: [] }));
  for await (const ev of run.events) {
    const s = states[ev.choice];
    s.tokens.push(...ev.tokens);
    if (ev.type === "pieces") s.text += ev.pieces.join("");
    else s.end = ev;
  }
  const choices = states.map((s, index) => ({
    index,
    text: s.text,
    logprobs: logprobs === null ? null : completionLogprobs(tok, s.tokens, 0, logprobs > 0),
    finish_reason: s.end!.finishReason,
    stop_reason: s.end!.stopReason,
  }));
  return { ...out.base, choices, usage: run.usage() };
}

/** Handles one completions request (body already parsed). */
export async function handleCompletions(
  ctx: ServerContext,
  record: RequestRecord,
  body: Record<string, unknown>,
  clientSignal: AbortSignal,
): Promise<Response> {
  rejectUnsupported(body);
  warnUnknownFields(ctx, record.id, body, ["prompt", "echo"]);
  const common = commonParams(ctx, body);
  const logprobs = intField(body, "logprobs", 0, MAX_TOP_LOGPROBS);
  const echo = boolField(body, "echo", false);
  if (echo && logprobs !== null) {
    throw badRequest("echo with logprobs needs prompt logprobs, which this server does not compute.", "echo");
  }
  // OpenAI's 16, or the server's default when that is smaller.
  const fallback = Math.min(DEFAULT_MAX_TOKENS, ctx.maxTokensDefault ?? DEFAULT_MAX_TOKENS);
  const prompts = promptIds(ctx, body.prompt).map((ids) => ({
    ids,
    maxTokens: tokenBudget(ctx, ids.length, common.maxTokens, fallback, "prompt"),
  }));
  const tok = ctx.tokenizer;
  const run = new Run<string>(ctx, record, {
    ...common,
    prompts,
    defaultLimit: defaultLimit(ctx, common.maxTokens, ctx.maxTokensDefault === null ? null : fallback),
    images: [],
    logprobs,
    makeStage: () => {
      const decoder = new StreamDecoder(tok);
      const some = (t: string) => t === "" ? [] : [t];
      return { push: (id) => some(decoder.push(id)), finish: () => some(decoder.finish()) };
    },
    pieceText: plainText,
  }, clientSignal);
  const output: Output = {
    tok,
    run,
    base: { id: record.id, object: "text_completion", created: Math.floor(Date.now() / 1000), model: ctx.modelName },
    count: prompts.length * common.n,
    // Choice p·n + k echoes prompt p.
    echoed: (choice) => echo ? tok.decode(prompts[Math.floor(choice / common.n)].ids) : "",
    logprobs,
    includeUsage: common.includeUsage,
  };
  if (common.stream) return streamResponse(ctx, record, run, streamChunks(output));
  return jsonResponse(await wholeBody(output), 200, { "x-request-id": record.id });
}
