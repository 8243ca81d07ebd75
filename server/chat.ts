/**
 * `POST /v1/chat/completions`: whole and streamed responses in OpenAI's shapes (`engine/chat_output.ts`), with
 * reasoning, tool calls, logprobs and usage. The request is checked and prepared below the server
 * (`engine/chat_request.ts`), as the library does it.
 *
 * @module
 */

import { OutputStreamParser } from "../chat/parse.ts";
import { chatChunks, collectChatCompletion, deltaText } from "../engine/chat_output.ts";
import { prepareChat } from "../engine/chat_request.ts";
import { defaultLimit } from "../engine/params.ts";
import type { RequestRecord, ServerContext } from "./context.ts";
import { jsonResponse } from "./errors.ts";
import { Run, streamResponse } from "./generation.ts";

/** Handles one chat-completions request (body already parsed). */
export async function handleChat(
  ctx: ServerContext,
  record: RequestRecord,
  body: Record<string, unknown>,
  clientSignal: AbortSignal,
): Promise<Response> {
  const params = await prepareChat(ctx, record.id, body, { signal: clientSignal });
  const run = new Run(ctx, record, {
    ...params,
    defaultLimit: defaultLimit(ctx, params.maxTokens, ctx.maxTokensDefault ?? null),
    makeStage: () => new OutputStreamParser(ctx.tokenizer),
    pieceText: deltaText,
  }, clientSignal);
  const output = {
    tokenizer: ctx.tokenizer,
    id: record.id,
    created: Math.floor(Date.now() / 1000),
    model: ctx.modelName,
    n: params.n,
    logprobs: params.logprobs,
    usage: () => run.usage(),
  };
  if (params.stream) {
    return streamResponse(ctx, record, run, chatChunks(run.events, { ...output, includeUsage: params.includeUsage }));
  }
  const completion = await collectChatCompletion(run.events, output);
  return jsonResponse(completion, 200, { "x-request-id": record.id });
}
