/// <reference lib="dom" />
/**
 * Local mode: the model runs in a Web Worker (`/web/worker.js`, the in-page engine) and streams the same chunk
 * objects the server sends, through the messages of `web/protocol.ts`.
 *
 * @module
 */

import type { ChatCompletionChunk, PageChatRequest, PageToWorker, WorkerToPage } from "../protocol.ts";

const WORKER_URL = "/web/worker.js";

/** One request's queue of chunks, fed by worker messages and drained by the page's loop. */
interface Pending {
  chunks: ChatCompletionChunk[];
  done: boolean;
  error: Error | null;
  wake: (() => void) | null;
}

/** The page's side of the worker: load once, then stream chat requests. */
export class LocalEngine {
  #worker: Worker | null = null;
  #loaded: Promise<string> | null = null;
  readonly #pending = new Map<string, Pending>();
  #next = 0;

  /** `onProgress` gets the worker's loading lines. */
  constructor(readonly model: string, readonly onProgress: (text: string) => void) {}

  /** Starts the worker and loads the model; resolves with the backend it runs on. */
  load(): Promise<string> {
    return this.#loaded ??= this.#start();
  }

  async #start(): Promise<string> {
    // A missing bundle would only surface as an opaque worker `error` event; ask first so the message can say why.
    const probe = await fetch(WORKER_URL, { method: "HEAD" });
    if (!probe.ok) {
      throw new Error(
        `Local mode needs the in-page engine (${WORKER_URL}), which this server does not have (HTTP ${probe.status}). ` +
          "Use server mode, or build it with `deno task build:web`.",
      );
    }
    const worker = new Worker(WORKER_URL, { type: "module" });
    this.#worker = worker;
    return await new Promise<string>((resolve, reject) => {
      worker.onerror = (e) => {
        e.preventDefault();
        const err = new Error(`The in-page engine failed: ${e.message || "the worker did not start"}`);
        reject(err);
        this.#failAll(err);
      };
      worker.onmessage = (e: MessageEvent<WorkerToPage>) => {
        const m = e.data;
        if (m.type === "progress") this.onProgress(m.text);
        else if (m.type === "loaded") resolve(m.backend);
        else if (m.type === "error" && m.id === undefined) reject(new Error(m.message));
        else this.#deliver(m);
      };
      this.#post({ type: "load", model: this.model });
    });
  }

  /** Streams one request; aborting `signal` asks the worker to stop it. */
  async *chat(request: PageChatRequest, signal: AbortSignal): AsyncGenerator<ChatCompletionChunk> {
    await this.load();
    const id = `local-${this.#next++}`;
    const p: Pending = { chunks: [], done: false, error: null, wake: null };
    this.#pending.set(id, p);
    const onAbort = () => this.#post({ type: "abort", id });
    signal.addEventListener("abort", onAbort, { once: true });
    this.#post({ type: "chat", id, request });
    try {
      while (true) {
        if (p.chunks.length > 0) {
          yield p.chunks.shift()!;
          continue;
        }
        if (p.error) throw p.error;
        if (p.done) return;
        await new Promise<void>((resolve) => p.wake = resolve);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (!p.done) this.#post({ type: "abort", id });
      this.#pending.delete(id);
    }
  }

  #deliver(m: WorkerToPage): void {
    if (m.type !== "chunk" && m.type !== "done" && m.type !== "error") return;
    const p = m.id === undefined ? undefined : this.#pending.get(m.id);
    if (p === undefined) return;
    if (m.type === "chunk") p.chunks.push(m.chunk);
    else if (m.type === "done") p.done = true;
    else p.error = new Error(m.message);
    p.wake?.();
    p.wake = null;
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) {
      p.error = err;
      p.wake?.();
    }
  }

  #post(m: PageToWorker): void {
    this.#worker?.postMessage(m);
  }
}
