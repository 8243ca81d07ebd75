/**
 * The pinned HTTP/1.1 client against local servers that write raw bytes: it connects to the address it is given
 * (never resolving the URL's name), frames bodies by Content-Length, chunks or the connection's end, keeps the size
 * limit, speaks TLS with the URL's name, and closes the connection as soon as it is aborted. Then `loadImageUrl`
 * over it: one resolution per hop, checked, and used.
 */
import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import {
  type RawExchange,
  rawHttpServer,
  TEST_CA_PEM,
  TEST_CERT_PEM,
  TEST_KEY_PEM,
  within,
} from "../tests/image_server_helpers.ts";
import { InvalidRequestError } from "./errors.ts";
import { loadImageUrl } from "./image.ts";
import { BodyTooLargeError, pinnedGet } from "./image_fetch.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const get = (url: string, maxBytes = 1000, signal = new AbortController().signal, addresses = ["127.0.0.1"]) =>
  pinnedGet(new URL(url), { addresses, signal, maxBytes });

/** Serves `responses[path]` as raw bytes, one byte per write (so every read of the client sees a fragment). */
function byteByByte(responses: Record<string, string>) {
  return rawHttpServer(async (x: RawExchange) => {
    const path = x.head.split(" ")[1];
    for (const ch of responses[path] ?? "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n") await x.write(ch);
  });
}

Deno.test("pinnedGet: connects to the given address, names the URL's host, frames bodies every way", async () => {
  await using s = byteByByte({
    "/length?x=1": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
    "/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    "/until-close": "HTTP/1.0 200 OK\r\n\r\nall of it",
    "/early-hints": "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/moved": "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 4\r\n\r\nskip",
  });
  // `images.test` resolves nowhere: the connection goes to the address given, the Host header names the URL's host.
  const r = await get(`http://images.test:${s.port}/length?x=1`);
  assertEquals([r.status, r.headers.get("x-a"), text(r.body)], [200, "1", "hello"]);
  assert(s.heads[0].startsWith("GET /length?x=1 HTTP/1.1\r\n"), s.heads[0]);
  assert(s.heads[0].includes(`\r\nHost: images.test:${s.port}\r\n`), s.heads[0]);
  assertEquals(text((await get(`${s.origin}/chunked`)).body), "hello world");
  assertEquals(text((await get(`${s.origin}/until-close`)).body), "all of it");
  assertEquals(text((await get(`${s.origin}/early-hints`)).body), "ok");
  const moved = await get(`${s.origin}/moved`);
  assertEquals([moved.status, moved.headers.get("location"), moved.body.length], [302, "/elsewhere", 0]);
  // Addresses are tried in order: nothing listens on 127.0.0.2 at this port.
  assertEquals(
    text((await get(`${s.origin}/chunked`, 1000, undefined, ["127.0.0.2", "127.0.0.1"])).body),
    "hello world",
  );
});

Deno.test("pinnedGet: the size limit holds however the body is framed; broken responses are errors", async () => {
  const big = "x".repeat(200);
  await using s = rawHttpServer(async (x) => {
    const path = x.head.split(" ")[1];
    const responses: Record<string, string> = {
      "/declared": `HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n${big}`,
      "/chunked": `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n${big.slice(0, 100)}\r\n` +
        `64\r\n${big.slice(100)}\r\n0\r\n\r\n`,
      "/until-close": `HTTP/1.1 200 OK\r\n\r\n${big}`,
      "/truncated": "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
      "/garbage": "SMTP ready\r\n\r\n",
      "/gzip": "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
      "/bad-chunk": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    await x.write(responses[path]);
  });
  const tooLarge = async (path: string, declared: number | null) => {
    const e = await assertRejects(() => get(`${s.origin}${path}`, 150), BodyTooLargeError);
    assertEquals(e.declared, declared, path);
  };
  await tooLarge("/declared", 200);
  await tooLarge("/chunked", null);
  await tooLarge("/until-close", null);
  assertEquals((await get(`${s.origin}/chunked`, 200)).body.length, 200, "exactly the limit is fine");
  await assertRejects(() => get(`${s.origin}/truncated`), Error, "closed before the body ended");
  await assertRejects(() => get(`${s.origin}/garbage`), Error, "not valid HTTP/1.1");
  await assertRejects(() => get(`${s.origin}/gzip`), Error, "identity");
  await assertRejects(() => get(`${s.origin}/bad-chunk`), Error, "chunk size");
});

Deno.test("pinnedGet: aborting closes the connection at once, wherever the response is", async () => {
  await using s = rawHttpServer(async (x) => {
    // A head and one byte of a large body, then nothing until the client leaves.
    await x.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx");
    await x.closed;
  });
  const controller = new AbortController();
  const pending = get(`${s.origin}/slow`, 2_000_000, controller.signal);
  const exchange = await s.nextExchange();
  const reason = new Error("client gone");
  controller.abort(reason);
  assertEquals(await pending.catch((e) => e), reason);
  // The server's side of the connection sees the end of the stream: the download does not go on in the background.
  await within(exchange.closed, 5000, "the slow server's connection closes");
});

Deno.test("pinnedGet: https runs TLS over the given address with the URL's name (SNI and certificate)", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: TEST_CERT_PEM, key: TEST_KEY_PEM, onListen: () => {} },
    (req) => new Response(`secure ${new URL(req.url).pathname}`),
  );
  try {
    const port = server.addr.port, signal = new AbortController().signal;
    const options = { addresses: ["127.0.0.1"], signal, maxBytes: 1000, caCerts: [TEST_CA_PEM] };
    const r = await pinnedGet(new URL(`https://images.test:${port}/cat.png`), options);
    assertEquals([r.status, text(r.body)], [200, "secure /cat.png"]);
    // The certificate names images.test: any other name is refused, though the address is the same.
    await assertRejects(() => pinnedGet(new URL(`https://other.test:${port}/`), options), Error, "not valid for name");
    // And without the test CA the chain is not trusted.
    const untrusted = { ...options, caCerts: undefined };
    await assertRejects(() => pinnedGet(new URL(`https://images.test:${port}/`), untrusted), Error, "UnknownIssuer");
  } finally {
    await server.shutdown();
  }
});

Deno.test("loadImageUrl: each hop's name is resolved once, checked, and that address is the one connected to", async () => {
  await using s = rawHttpServer(async (x) => {
    const path = x.head.split(" ")[1];
    if (path === "/to-internal") {
      await x.write(`HTTP/1.1 302 Found\r\nLocation: http://internal.test:${s.port}/img\r\nContent-Length: 0\r\n\r\n`);
    } else await x.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nimg");
  });
  const lookups: string[] = [];
  // Names the system cannot resolve: only the injected resolver's answer can be reaching the server.
  const resolve = (host: string) => {
    lookups.push(host);
    return Promise.resolve(host === "public.test" ? ["127.0.0.1"] : ["10.1.2.3"]);
  };
  const base = { maxBytes: 1000, timeoutMs: 5000, resolve };
  const allowed = { ...base, allowPrivate: [`http://public.test:${s.port}`] };
  assertEquals(text(await loadImageUrl(`http://public.test:${s.port}/img`, allowed)), "img");
  assertEquals(lookups, ["public.test"], "one lookup, whose answer was used");
  // A redirect to a name that resolves to a private address is refused before connecting to it.
  await assertRejects(
    () => loadImageUrl(`http://public.test:${s.port}/to-internal`, allowed),
    InvalidRequestError,
    "private or local address",
  );
  assertEquals(lookups, ["public.test", "public.test", "internal.test"]);
  assertEquals(s.heads.length, 2, "internal.test was never connected to");
  // Without the allowance, the loopback answer itself is refused.
  await assertRejects(() => loadImageUrl(`http://public.test:${s.port}/img`, base), InvalidRequestError, "private");
});

Deno.test("loadImageUrl: a timeout or the caller's signal ends the download and closes its connection", async () => {
  await using s = rawHttpServer(async (x) => {
    await x.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nx");
    await x.closed;
  });
  const base = { maxBytes: 10_000, allowPrivate: true };
  const timedOut = loadImageUrl(`${s.origin}/slow`, { ...base, timeoutMs: 100 });
  await assertRejects(() => timedOut, InvalidRequestError, "took longer than 100 ms");
  await within((await s.nextExchange()).closed, 5000, "closed after the timeout");

  const controller = new AbortController();
  const cancelled = loadImageUrl(`${s.origin}/slow`, { ...base, timeoutMs: 60_000, signal: controller.signal });
  const exchange = await s.nextExchange();
  controller.abort();
  await assertRejects(() => cancelled, InvalidRequestError, "cancelled");
  await within(exchange.closed, 5000, "closed after the abort");
});
