import { assert, assertEquals } from "../tests/assert.ts";
import { readSse, say, startServer } from "../tests/server_helpers.ts";

const USER = [{ role: "user", content: "Hello" }];

type Chunk = { choices: { delta: { content?: string }; finish_reason: string | null }[] };

/** The streamed text and the last finish reason of SSE events. */
function folded(events: unknown[]): { text: string; finish: string | null; done: boolean } {
  let text = "", finish: string | null = null;
  for (const ev of events) {
    if (ev === "[DONE]") continue;
    for (const c of (ev as Chunk).choices) {
      text += c.delta.content ?? "";
      finish = c.finish_reason ?? finish;
    }
  }
  return { text, finish, done: events.at(-1) === "[DONE]" };
}

/** `p`, or a failure if it has not settled after a minute (a hang, not a slow machine). */
async function hangGuard<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error(what)), 60_000));
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** A stream under way: its first bytes have arrived. */
interface Started {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  head: Uint8Array;
}

/** Waits for a response body's first bytes. */
async function started(res: Response): Promise<Started> {
  assertEquals(res.status, 200);
  const reader = res.body!.getReader();
  const first = await reader.read();
  assert(!first.done);
  return { reader, head: first.value };
}

/** All of a started stream's SSE events, its first bytes included. */
function rest({ reader, head }: Started): Promise<unknown[]> {
  let sentHead = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!sentHead) {
        sentHead = true;
        return controller.enqueue(head);
      }
      const r = await reader.read();
      if (r.done) controller.close();
      else controller.enqueue(r.value);
    },
  });
  return readSse(new Response(body));
}

Deno.test("shutdown: /health turns 503 shutting_down, new requests are refused, /metrics still answers", async () => {
  await using h = await startServer({ engine: { delayMs: 10 } });
  h.engine.script = say(h.tok, "word ".repeat(200));
  const running = await started(await h.post("/v1/chat/completions", { messages: USER, stream: true, temperature: 0 }));
  const stopped = h.handle.shutdown(60_000);
  assert(h.server.shuttingDown);
  const health = await h.server.fetch(new Request(`${h.url}/health`));
  assertEquals(health.status, 503);
  const body = await health.json();
  assertEquals(body.error.code, "shutting_down");
  assert(body.error.message.includes("shutting down"), body.error.message);
  const chat = await h.server.fetch(
    new Request(`${h.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: "Bearer dummy" },
      body: JSON.stringify({ messages: USER }),
    }),
  );
  assertEquals([chat.status, (await chat.json()).error.code], [503, "shutting_down"]);
  assertEquals((await h.server.fetch(new Request(`${h.url}/metrics`))).status, 200);
  // The listener is closed: a new connection is refused.
  const refused = await fetch(`${h.url}/health`).then(async (r) => (await r.body?.cancel(), r.status), (e) => e);
  assert(refused instanceof TypeError, `a new connection got ${refused}`);
  // The request that was running is still served.
  assertEquals(h.engine.stats().running, 1);
  await running.reader.cancel();
  await stopped;
  assertEquals(h.engine.stats().running, 0);
});

Deno.test("shutdown: a streamed and a whole request that finish within the grace are served in full", async () => {
  await using h = await startServer({ engine: { delayMs: 2 } });
  const answer = "one two three four five six seven eight nine ten";
  h.engine.script = say(h.tok, answer);
  const stream = await started(await h.post("/v1/chat/completions", { messages: USER, stream: true, temperature: 0 }));
  const whole = h.post("/v1/chat/completions", { messages: USER, temperature: 0 });
  while (h.engine.stats().running < 2) await new Promise((r) => setTimeout(r, 1));
  const stopped = h.handle.shutdown(60_000);
  const streamed = folded(await rest(stream));
  assertEquals([streamed.text, streamed.finish, streamed.done], [answer, "stop", true]);
  const res = await whole;
  assertEquals(res.status, 200);
  const choice = (await res.json()).choices[0];
  assertEquals([choice.message.content, choice.finish_reason], [answer, "stop"]);
  await stopped;
  assert(!h.logger.lines.some((l) => l.includes("cancelling")), h.logger.lines.join("\n"));
});

Deno.test("shutdown: requests still running when the grace is over end with finish_reason abort", async () => {
  await using h = await startServer({ engine: { delayMs: 5 } });
  h.engine.script = say(h.tok, "word ".repeat(2000));
  const stream = await started(await h.post("/v1/chat/completions", { messages: USER, stream: true, temperature: 0 }));
  const events = rest(stream);
  const whole = h.post("/v1/chat/completions", { messages: USER, temperature: 0 });
  while (h.engine.stats().running < 2) await new Promise((r) => setTimeout(r, 1));
  await hangGuard(h.handle.shutdown(0), "the shutdown does not end at its grace");
  const streamed = folded(await events);
  assertEquals([streamed.finish, streamed.done], ["abort", true]);
  assert(streamed.text.length < "word ".repeat(2000).length);
  const res = await whole;
  assertEquals(res.status, 200);
  assertEquals((await res.json()).choices[0].finish_reason, "abort");
  assertEquals(h.engine.stats().running, 0);
  assert(h.logger.lines.some((l) => l.includes("cancelling 2 running requests")), h.logger.lines.join("\n"));
});

Deno.test("shutdown: a client that does not read and an upload that stalls do not hold it up", async () => {
  await using h = await startServer({ engine: { delayMs: 1 } });
  h.engine.script = say(h.tok, "word ".repeat(5000));
  // Never read past the first chunk.
  const idle = await started(await h.post("/v1/chat/completions", { messages: USER, stream: true, temperature: 0 }));
  // Headers and part of a body that never comes in full.
  const conn = await Deno.connect({ hostname: h.handle.hostname, port: h.handle.port });
  const body = JSON.stringify({ messages: USER });
  await conn.write(
    new TextEncoder().encode(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer dummy\r\n` +
        `content-type: application/json\r\ncontent-length: ${body.length + 100}\r\n\r\n${body}`,
    ),
  );
  while (h.server.inFlight < 2) await new Promise((r) => setTimeout(r, 1));
  await hangGuard(h.handle.shutdown(0), "the shutdown waits for a client that does not read or an upload");
  // The stalled upload was answered 503 shutting_down (the connection stays open: Deno waits for the rest of the
  // body, and the process's exit ends it).
  let reply = "";
  const buffer = new Uint8Array(4096);
  while (!reply.includes("}}")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    reply += new TextDecoder().decode(buffer.subarray(0, n));
  }
  conn.close();
  assert(reply.startsWith("HTTP/1.1 503"), reply);
  assert(reply.includes('"shutting_down"'), reply);
  await idle.reader.cancel().catch(() => {});
  assertEquals(h.engine.stats().running, 0);
});
