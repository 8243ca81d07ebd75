/**
 * The in-page engine in a real browser (Debian's chromium driven by playwright-core): the worker bundle
 * (web/dist/worker.js) loads `demo` on WebGPU (SwiftShader) and on wasm (WebGPU disabled) and gives the greedy
 * tokens `createLLM` gives in Deno; abort stops a stream; a checkpoint directory streams in over range requests
 * (server/web_models.ts) and gives the reference tokens; an attached JPEG is decoded and seen in the page as in Deno. None
 * of this reaches a `Deno.` API in the browser: there is none there, so a call would fail the test. Screenshots go
 * to bench/screenshots/test/ (git-ignored; bench/screenshots/web_local_*.png are committed copies).
 *
 * Also: the range route's answers (206, 416, refused paths). `.ci/run` checks that web/dist is what its sources build
 * (`deno task build:web:check`).
 */
import { join } from "node:path";
import { loadDemoTekkenFile } from "../chat/demo_tokenizer.ts";
import { tekkenJson } from "../chat/tokenizer.ts";
import { createLLM } from "../engine/llm.ts";
import type { DType } from "../graph/dtype.ts";
import { presetConfig } from "../graph/models/mistral4.ts";
import { makeCheckpoint } from "../weights/make_checkpoint.ts";
import { parseRange, WebModels } from "../server/web_models.ts";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { fixture } from "./fixtures.ts";
import { startServer } from "./server_helpers.ts";
import {
  browserAvailable,
  chatInPage,
  type ContentPart,
  loadInPage,
  NO_WEBGPU_FLAGS,
  openPage,
  screenshot,
  serveTestPage,
  WEBGPU_FLAGS,
} from "./web_local_helpers.ts";

const PROMPT = "Write a haiku about the north wind.";
const browser = browserAvailable();

/** The greedy tokens of `model` in Deno (wasm) and the prompt's length, as the page asks for them. */
async function reference(
  model: string,
  n: number,
  content: string | ContentPart[] = PROMPT,
  dtype?: DType,
): Promise<{ tokens: string[]; promptTokens?: number }> {
  const llm = await createLLM(model, { backend: "wasm", quiet: true, threads: 1, dtype });
  try {
    const tokens: string[] = [];
    let promptTokens: number | undefined;
    const request = { messages: [{ role: "user" as const, content }], temperature: 0, max_tokens: n, logprobs: true };
    for await (const c of llm.chat(request)) {
      for (const t of c.choices[0]?.logprobs?.content ?? []) tokens.push(t.token);
      promptTokens = c.usage?.prompt_tokens ?? promptTokens;
    }
    return { tokens, promptTokens };
  } finally {
    await llm.close();
  }
}

/** The greedy tokens of `model` in Deno for the text prompt. */
async function referenceTokens(model: string, n: number, dtype?: DType): Promise<string[]> {
  return (await reference(model, n, PROMPT, dtype)).tokens;
}

/** A JPEG attachment as the page sends it (a data: URL): decoded in the page by the bundled MozJPEG. */
async function jpegAttachment(): Promise<ContentPart[]> {
  const bytes = await Deno.readFile(fixture("images/rocket.jpg"));
  const url = `data:image/jpeg;base64,${btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""))}`;
  return [{ type: "text", text: "What is this?" }, { type: "image_url", image_url: { url } }];
}

Deno.test({
  name: "web local: demo on WebGPU (SwiftShader) gives Deno's 16 greedy tokens; a load may ask for wasm",
  ignore: !browser,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const want = await referenceTokens("demo", 16);
    const server = serveTestPage();
    const { browser, page, errors } = await openPage(server.url, WEBGPU_FLAGS);
    try {
      assertEquals(await loadInPage(page, "demo"), "webgpu,wasm");
      const got = await chatInPage(page, PROMPT, 16);
      await screenshot(page, "web_local_webgpu");
      assertEquals(got.error, undefined);
      assertEquals(got.tokens, want);
      assertEquals(got.finish, "length");
      // The page may ask for a backend: wasm here, though WebGPU works.
      assertEquals(await loadInPage(page, "demo", { backend: "wasm" }), "wasm");
      assertEquals((await chatInPage(page, PROMPT, 4)).tokens, want.slice(0, 4));
      assertEquals(errors, []);
      assertEquals(server.missing, []);
    } finally {
      await browser.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "web local: without WebGPU the worker falls back to wasm, same tokens; abort; an image; a q8 reload",
  ignore: !browser,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const want = await referenceTokens("demo", 16);
    const server = serveTestPage();
    const { browser, page, errors } = await openPage(server.url, NO_WEBGPU_FLAGS);
    try {
      // The API may stay, but it gives no adapter.
      const adapter = await page.evaluate(async () => {
        const gpu = (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
        return (await gpu?.requestAdapter()) ?? null;
      });
      assertEquals(adapter, null);
      assertEquals(await loadInPage(page, "demo"), "wasm");
      const got = await chatInPage(page, PROMPT, 16);
      assertEquals(got.error, undefined);
      assertEquals(got.tokens, want);
      // Abort after 3 tokens of a 200-token answer: it ends with finish reason `abort`, well short of 200.
      const stopped = await chatInPage(page, PROMPT, 200, 3);
      assertEquals(stopped.error, undefined);
      assertEquals(stopped.finish, "abort");
      assert(stopped.tokens.length >= 3 && stopped.tokens.length < 50, `${stopped.tokens.length} tokens after abort`);
      assertEquals(stopped.tokens.slice(0, 16), want.slice(0, stopped.tokens.length));
      // The engine serves the next request as before.
      assertEquals((await chatInPage(page, PROMPT, 4)).tokens, want.slice(0, 4));
      // An attached JPEG: decoded and encoded by the vision tower in the page, as in Deno.
      const image = await jpegAttachment();
      const seen = await chatInPage(page, image, 6);
      const ref = await reference("demo", 6, image);
      assertEquals(seen.error, undefined);
      assertEquals([seen.promptTokens, seen.tokens], [ref.promptTokens, ref.tokens]);
      assert(ref.promptTokens! > 100, `${ref.promptTokens} prompt tokens: the image is not in the prompt`);
      // Another load replaces the model: q8 weights, as `createLLM("demo", { dtype: "q8" })` makes them.
      assertEquals(await loadInPage(page, "demo", { dtype: "q8" }), "wasm");
      const q8 = await chatInPage(page, PROMPT, 8);
      assertEquals(q8.tokens, await referenceTokens("demo", 8, "q8"));
      await screenshot(page, "web_local_wasm");
      assertEquals(errors, []);
      assertEquals(server.missing, []);
    } finally {
      await browser.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "web local: a checkpoint directory streams in over range requests and gives Deno's tokens",
  ignore: !browser,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "web_local_" });
    const dir = join(root, "tiny");
    try {
      const tokenizerJson = tekkenJson(await loadDemoTekkenFile());
      await makeCheckpoint({ config: presetConfig("tiny"), out: dir, seed: 3, tokenizerJson });
      const want = await referenceTokens(dir, 16);
      await Deno.mkdir(join(root, "bare"));
      await Deno.copyFile(join(dir, "config.json"), join(root, "bare", "config.json"));
      const server = serveTestPage([dir, join(root, "bare")]);
      const { browser, page, errors } = await openPage(server.url, NO_WEBGPU_FLAGS);
      try {
        assertEquals(await loadInPage(page, "/web/models/tiny"), "wasm");
        const tensors = server.ranges;
        const got = await chatInPage(page, PROMPT, 16);
        await screenshot(page, "web_local_checkpoint");
        assertEquals(got.error, undefined);
        assertEquals(got.tokens, want);
        // Headers (8 bytes, then the JSON) and each tensor: many range requests, not one download.
        assert(tensors > 10, `only ${tensors} range requests`);
        assertEquals(errors, []);
        // Not found, as on disk: the Mistral-layout params.json an HF directory may have beside config.json.
        assertEquals([...new Set(server.missing)], ["/web/models/tiny/params.json"]);
        // A directory the server does not expose: the loader's own message, from 404s.
        const bad = await loadInPage(page, "/web/models/nope").then(() => "loaded", (e) => (e as Error).message);
        assert(bad.includes("/web/models/nope") && !bad.includes("tekken"), bad);
        // A checkpoint without its tokenizer: createLLM's message, read over HTTP as from disk.
        const bare = await loadInPage(page, "/web/models/bare").then(() => "loaded", (e) => (e as Error).message);
        assert(bare.includes("/web/models/bare has no tekken.json"), bare);
      } finally {
        await browser.close();
        await server.close();
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "web local: a page that is not cross-origin isolated (no shared memory) answers on the reference backend",
  ignore: !browser,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const want = await referenceTokens("tiny", 8);
    const server = serveTestPage([], false);
    const { browser, page, errors } = await openPage(server.url, NO_WEBGPU_FLAGS);
    try {
      assertEquals(
        await page.evaluate(() => (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated),
        false,
      );
      assertEquals(await loadInPage(page, "tiny"), "reference");
      const got = await chatInPage(page, PROMPT, 8);
      assertEquals(got.error, undefined);
      assertEquals(got.tokens, want);
      assertEquals(errors, []);
      await screenshot(page, "web_local_not_isolated");
    } finally {
      await browser.close();
      await server.close();
    }
  },
});

Deno.test("web models: Range parsing (RFC 9110 single ranges)", () => {
  assertEquals(parseRange(null, 100), null);
  assertEquals(parseRange("bytes=0-9", 100), [0, 9]);
  assertEquals(parseRange("bytes=90-", 100), [90, 99]);
  assertEquals(parseRange("bytes=90-1000", 100), [90, 99]);
  assertEquals(parseRange("bytes=-10", 100), [90, 99]);
  assertEquals(parseRange("bytes=-1000", 100), [0, 99]);
  assertEquals(parseRange("bytes=100-", 100), "unsatisfiable");
  assertEquals(parseRange("bytes=5-4", 100), "unsatisfiable");
  assertEquals(parseRange("bytes=-0", 100), "unsatisfiable");
  assertEquals(parseRange("bytes=0-1,5-6", 100), null); // several ranges: the whole file
  assertEquals(parseRange("items=0-1", 100), null);
});

Deno.test("web models: 206 with Content-Range, 416 past the end, listings, refused paths", async () => {
  const root = await Deno.makeTempDir({ prefix: "web_models_" });
  try {
    const dir = join(root, "ckpt");
    await Deno.mkdir(dir);
    const bytes = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 255);
    await Deno.writeFile(join(dir, "model.safetensors"), bytes);
    await Deno.writeTextFile(join(dir, ".hidden"), "no");
    await Deno.writeTextFile(join(root, "secret.txt"), "outside");
    const models = new WebModels([dir]);
    const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
      models.handle(new Request(`http://x${path}`, { method, headers }));
    const status = (path: string) => get(path).then((r) => r.status, (e) => (e as { status: number }).status);

    const part = await get("/web/models/ckpt/model.safetensors", { range: "bytes=1000-1999" });
    assertEquals(part.status, 206);
    assertEquals(part.headers.get("content-range"), "bytes 1000-1999/3000");
    assertEquals(part.headers.get("content-length"), "1000");
    assertEquals(new Uint8Array(await part.arrayBuffer()), bytes.subarray(1000, 2000));

    const whole = await get("/web/models/ckpt/model.safetensors");
    assertEquals(whole.status, 200);
    assertEquals(whole.headers.get("accept-ranges"), "bytes");
    assertEquals(new Uint8Array(await whole.arrayBuffer()), bytes);

    const head = await get("/web/models/ckpt/model.safetensors", {}, "HEAD");
    assertEquals([head.status, head.headers.get("content-length"), head.body], [200, "3000", null]);

    const past = await get("/web/models/ckpt/model.safetensors", { range: "bytes=3000-3010" });
    assertEquals([past.status, past.headers.get("content-range")], [416, "bytes */3000"]);

    assertEquals(await (await get("/web/models/")).json(), { models: ["ckpt"] });
    assertEquals(await (await get("/web/models/ckpt/")).json(), { files: ["model.safetensors"] });

    for (
      const path of [
        "/web/models/ckpt/..%2Fsecret.txt",
        "/web/models/ckpt/%2E%2E/secret.txt",
        "/web/models/ckpt/.hidden",
        "/web/models/ckpt/nope.bin",
        "/web/models/other/model.safetensors",
        "/web/models/ckpt",
      ]
    ) {
      assertEquals(await status(path), 404, path);
    }
    assertThrows(() => new WebModels([dir, join(root, "x", "ckpt")]), Error, "would both be /web/models/ckpt/");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("web models: the server routes /web/models/ when given directories (--web-ui-models), not otherwise", async () => {
  const root = await Deno.makeTempDir({ prefix: "web_models_server_" });
  try {
    const dir = join(root, "tiny");
    await Deno.mkdir(dir);
    await Deno.writeFile(join(dir, "model.safetensors"), Uint8Array.from({ length: 100 }, (_, i) => i));
    {
      await using h = await startServer({ server: { webModels: [dir], apiKey: "k" } });
      // No key needed: the worker's fetches carry none (the directories are what the operator chose to expose).
      const part = await fetch(`${h.url}/web/models/tiny/model.safetensors`, { headers: { range: "bytes=10-19" } });
      assertEquals([part.status, part.headers.get("content-range")], [206, "bytes 10-19/100"]);
      assertEquals([...new Uint8Array(await part.arrayBuffer())], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
      const past = await fetch(`${h.url}/web/models/tiny/model.safetensors`, { headers: { range: "bytes=100-" } });
      await past.body?.cancel();
      assertEquals(past.status, 416);
      const outside = await fetch(`${h.url}/web/models/tiny/..%2F..%2Fetc%2Fpasswd`);
      await outside.body?.cancel();
      assertEquals(outside.status, 404);
      assertEquals(await (await fetch(`${h.url}/web/models/`)).json(), { models: ["tiny"] });
    }
    {
      await using h = await startServer();
      const res = await fetch(`${h.url}/web/models/`);
      await res.body?.cancel();
      assertEquals(res.status, 404);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
