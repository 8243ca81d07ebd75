/**
 * The in-page engine: the library bundled for the browser (`web/dist/worker.js`), run in a Web Worker so the page
 * stays responsive. It speaks web/protocol.ts: `load` a preset (weights made here from the seed) or a checkpoint
 * directory the server exposes (`/web/models/NAME`, streamed over range requests), `chat` with an OpenAI request
 * (the chunks `createLLM().chat()` yields, as the server streams them), `abort` a request.
 *
 * Backends: `webgpu` where `navigator.gpu` gives an adapter, with `wasm` beside it for the ops WebGPU lacks;
 * `wasm` alone otherwise. `wasm` needs shared memory, so the page must be cross-origin isolated (COOP/COEP); where
 * it is not, the JavaScript `reference` backend stands in (slow, but it answers).
 *
 * @module
 */
/// <reference lib="deno.worker" />

import { expandRanks, v15TekkenFile } from "../../chat/demo_tokenizer.ts";
import { type TekkenFile, Tokenizer } from "../../chat/tokenizer.ts";
import { isDType } from "../../graph/dtype.ts";
import { createLLM, type LLM, type LLMChatRequest } from "../../engine/llm.ts";
import { setWasmAssets } from "../../runtime/backends/wasm/module.ts";
import type { PageToWorker, WorkerToPage } from "../protocol.ts";

// The kernels, their worker and the demo vocabulary sit beside this bundle in web/dist (see web/build_worker.ts).
setWasmAssets({ kernelsBase: new URL("./", import.meta.url), workerUrl: new URL("./wasm_worker.js", import.meta.url) });

const post = (message: WorkerToPage) => self.postMessage(message);
/** Load reports and warnings go to the page as progress lines. */
const progress = (text: string) => post({ type: "progress", text });

/** Whether the page is cross-origin isolated (COOP/COEP): SharedArrayBuffer, hence the wasm backend, works. */
const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true &&
  typeof SharedArrayBuffer === "function";

let loading: Promise<LLM> | undefined;
const running = new Map<string, AbortController>();

/** Whether WebGPU works here: an API and an adapter (headless browsers often have the first only). */
async function hasWebGPU(): Promise<boolean> {
  const gpu = (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (!gpu) return false;
  try {
    return (await gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

/** The backend list for `createLLM`: the requested one or the best here, then a CPU fallback. */
async function backends(requested?: string): Promise<string[]> {
  // The wasm backend's memory is shared between its threads: no SharedArrayBuffer, no wasm.
  const cpu = isolated ? "wasm" : "reference";
  if (requested === "wasm") return [cpu];
  if (requested === "webgpu" || requested === undefined) {
    if (await hasWebGPU()) return ["webgpu", cpu];
    if (requested === "webgpu") throw new Error("WebGPU is not available in this browser (no adapter)");
  } else throw new Error(`unknown backend "${requested}" (webgpu or wasm)`);
  return [cpu];
}

/** The demo vocabulary (js-tiktoken's compressed ranks, copied into web/dist by the build). */
async function demoTokenizer(): Promise<Tokenizer> {
  const data = await fetchJson(new URL("./demo_tekken.json", import.meta.url).href);
  const { config, bpe_ranks } = data as { config: TekkenFile["config"]; bpe_ranks: string };
  return Tokenizer.fromJSON(v15TekkenFile(config, expandRanks(bpe_ranks)));
}

async function fetchJson(url: string): Promise<unknown> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot load ${url}: HTTP ${res.status}`);
  return await res.json();
}

/** A checkpoint path (`/web/models/NAME`) rather than a preset name. */
function isCheckpoint(model: string): boolean {
  return model.includes("/");
}

async function load(message: Extract<PageToWorker, { type: "load" }>): Promise<LLM> {
  const { model, dtype } = message;
  if (dtype !== undefined && !isDType(dtype)) throw new Error(`unknown dtype "${dtype}"`);
  const backend = await backends(message.backend);
  post({ type: "progress", text: `loading ${model} on ${backend.join(", ")}` });
  // A checkpoint's tekken.json is read by createLLM (over HTTP here); presets take the demo vocabulary.
  const tokenizer = isCheckpoint(model) ? undefined : await demoTokenizer();
  const llm = await createLLM(model, {
    backend,
    dtype,
    tokenizer,
    // Threads share the wasm memory: all cores when the page is isolated (wasm runs), else one.
    threads: isolated ? navigator.hardwareConcurrency || 1 : 1,
    // The page sends one conversation at a time; a small batch keeps the KV cache small.
    maxNumSeqs: 2,
    logger: { info: progress, warn: progress, error: progress },
  });
  const used = [...new Set(llm.model.backends.map((b) => b.name.replace(/:\d+$/, "")))];
  post({ type: "loaded", model, backend: used.join(",") });
  return llm;
}

async function chat(id: string, request: Record<string, unknown>): Promise<void> {
  const abort = new AbortController();
  running.set(id, abort);
  try {
    if (!loading) throw new Error("no model loaded: send a load message first");
    const llm = await loading;
    // The page sends the server's body; `model` and `stream` are the server's business.
    const { model: _model, stream: _stream, ...body } = request;
    for await (const chunk of llm.chat(body as unknown as LLMChatRequest, { signal: abort.signal })) {
      post({ type: "chunk", id, chunk });
    }
    post({ type: "done", id });
  } catch (e) {
    post({ type: "error", id, message: (e as Error).message ?? String(e) });
  } finally {
    running.delete(id);
  }
}

self.onmessage = (ev: MessageEvent<PageToWorker>) => {
  const message = ev.data;
  switch (message.type) {
    case "load": {
      const previous = loading;
      loading = (async () => {
        await (await previous?.catch(() => undefined))?.close();
        return await load(message);
      })();
      loading.catch((e) => post({ type: "error", message: `cannot load ${message.model}: ${(e as Error).message}` }));
      break;
    }
    case "chat":
      void chat(message.id, message.request);
      break;
    case "abort":
      running.get(message.id)?.abort();
      break;
    default:
      post({ type: "error", message: `unknown message ${JSON.stringify((message as { type?: unknown }).type)}` });
  }
};
