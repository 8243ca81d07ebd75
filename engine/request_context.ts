/**
 * What checking and running an OpenAI-style request needs: the engine, its tokenizer, defaults, limits and where
 * warnings go. The HTTP server (`server/`) and the library entry ({@link createLLM} in `llm.ts`) both fill one in,
 * so a request means the same thing, and fails with the same message, whichever way it comes.
 *
 * @module
 */

import type { Tokenizer } from "../chat/tokenizer.ts";
import type { ImageOptions } from "./images.ts";
import type { Engine, SamplingParams } from "./types.ts";

/** Where log lines go; `console` fits. */
export interface Logger {
  /** One line per request, startup notes. */
  info(message: string): void;
  /** Requests that ask for something ignored. */
  warn(message: string): void;
  /** Internal errors, with the error itself. */
  error(message: string, error?: unknown): void;
}

/** The fixed parts a request is checked and run against. */
export interface RequestContext {
  engine: Engine;
  tokenizer: Tokenizer;
  /** The model's name, as error messages say it. */
  modelName: string;
  /** A Jinja chat template to render prompts with instead of the built-in v15 encoder. */
  chatTemplate?: string;
  /** Sampling values for fields a request leaves out. */
  defaults: SamplingParams;
  /** Limits on image inputs (downloads, sizes, count). */
  images: ImageOptions;
  /** The token budget of a chat request without `max_tokens`; null or absent: the rest of the context (OpenAI's rule). */
  maxTokensDefault?: number | null;
  logger: Logger;
}

/** A fresh OpenAI-style id: `prefix` and 24 hex digits. */
export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
