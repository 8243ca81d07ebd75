/**
 * Test harness for the server suites: the real tokenizer from `../shared/fixtures`, a {@link FakeEngine}, the
 * server listening on a random port, and the official `openai` client pointed at it.
 *
 * @module
 */

import OpenAI from "openai";
import { Tokenizer } from "../chat/tokenizer.ts";
import { FakeEngine, type FakeEngineOptions } from "./fake_engine.ts";
import { fixture } from "./fixtures.ts";
import type { Logger } from "../server/context.ts";
import { createServer, type ServeHandle, type ServerOptions, type TramontaneServer } from "../server/server.ts";

export { OpenAI };

/** The served model name in tests. */
export const MODEL = "mistral-small-4-test";

let cached: Tokenizer | undefined;

/** The v15-format tokenizer fixture, loaded once per test process. */
export async function tokenizer(): Promise<Tokenizer> {
  cached ??= await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
  return cached;
}

/** A logger that keeps lines for assertions instead of printing them. */
export class MemoryLogger implements Logger {
  readonly lines: string[] = [];
  readonly errors: unknown[] = [];
  info(message: string): void {
    this.lines.push(message);
  }
  warn(message: string): void {
    this.lines.push(`warn: ${message}`);
  }
  error(message: string, error?: unknown): void {
    this.lines.push(`error: ${message}`);
    this.errors.push(error);
  }
}

/** A running test server. Use with `await using`, or call `close()`. */
export interface Harness {
  tok: Tokenizer;
  engine: FakeEngine;
  server: TramontaneServer;
  handle: ServeHandle;
  logger: MemoryLogger;
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** The official client, `baseURL` = url + `/v1`. */
  client: OpenAI;
  /** POSTs JSON (or a raw string) and returns the response. */
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a server on port 0 with a fake engine. */
export async function startServer(
  options: { engine?: FakeEngineOptions; server?: Partial<ServerOptions> } = {},
): Promise<Harness> {
  const tok = await tokenizer();
  const engine = new FakeEngine(options.engine);
  const logger = new MemoryLogger();
  const server = createServer({ engine, tokenizer: tok, modelName: MODEL, logger, ...options.server });
  const handle = server.serve({ hostname: "127.0.0.1", port: 0 });
  const apiKey = options.server?.apiKey ?? "dummy";
  const client = new OpenAI({ apiKey, baseURL: `${handle.url}/v1`, maxRetries: 0, timeout: 20_000 });
  const close = () => handle.shutdown();
  return {
    tok,
    engine,
    server,
    handle,
    logger,
    url: handle.url,
    client,
    post: (path, body, headers = {}) =>
      fetch(handle.url + path, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}`, ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Reads an SSE body into its `data:` payloads (JSON-parsed, `[DONE]` kept as the string). */
export async function readSse(res: Response): Promise<unknown[]> {
  const text = await res.text();
  const out: unknown[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    if (!block.startsWith("data: ")) throw new Error(`not an SSE data event: ${JSON.stringify(block)}`);
    const data = block.slice(6);
    out.push(data === "[DONE]" ? data : JSON.parse(data));
  }
  return out;
}

/** Ids that make the fake say `text`. */
export function say(tok: Tokenizer, text: string): number[] {
  return tok.encode(text);
}

/** Ids of `[THINK]reasoning[/THINK]content`. */
export function thinkThenSay(tok: Tokenizer, reasoning: string, content: string): number[] {
  return [tok.specialId("[THINK]"), ...tok.encode(reasoning), tok.specialId("[/THINK]"), ...tok.encode(content)];
}

/** Ids of `[TOOL_CALLS]name[ARGS]args` for each call. */
export function callTools(tok: Tokenizer, calls: [name: string, args: string][]): number[] {
  return calls.flatMap(([name, args]) => [
    tok.specialId("[TOOL_CALLS]"),
    ...tok.encode(name),
    tok.specialId("[ARGS]"),
    ...tok.encode(args),
  ]);
}
