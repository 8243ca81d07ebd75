/**
 * The messages between the chat page and the in-page engine's Web Worker (`web/local/worker.ts`, built to
 * `web/dist/worker.js`). The worker yields the same `chat.completion.chunk` objects the server streams, so the page
 * renders both modes with one consumer.
 *
 * @module
 */

import type { ChatCompletionChunk } from "../engine/chat_output.ts";

export type { ChatCompletionChunk };

/** An OpenAI chat-completions request body, as the page sends it (always streamed). */
export interface PageChatRequest {
  model?: string;
  messages: PageMessage[];
  stream: true;
  stream_options?: { include_usage?: boolean };
  temperature?: number;
  max_tokens?: number;
  reasoning_effort?: "none" | "high";
  [key: string]: unknown;
}

/** One message of a {@link PageChatRequest}. */
export interface PageMessage {
  role: "system" | "user" | "assistant" | "tool";
  content:
    | string
    | null
    | ({ type: "text"; text: string } | { type: "image_url"; image_url: { url: string } })[];
  [key: string]: unknown;
}

/** Page → worker: load a model (a preset, or a checkpoint URL the server exposes). */
export interface LoadMessage {
  type: "load";
  model: string;
  dtype?: string;
  backend?: "webgpu" | "wasm";
}

/** Page → worker: run one chat request; its chunks come back under `id`. */
export interface ChatMessage {
  type: "chat";
  id: string;
  request: PageChatRequest;
}

/** Page → worker: stop the request `id` (it ends with finish reason `abort`, then `done`). */
export interface AbortMessage {
  type: "abort";
  id: string;
}

/** Everything the page sends to the worker. */
export type PageToWorker = LoadMessage | ChatMessage | AbortMessage;

/** Worker → page: a line of loading progress to show. */
export interface ProgressMessage {
  type: "progress";
  text: string;
}

/** Worker → page: the model is ready, on this backend. */
export interface LoadedMessage {
  type: "loaded";
  model: string;
  backend: string;
}

/** Worker → page: one chunk of request `id`, as `createLLM().chat()` yields it. */
export interface ChunkMessage {
  type: "chunk";
  id: string;
  chunk: ChatCompletionChunk;
}

/** Worker → page: request `id` is over (after its last chunk). */
export interface DoneMessage {
  type: "done";
  id: string;
}

/** Worker → page: a failure, of request `id` when given, else of the worker (loading). */
export interface ErrorMessage {
  type: "error";
  id?: string;
  message: string;
}

/** Everything the worker sends to the page. */
export type WorkerToPage = ProgressMessage | LoadedMessage | ChunkMessage | DoneMessage | ErrorMessage;
