/**
 * Server-sent events as the OpenAI API streams them: `data: <json>\n\n` per chunk and `data: [DONE]\n\n` at the
 * end. The stream is pull-based so a slow client slows the producer instead of growing a buffer, and cancelling
 * it (client gone) reaches the producer at once.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Encodes one SSE data event. */
export function sseEvent(data: unknown): Uint8Array {
  return encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

/** The terminating event. */
export const SSE_DONE: Uint8Array = encoder.encode("data: [DONE]\n\n");

/** Callbacks of {@link sseResponse}. */
export interface SseHooks {
  /** The client went away before the end: stop producing (runs before the producer is told to return). */
  onCancel(): void;
  /** The stream is over, whichever way it ended; runs once, after the producer has finished. */
  onClose(): void;
}

/**
 * A `text/event-stream` response that pulls events from `events` (objects become JSON; `[DONE]` is appended after
 * the last one).
 *
 * @example
 * ```ts
 * async function* chunks() { yield { choices: [] }; }
 * return sseResponse(chunks(), { onCancel: () => controller.abort(), onClose: () => log() });
 * ```
 */
export function sseResponse(
  events: AsyncIterator<unknown>,
  hooks: SseHooks,
  headers: Record<string, string> = {},
): Response {
  let finished = false;
  const close = () => {
    if (finished) return;
    finished = true;
    hooks.onClose();
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await events.next();
        if (next.done) {
          controller.enqueue(SSE_DONE);
          controller.close();
          close();
        } else {
          controller.enqueue(sseEvent(next.value));
        }
      } catch (e) {
        // The producer turns its own failures into an error event; anything that still escapes ends the stream.
        controller.error(e);
        close();
      }
    },
    async cancel() {
      if (finished) return;
      hooks.onCancel();
      try {
        await events.return?.(undefined);
      } finally {
        close();
      }
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    status: 200,
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
      ...headers,
    },
  });
}
