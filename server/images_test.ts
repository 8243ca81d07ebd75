/**
 * Image downloads belong to their request: a client that disconnects while the server is still fetching its image
 * URL stops the download, and the image server sees its connection closed.
 */
import { assertEquals } from "../tests/assert.ts";
import { rawHttpServer, within } from "../tests/image_server_helpers.ts";
import { MODEL, startServer } from "../tests/server_helpers.ts";

const VISION = { patchSize: 14, mergeSize: 2, maxImageSize: 1540 };

Deno.test("images: a client that disconnects mid-download closes the image server's connection", async () => {
  // Private addresses allowed for the local server; a timeout far beyond the test, so only the disconnect can end it.
  await using h = await startServer({
    engine: { vision: VISION },
    server: { images: { allowPrivate: true, timeoutMs: 600_000 } },
  });
  // Declared after the server, so disposed first: were the download to go on, closing it lets the server stop.
  await using slow = rawHttpServer(async (x) => {
    // A large image that trickles: one byte, then nothing until the downloader leaves.
    await x.write("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000000\r\n\r\n\x89");
    await x.closed;
  });
  const client = new AbortController();
  const url = `${slow.origin}/cat.png`;
  const response = fetch(`${h.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer dummy" },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: "user", content: [{ type: "text", text: "?" }, { type: "image_url", image_url: { url } }] }],
    }),
    signal: client.signal,
  });
  const exchange = await slow.nextExchange();
  client.abort();
  await response.catch(() => {});
  await within(exchange.closed, 5000, "the image server's connection closes after the client left");
  assertEquals(h.engine.requests.length, 0, "nothing reached the engine");
});
