/// <reference lib="dom" />
/**
 * Server mode: POST the request to `/v1/chat/completions` and turn its server-sent events into chunk objects.
 *
 * @module
 */

import type { ChatCompletionChunk, PageChatRequest } from "../protocol.ts";

/** A failed request: the server's OpenAI-shaped message, and the HTTP status (0 for one sent mid-stream). */
export class ApiError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "ApiError";
  }
}

/** The `Authorization` header for `key`, or none. */
export function authHeaders(key: string): Record<string, string> {
  return key === "" ? {} : { authorization: `Bearer ${key}` };
}

/** The message of an OpenAI-shaped error body, or a fallback naming the status. */
async function errorMessage(res: Response): Promise<string> {
  try {
    const body = await res.json();
    if (typeof body?.error?.message === "string") return body.error.message;
  } catch { /* not JSON */ }
  return `HTTP ${res.status} ${res.statusText}`;
}

/**
 * Streams one chat request from the server. Aborting `signal` closes the connection, which is how the server learns
 * to cancel the sequence; the iteration then ends with an `AbortError`.
 */
export async function* serverChunks(
  request: PageChatRequest,
  apiKey: string,
  signal: AbortSignal,
): AsyncGenerator<ChatCompletionChunk> {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", ...authHeaders(apiKey) },
    body: JSON.stringify(request),
    signal,
  });
  if (!res.ok || res.body === null) throw new ApiError(await errorMessage(res), res.status);
  yield* parseSse(res.body);
}

/** Splits an SSE byte stream into its `data:` payloads, parsed; `[DONE]` ends it, an `error` payload throws. */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<ChatCompletionChunk> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        // An event may span several `data:` lines; they join with newlines (the SSE rule). Comments are skipped.
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart())
          .join("\n");
        if (data === "") continue;
        if (data === "[DONE]") return;
        const parsed = JSON.parse(data);
        if (parsed?.error) throw new ApiError(String(parsed.error.message ?? "stream failed"), 0);
        yield parsed as ChatCompletionChunk;
      }
    }
  } finally {
    // Cancels the body when the consumer stops early (the stop button), so the connection closes.
    await reader.cancel().catch(() => {});
  }
}
