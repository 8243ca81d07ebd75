/**
 * What every route gets: the server's fixed parts ({@link ServerContext}) and the record of the request being
 * served ({@link RequestRecord}), which becomes its log line and its metrics.
 *
 * @module
 */

import type { Tokenizer } from "../chat/tokenizer.ts";
import type { Engine, SamplingParams } from "../engine/types.ts";
import type { Metrics } from "./metrics.ts";
import type { ImageOptions } from "./images.ts";

/** Where log lines go; `console` fits. */
export interface Logger {
  /** One line per request, startup notes. */
  info(message: string): void;
  /** Requests that ask for something ignored. */
  warn(message: string): void;
  /** Internal errors, with the error itself. */
  error(message: string, error?: unknown): void;
}

/** The server's fixed parts, shared by all requests. */
export interface ServerContext {
  engine: Engine;
  tokenizer: Tokenizer;
  modelName: string;
  /** A Jinja chat template to render prompts with instead of the built-in v15 encoder. */
  chatTemplate?: string;
  /** Sampling values for fields a request leaves out. */
  defaults: SamplingParams;
  /** Limits on image inputs (downloads, sizes, count). */
  images: ImageOptions;
  /** Tokens a chat request without `max_tokens` generates at most (`--max-tokens-default`); null: up to the context. */
  maxTokensDefault: number | null;
  metrics: Metrics;
  logger: Logger;
  /** Unix seconds when the server started (the `created` of `/v1/models`). */
  startedAt: number;
}

/** One request as it is served; filled in by the route, written out as one log line at its end. */
export interface RequestRecord {
  /** The response id (`chatcmpl-…`, `cmpl-…`) or a request id for other routes. */
  id: string;
  method: string;
  path: string;
  /** The route label for metrics (unknown paths share one label so the series stay bounded). */
  route: string;
  status: number;
  promptTokens: number;
  completionTokens: number;
  /** `performance.now()` at arrival. */
  start: number;
  /** Milliseconds from arrival to the first generated token, once there is one. */
  ttftMs?: number;
  /** Set by streaming routes: resolves when the stream ends, so the log line waits for it. */
  done?: Promise<void>;
}

/** A fresh OpenAI-style id: `prefix` and 24 hex digits. */
export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
