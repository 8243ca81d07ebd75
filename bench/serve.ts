/**
 * Server benchmark: generated tokens per second and time to first token at several concurrencies, through the whole
 * stack (HTTP, chat encoding, engine, output parser, SSE) with the server in this process on port 0.
 *
 *   deno run -A bench/serve.ts [--model ms4-mini] [--backend auto] [--prompt 128]
 *     [--gen 64] [--requests 64] [--concurrency 1,8,32] [--json]
 *
 * Each request is a streamed chat completion with a prompt of about `--prompt` tokens (template included) that
 * starts with a unique marker, so no request finds another's prompt in the prefix cache. TTFT is measured at the
 * first chunk carrying output (the role-only chunk that opens every stream is not a token). Throughput is the
 * generated tokens of a level (from the streamed usage) over its wall time. Clients and server share the event
 * loop, so a backend that computes on the main thread (reference) also delays the clients' reads; the numbers are
 * what a client on the same machine would see.
 *
 * Also exports the pieces `bench/load.ts` and the load test reuse: {@link startInProcess}, {@link streamChat},
 * {@link readGauges}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { encodeChat } from "../chat/encode.ts";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import { Tokenizer } from "../chat/tokenizer.ts";
import { isDType } from "../graph/dtype.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { createServer, type Logger, type ServeHandle } from "../server/server.ts";
import { mulberry32 } from "../tests/fixtures.ts";

/** The in-process server's log: errors are kept (a run with server errors is void), the rest dropped. */
export class CountingLogger implements Logger {
  /** Error lines with their error's message. */
  readonly errors: string[] = [];
  /** Warnings (ignored fields and the like). */
  warnings = 0;
  info(_message: string): void {}
  warn(_message: string): void {
    this.warnings++;
  }
  error(message: string, error?: unknown): void {
    this.errors.push(`${message}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Options of {@link startInProcess}; the names follow `deno task serve`'s flags. */
export interface InProcessOptions {
  /** Preset or checkpoint directory. */
  model: string;
  /** Backend name or "auto". */
  backend?: string;
  dtype?: string;
  threads?: number;
  maxModelLen?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  /** Cache blocks (default: enough for every sequence at full length). */
  numBlocks?: number;
}

/** A server listening on 127.0.0.1 with a freshly loaded model. */
export interface InProcessServer {
  url: string;
  handle: ServeHandle;
  model: Model;
  engine: ModelEngine;
  tokenizer: Tokenizer;
  logger: CountingLogger;
  /** The served model name (what requests put in `model`). */
  modelName: string;
  /** Seconds to load the tokenizer and the model. */
  loadSeconds: number;
  close(): Promise<void>;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Starts the server as `deno task serve` wires it (tokenizer, model, engine), on a free port. */
export async function startInProcess(o: InProcessOptions): Promise<InProcessServer> {
  if (o.dtype !== undefined && !isDType(o.dtype)) throw new Error(`--dtype ${o.dtype} is unknown`);
  const t0 = performance.now();
  const tokenizer = await isDirectory(o.model)
    ? await Tokenizer.fromFile(join(o.model, "tekken.json"))
    : await loadDemoTokenizer();
  const maxSeqs = o.maxNumSeqs ?? 8;
  const model = await loadModel(o.model, {
    backend: o.backend,
    dtype: o.dtype as never,
    threads: o.threads,
    maxModelLen: o.maxModelLen,
    maxSeqs,
    // The engine needs a token budget of at least one decode token per sequence.
    maxTokens: Math.max(o.maxNumBatchedTokens ?? 256, maxSeqs),
    numBlocks: o.numBlocks,
    quiet: true,
  });
  const engine = await ModelEngine.create(model, { eosId: tokenizer.eosId });
  const loadSeconds = (performance.now() - t0) / 1000;
  const logger = new CountingLogger();
  const modelName = o.model.replace(/\/+$/, "").split("/").pop()!;
  const server = createServer({ engine, tokenizer, modelName, logger });
  const handle = server.serve({ hostname: "127.0.0.1", port: 0 });
  return {
    url: handle.url,
    handle,
    model,
    engine,
    tokenizer,
    logger,
    modelName,
    loadSeconds,
    async close() {
      await handle.shutdown();
      await engine.close();
      model.dispose();
    },
  };
}

/** What one streamed chat request did, as its client saw it. */
export interface StreamResult {
  /** HTTP status. */
  status: number;
  /** Chunks that carried output (content, reasoning, tool calls or a finish reason). */
  chunks: number;
  /** Milliseconds from sending to the first output chunk (null when none came). */
  firstTokenMs: number | null;
  /** Milliseconds from sending to the end of the stream. */
  totalMs: number;
  /** `usage.completion_tokens` of the last chunk (0 without it). */
  completionTokens: number;
  /** `usage.prompt_tokens` of the last chunk (0 without it). */
  promptTokens: number;
  /** The finish reason of each choice, by index. */
  finishReasons: (string | null)[];
  /** What went wrong: an error status's message, an error event in the stream, or a stream without `[DONE]`. */
  error: string | null;
}

/** Options of {@link streamChat}. */
export interface StreamOptions {
  /** Aborting it stops the request (the client disconnects); {@link streamChat} then rejects with its reason. */
  signal?: AbortSignal;
  /** Called when the response's status line and headers have arrived. */
  onResponse?: () => void;
  /** Called after each output chunk with the count so far (to disconnect mid-stream, say). */
  onChunk?: (chunks: number) => void;
  apiKey?: string;
}

/**
 * Sends a streamed chat completion with `fetch` and reads its SSE events. Asks for the usage chunk; the caller's
 * body wins on every other field.
 */
export async function streamChat(
  url: string,
  body: Record<string, unknown>,
  options: StreamOptions = {},
): Promise<StreamResult> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${options.apiKey ?? "unused"}` },
    body: JSON.stringify({ stream: true, stream_options: { include_usage: true }, ...body }),
    signal: options.signal,
  });
  options.onResponse?.();
  const result: StreamResult = {
    status: res.status,
    chunks: 0,
    firstTokenMs: null,
    totalMs: 0,
    completionTokens: 0,
    promptTokens: 0,
    finishReasons: [],
    error: null,
  };
  if (res.status !== 200) {
    const text = await res.text();
    result.error = `HTTP ${res.status}: ${text.slice(0, 200)}`;
    result.totalMs = performance.now() - t0;
    return result;
  }
  let done = false;
  let buffer = "";
  const onEvent = (data: string) => {
    if (data === "[DONE]") {
      done = true;
      return;
    }
    const chunk = JSON.parse(data);
    if (chunk.error) {
      result.error = `stream error: ${chunk.error.message}`;
      return;
    }
    if (chunk.usage) {
      result.completionTokens = chunk.usage.completion_tokens;
      result.promptTokens = chunk.usage.prompt_tokens;
    }
    let output = false;
    for (const c of chunk.choices ?? []) {
      const d = c.delta ?? {};
      if (c.finish_reason) result.finishReasons[c.index] = c.finish_reason;
      if (c.finish_reason || d.content || d.reasoning !== undefined || d.tool_calls) output = true;
    }
    if (!output) return;
    result.chunks++;
    result.firstTokenMs ??= performance.now() - t0;
    options.onChunk?.(result.chunks);
  };
  const decoder = new TextDecoder();
  for await (const bytes of res.body!) {
    buffer += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith("data: ")) throw new Error(`not an SSE data event: ${JSON.stringify(event)}`);
      onEvent(event.slice(6));
    }
  }
  result.totalMs = performance.now() - t0;
  if (!done && result.error === null) result.error = "the stream ended without [DONE]";
  return result;
}

/** The unlabelled gauges of `/metrics` (`tramontane_` prefix dropped), e.g. `num_requests_running`. */
export async function readGauges(url: string): Promise<Record<string, number>> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`/metrics: HTTP ${res.status}`);
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    // Gauges carry the model label only; counters and histograms with more labels are skipped.
    const m = /^tramontane_(\w+)\{model_name="[^"]*"\} (\S+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

const WORDS = (
  "wind sea rock harbour sail north cold dry valley river olive pine coast storm cloud sun light day night " +
  "season village road stone bridge field vine grape salt boat fisher market square church bell tower hill"
).split(" ");

/**
 * A user message whose chat prompt is about `tokens` tokens (never more; the template's own tokens included) and
 * starts with `tag`, so prompts with different tags share no cache block.
 */
export function promptOf(tok: Tokenizer, tokens: number, tag: string, rand: () => number): string {
  const words = [tag];
  const length = () => encodeChat(tok, { messages: [{ role: "user", content: words.join(" ") }] }).ids.length;
  // Words of the list are one token each with their space; the loop fixes the estimate (tags take a few).
  for (let missing = tokens - length(); missing > 0; missing = tokens - length()) {
    for (let i = 0; i < missing; i++) words.push(WORDS[Math.floor(rand() * WORDS.length)]);
  }
  while (words.length > 1 && length() > tokens) words.pop();
  return words.join(" ");
}

/** The `q`-quantile of `xs` (nearest rank); NaN when empty. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** One concurrency level's results. */
export interface LevelResult {
  concurrency: number;
  requests: number;
  errors: number;
  seconds: number;
  /** Mean prompt tokens per request (from usage). */
  promptTokens: number;
  generatedTokens: number;
  tokensPerSecond: number;
  requestsPerSecond: number;
  ttftMs: { p50: number; p90: number; p99: number };
  /** Per-request decode time per token after the first (ms). */
  tpotMsP50: number;
}

/** Runs `requests` requests with `concurrency` clients, each sending its next one when the last has finished. */
async function runLevel(
  s: InProcessServer,
  concurrency: number,
  requests: number,
  prompt: number,
  gen: number,
  seed: number,
): Promise<LevelResult> {
  const rand = mulberry32(seed);
  // Prompts are built before the clock starts: encoding them is the client's work, not the server's.
  const bodies = Array.from({ length: requests }, (_, i) => ({
    model: s.modelName,
    messages: [{ role: "user", content: promptOf(s.tokenizer, prompt, `[${seed}-${i}]`, rand) }],
    max_tokens: gen,
    temperature: 0,
  }));
  const results: StreamResult[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, async () => {
    while (next < bodies.length) results.push(await streamChat(s.url, bodies[next++]));
  }));
  const seconds = (performance.now() - t0) / 1000;
  const ok = results.filter((r) => r.error === null);
  const generated = ok.reduce((sum, r) => sum + r.completionTokens, 0);
  const ttft = ok.map((r) => r.firstTokenMs!).filter((v) => v !== null);
  const tpot = ok.filter((r) => r.completionTokens > 1)
    .map((r) => (r.totalMs - r.firstTokenMs!) / (r.completionTokens - 1));
  return {
    concurrency,
    requests,
    errors: results.length - ok.length,
    seconds,
    promptTokens: ok.reduce((sum, r) => sum + r.promptTokens, 0) / Math.max(1, ok.length),
    generatedTokens: generated,
    tokensPerSecond: generated / seconds,
    requestsPerSecond: ok.length / seconds,
    ttftMs: { p50: quantile(ttft, 0.5), p90: quantile(ttft, 0.9), p99: quantile(ttft, 0.99) },
    tpotMsP50: quantile(tpot, 0.5),
  };
}

const USAGE = `usage: deno run -A bench/serve.ts [options]
  --model PRESET|DIR   model (default ms4-mini; demo for a quick run)
  --backend NAME       backend, passed to loadModel (default auto)
  --dtype NAME         weight dtype (f32, bf16, f8e4m3, q8)
  --threads N          CPU threads of the backend
  --prompt N           prompt tokens per request, template included (default 128)
  --gen N              max_tokens per request (default 64)
  --requests N         requests per concurrency level (default 64)
  --concurrency LIST   concurrency levels (default 1,8,32)
  --max-num-seqs N     engine slots (default: the largest concurrency)
  --max-num-batched-tokens N  token budget of a step (default 256)
  --warmup N           requests before measuring, not counted (default 2)
  --seed N             seed of the prompts' words (default 0)
  --json               one JSON object instead of the table`;

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: "ms4-mini" },
      backend: { type: "string", default: "auto" },
      dtype: { type: "string" },
      threads: { type: "string" },
      prompt: { type: "string", default: "128" },
      gen: { type: "string", default: "64" },
      requests: { type: "string", default: "64" },
      concurrency: { type: "string", default: "1,8,32" },
      "max-num-seqs": { type: "string" },
      "max-num-batched-tokens": { type: "string", default: "256" },
      warmup: { type: "string", default: "2" },
      seed: { type: "string", default: "0" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(USAGE);
  const int = (name: string, v: string, min = 1) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${v}`);
    return n;
  };
  const prompt = int("prompt", values.prompt!);
  const gen = int("gen", values.gen!);
  const requests = int("requests", values.requests!);
  const levels = values.concurrency!.split(",").map((c) => int("concurrency", c.trim()));
  const warmup = int("warmup", values.warmup!, 0);
  const seed = int("seed", values.seed!, 0);
  const maxSeqs = values["max-num-seqs"] ? int("max-num-seqs", values["max-num-seqs"]) : Math.max(...levels);
  const log = (line: string) => values.json ? console.error(line) : console.log(line);
  if (requests < Math.max(...levels)) {
    log(`note: --requests ${requests} is below concurrency ${Math.max(...levels)}; that level runs fewer clients`);
  }

  const s = await startInProcess({
    model: values.model!,
    backend: values.backend,
    dtype: values.dtype,
    threads: values.threads ? int("threads", values.threads) : undefined,
    // Room for the prompt and the answer, in whole cache blocks.
    maxModelLen: Math.ceil((prompt + gen) / 16) * 16,
    maxNumSeqs: maxSeqs,
    maxNumBatchedTokens: int("max-num-batched-tokens", values["max-num-batched-tokens"]!),
  });
  try {
    log(
      `${values.model} on ${s.model.backend.name}: loaded in ${s.loadSeconds.toFixed(1)} s; ` +
        `${maxSeqs} slots, ${s.model.limits.numBlocks} cache blocks, context ${s.model.limits.maxModelLen}`,
    );
    if (warmup > 0) await runLevel(s, Math.min(warmup, maxSeqs), warmup, prompt, gen, seed + 1000);
    const results: LevelResult[] = [];
    for (const c of levels) {
      const r = await runLevel(s, c, requests, prompt, gen, seed + c);
      results.push(r);
      if (r.errors > 0 || s.logger.errors.length > 0) {
        throw new Error(`concurrency ${c}: ${r.errors} failed requests; server: ${s.logger.errors.slice(0, 3)}`);
      }
    }
    if (values.json) {
      console.log(JSON.stringify({
        model: values.model,
        backend: s.model.backend.name,
        prompt,
        gen,
        requests,
        maxNumSeqs: maxSeqs,
        loadSeconds: s.loadSeconds,
        levels: results,
      }));
      return;
    }
    const f = (v: number, d = 0) => Number.isNaN(v) ? "–" : v.toFixed(d);
    console.log(
      "\n| concurrency | requests | prompt tok | gen tok | seconds | gen tok/s | req/s | TTFT p50 ms | TTFT p90 ms | " +
        "TTFT p99 ms | TPOT p50 ms |",
    );
    console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const r of results) {
      console.log(
        `| ${r.concurrency} | ${r.requests} | ${f(r.promptTokens)} | ${r.generatedTokens} | ${f(r.seconds, 1)} | ` +
          `${f(r.tokensPerSecond, 1)} | ${f(r.requestsPerSecond, 2)} | ${f(r.ttftMs.p50)} | ${f(r.ttftMs.p90)} | ` +
          `${f(r.ttftMs.p99)} | ${f(r.tpotMsP50, 1)} |`,
      );
    }
  } finally {
    await s.close();
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`bench/serve: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
