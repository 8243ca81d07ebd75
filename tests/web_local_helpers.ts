/**
 * Helpers of tests/web_local_test.ts: a test server for the in-page engine (a bare page, `web/dist/*` at `/web/*`,
 * checkpoint directories at `/web/models/*` through server/web_models.ts, with the cross-origin isolation headers
 * the wasm backend's shared memory needs), Chromium through playwright-core, and a page-side driver of the worker
 * protocol (web/protocol.ts).
 *
 * @module
 */

import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";
import { WEB_MODELS_PREFIX, WebModels } from "../server/web_models.ts";
import { CHROMIUM } from "./browser_helpers.ts";

export { browserAvailable, screenshot } from "./browser_helpers.ts";

/** WebGPU on SwiftShader (CPU), headless: Chromium's own software adapter. */
export const WEBGPU_FLAGS = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"];
/** No WebGPU at all: the worker must fall back to wasm. */
export const NO_WEBGPU_FLAGS = ["--disable-features=WebGPU"];

const DIST = new URL("../web/dist/", import.meta.url);
const TYPES: Record<string, string> = { js: "text/javascript", wasm: "application/wasm", json: "application/json" };
const ISOLATED = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
const PAGE = `<!doctype html><meta charset="utf-8"><title>in-page engine test</title><link rel="icon" href="data:,">
<style>body{font:14px monospace;margin:16px}pre{white-space:pre-wrap}</style>
<h3>Tramontane in-page engine (web/dist/worker.js)</h3><pre id="log"></pre>`;

/** The page's globals the drivers use (they run in the page; Deno's types have no DOM). */
interface PageGlobals {
  document: { getElementById(id: string): { textContent: string } };
}

/**
 * A test server; `ranges` counts the 206 answers of `/web/models/*` (the checkpoint streamed by ranges), `missing`
 * lists the paths it answered 404 (the browser logs each as a console error without its URL).
 */
export interface TestServer {
  url: string;
  ranges: number;
  missing: string[];
  close(): Promise<void>;
}

/**
 * Serves the bare page, web/dist and `models` (checkpoint directories) on a free port; cross-origin isolated (COOP
 * and COEP on the page) unless `isolated` is false.
 */
export function serveTestPage(models: string[] = [], isolated = true): TestServer {
  const ISOLATION = isolated ? ISOLATED : {};
  const webModels = new WebModels(models);
  const state = { ranges: 0, missing: [] as string[] };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/") return new Response(PAGE, { headers: { ...ISOLATION, "content-type": "text/html" } });
    if (path.startsWith(WEB_MODELS_PREFIX)) {
      try {
        const res = await webModels.handle(req);
        if (res.status === 206) state.ranges++;
        return res;
      } catch (e) {
        const status = (e as { status?: number }).status ?? 500;
        if (status === 404) state.missing.push(path);
        return new Response(String(e), { status });
      }
    }
    const name = path.slice("/web/".length);
    if (path.startsWith("/web/") && /^[a-z0-9_]+\.[a-z0-9]+$/.test(name)) {
      const bytes = await Deno.readFile(new URL(name, DIST)).catch(() => null);
      if (bytes) {
        const type = TYPES[name.split(".").pop()!] ?? "application/octet-stream";
        return new Response(bytes, { headers: { ...ISOLATION, "content-type": type } });
      }
    }
    state.missing.push(path);
    return new Response("not found", { status: 404 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    get ranges() {
      return state.ranges;
    },
    missing: state.missing,
    close: () => server.shutdown(),
  };
}

/** Launches headless chromium with `args`; console errors and page errors are collected into `errors`. */
export async function openPage(
  url: string,
  args: string[],
): Promise<{ browser: Browser; page: Page; errors: string[] }> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args });
  const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  // A 404 is logged without its URL: the server's `missing` list says which (some are expected, e.g. params.json).
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  return { browser, page, errors };
}

/** What one in-page chat gave: its tokens (from logprobs), content, finish reason, the worker's error if any. */
export interface PageChat {
  tokens: string[];
  /** The last chunk's `usage.prompt_tokens`. */
  promptTokens?: number;
  content: string;
  finish: string | null;
  error?: string;
  ms: number;
}

/** Starts the worker in the page (once) and loads `model`; resolves with the `loaded` message's backend. */
export function loadInPage(
  page: Page,
  model: string,
  options: { backend?: "webgpu" | "wasm"; dtype?: string } = {},
): Promise<string> {
  return page.evaluate(async ({ model, options }) => {
    const log = (globalThis as unknown as PageGlobals).document.getElementById("log");
    // The page's one worker: a second load replaces the model in it.
    const g = globalThis as unknown as { engine?: Worker };
    const w = g.engine ??= new Worker("/web/worker.js", { type: "module" });
    return await new Promise<string>((resolve, reject) => {
      w.onerror = (e) => reject(new Error(`worker failed: ${e.message}`));
      w.onmessage = (ev) => {
        const m = ev.data;
        if (m.type === "progress") log.textContent += `${m.text}\n`;
        else if (m.type === "loaded") {
          log.textContent += `loaded ${m.model} on ${m.backend}\n`;
          resolve(m.backend);
        } else if (m.type === "error") reject(new Error(m.message));
      };
      w.postMessage({ type: "load", model, ...options });
    });
  }, { model, options });
}

/**
 * Sends one greedy chat (`max_tokens`, logprobs on) to the loaded worker and collects its chunks until `done`;
 * `abortAfter` aborts it once that many tokens have come.
 */
export function chatInPage(
  page: Page,
  prompt: string | ContentPart[],
  maxTokens: number,
  abortAfter?: number,
): Promise<PageChat> {
  return page.evaluate(({ prompt, maxTokens, abortAfter }) => {
    const w = (globalThis as unknown as { engine: Worker }).engine;
    const log = (globalThis as unknown as PageGlobals).document.getElementById("log");
    const id = crypto.randomUUID();
    const out = {
      promptTokens: undefined as number | undefined,
      tokens: [] as string[],
      content: "",
      finish: null as string | null,
      error: undefined as string | undefined,
      ms: 0,
    };
    const t0 = performance.now();
    const text = typeof prompt === "string"
      ? prompt
      : prompt.map((p) => p.type === "text" ? p.text : "[image]").join(" ");
    log.textContent += `> ${text}\n`;
    return new Promise<typeof out>((resolve) => {
      w.onmessage = (ev) => {
        const m = ev.data;
        if (m.id !== id) return;
        if (m.type === "chunk") {
          out.promptTokens = m.chunk.usage?.prompt_tokens ?? out.promptTokens;
          const choice = m.chunk.choices[0];
          if (!choice) return;
          for (const t of choice.logprobs?.content ?? []) out.tokens.push(t.token);
          out.content += choice.delta?.content ?? "";
          log.textContent += choice.delta?.content ?? "";
          out.finish = choice.finish_reason ?? out.finish;
          if (abortAfter !== undefined && out.tokens.length >= abortAfter) w.postMessage({ type: "abort", id });
        } else if (m.type === "done" || m.type === "error") {
          if (m.type === "error") out.error = m.message;
          out.ms = performance.now() - t0;
          log.textContent += `\n[${out.finish ?? m.type}: ${out.tokens.length} tokens in ${out.ms.toFixed(0)} ms]\n`;
          resolve(out);
        }
      };
      const request = {
        messages: [{ role: "user", content: prompt }],
        temperature: 0,
        max_tokens: maxTokens,
        logprobs: true,
      };
      w.postMessage({ type: "chat", id, request });
    });
  }, { prompt, maxTokens, abortAfter });
}

/** A message part the page sends: text, or an image as a data: URL (as an attachment is sent). */
export type ContentPart = { type: "text"; text: string } | { type: "image_url"; image_url: { url: string } };
