/**
 * The page's SSE reader on byte streams cut anywhere: events split across reads, a character split across reads,
 * multi-line data, comments, `[DONE]`, and an error event mid-stream.
 */
import { assertEquals, assertRejects } from "../../tests/assert.ts";
import { ApiError, parseSse } from "./stream.ts";

/** A body that delivers `text` in reads of `size` bytes. */
function body(text: string, size: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at += size));
    },
  });
}

async function all(stream: ReadableStream<Uint8Array>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const chunk of parseSse(stream)) out.push(chunk);
  return out;
}

Deno.test("page SSE: chunks come out whole however the bytes are cut", async () => {
  const events = [{ choices: [{ delta: { content: "héllo 🌍" } }] }, { choices: [], usage: { prompt_tokens: 3 } }];
  const text = `: a comment\n\n${events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("")}data: [DONE]\n\n` +
    `data: {"after": "done is ignored"}\n\n`;
  for (const size of [1, 2, 3, 7, 64, 4096]) assertEquals(await all(body(text, size)), events, `reads of ${size}`);
  // One event over two data lines: the lines join with a newline (the SSE rule).
  assertEquals(await all(body('data: {"a":\ndata: 1}\n\n', 5)), [{ a: 1 }]);
});

Deno.test("page SSE: an error event mid-stream throws the server's message", async () => {
  const text = 'data: {"choices": []}\n\ndata: {"error": {"message": "engine failed", "type": "server_error"}}\n\n';
  const err = await assertRejects(() => all(body(text, 4)), ApiError);
  assertEquals(err.message, "engine failed");
});
