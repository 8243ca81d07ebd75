/**
 * The library's one entry: load a model and chat with it as with the server, without HTTP. {@link createLLM}
 * loads a preset or a checkpoint directory with its tokenizer and starts the engine; {@link LLM.chat} takes an
 * OpenAI chat request (messages with text and `image_url` parts, tools and `tool_choice`, `reasoning_effort`,
 * `response_format`, sampling fields) and yields the very chunks the server streams; {@link LLM.chatCompletion}
 * returns the whole response. Requests are checked by the server's own code (`chat_request.ts`), so a bad field
 * throws an `InvalidRequestError` with the server's message and `param`.
 *
 * @example
 * ```ts
 * const llm = await createLLM("demo");
 * for await (const chunk of llm.chat({ messages: [{ role: "user", content: "Hi" }], max_tokens: 16 })) {
 *   console.log(chunk.choices[0]?.delta.content ?? "");
 * }
 * await llm.close();
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import type { ChatMessage, FunctionTool } from "../chat/encode.ts";
import { InvalidRequestError } from "../chat/errors.ts";
import { type Delta, OutputStreamParser } from "../chat/parse.ts";
import { Tokenizer } from "../chat/tokenizer.ts";
import { type DType, HEAD_DTYPES, WEIGHT_DTYPES } from "../graph/dtype.ts";
import { hasFileSystem, isNotFound, readTextFile } from "../graph/files.ts";
import { type SoftmaxScaleMode, softmaxScaleMode } from "../graph/models/mistral4.ts";
import { resolveModel } from "../graph/models/mod.ts";
import {
  chatChunks,
  type ChatCompletion,
  type ChatCompletionChunk,
  collectChatCompletion,
  deltaText,
  type Usage,
} from "./chat_output.ts";
import { prepareChat, type PreparedChat } from "./chat_request.ts";
import { type ChoiceEvent, choiceRequests, runChoices } from "./choices.ts";
import { EngineClosedError, ModelEngine } from "./engine.ts";
import { checkSpeculativeTokens, loadModel, type Model, type SpeculativeOptions } from "./model.ts";
import { DEFAULT_SAMPLING } from "./params.ts";
import { DEFAULT_IMAGE_OPTIONS, type ImageOptions } from "./images.ts";
import { type Logger, newId, type RequestContext } from "./request_context.ts";
import type { SamplingParams } from "./types.ts";
import { RANDOM_MAX_NEW_TOKENS, readGenerationConfig } from "../weights/generation_config.ts";

/** Options of {@link createLLM}: how to load the model, and the defaults its requests get. */
export interface LLMOptions {
  /** Backend name, "auto" (default: the best available) or a preference list, as `--backend`. */
  backend?: string | readonly string[];
  /** Refuse any fallback from the first backend (a load error naming them). */
  strict?: boolean;
  /** Weight dtype: f32, bf16, f16, f8e4m3, nvfp4, q8 or q4 (default: the checkpoint's; presets bf16). */
  dtype?: DType;
  /** The lm head's dtype: q4, q8 or bf16 (default: as `dtype`, but q8 under q4), as `--head-dtype`. */
  headDType?: DType;
  /** CPU threads (default: all cores). */
  threads?: number;
  /** Seed of a preset's random weights (default 0). */
  seed?: number;
  /** MLA softmax scale, `plain` or `deepseek_yarn` (default: the checkpoint's). */
  softmaxScale?: SoftmaxScaleMode;
  /** Context length per sequence (default min(model, 4096)). */
  maxModelLen?: number;
  /** Sequences generated together (default 8). */
  maxNumSeqs?: number;
  /** Token budget of one engine step (default 256). */
  maxNumBatchedTokens?: number;
  /** A `tekken.json` path or a loaded tokenizer (default: `DIR/tekken.json`; presets: the built-in vocabulary). */
  tokenizer?: string | Tokenizer;
  /** A Jinja chat template (its text) to build prompts with instead of the built-in v15 encoder. */
  chatTemplate?: string;
  /** The model's name in responses and messages (default: the preset or the directory's last component). */
  name?: string;
  /**
   * Most tokens a request without `max_tokens` generates (default: 256 on a preset, whose random weights never end
   * an answer; on a checkpoint its `generation_config.json` `max_new_tokens`, else the rest of the context).
   */
  maxTokensDefault?: number;
  /** Sampling values for fields a request leaves out (default {@link DEFAULT_SAMPLING}: temperature 0.7). */
  sampling?: Partial<SamplingParams>;
  /** Limits on images (count, bytes, download time, private addresses); see {@link DEFAULT_IMAGE_OPTIONS}. */
  images?: Partial<ImageOptions>;
  /** Load the vision tower (default: when the model has one and the backend runs it). */
  vision?: boolean;
  /** Where warnings (ignored request fields) and the load report go (default `console`). */
  logger?: Logger;
  /** No load report. */
  quiet?: boolean;
  /**
   * Speculative decoding with an EAGLE draft head (`--speculative-model`, `--num-speculative-tokens`): a preset
   * (`demo-eagle`, …) or a checkpoint directory, and the tokens it proposes per step (1..16).
   */
  speculative?: SpeculativeOptions;
}

/** A chat request, as `POST /v1/chat/completions` takes it (`model` and `stream` aside). */
export interface LLMChatRequest {
  /** The conversation: text, `image_url` parts (`data:` or `http(s)` URLs), tool calls and results. */
  messages: ChatMessage[];
  /** Functions the model may call. */
  tools?: FunctionTool[] | null;
  /** `auto` (default), `none`, `required`, or one function by name: the last two force calls by grammar. */
  tool_choice?: "auto" | "none" | "required" | { type: "function"; function: { name: string } } | null;
  /** With a forced choice, false allows only one call. */
  parallel_tool_calls?: boolean | null;
  /** `"none"` or `"high"` on Mistral Small 4; absent: the tokenizer's default. */
  reasoning_effort?: string | null;
  /** `{type: "json_object"}` or `{type: "json_schema", json_schema: {name, schema}}`: output valid by grammar. */
  response_format?:
    | { type: "text" }
    | { type: "json_object"; schema?: unknown }
    | { type: "json_schema"; json_schema: { name?: string; schema?: unknown; strict?: boolean | null } }
    | null;
  /** Most tokens to generate (default: {@link LLMOptions.maxTokensDefault}). */
  max_tokens?: number | null;
  /** The same, under OpenAI's newer name; wins over `max_tokens`. */
  max_completion_tokens?: number | null;
  /** 0 to 2; 0 is greedy. */
  temperature?: number | null;
  /** Nucleus sampling, in (0, 1]. */
  top_p?: number | null;
  /** Keep the k most likely tokens; 0 or −1 = off. */
  top_k?: number | null;
  /** Drop tokens below `min_p` × the top probability. */
  min_p?: number | null;
  /** −2 to 2. */
  presence_penalty?: number | null;
  /** −2 to 2. */
  frequency_penalty?: number | null;
  /** Multiplicative penalty in (0, 2]; 1 = off. */
  repetition_penalty?: number | null;
  /** Same seed and request, same output. */
  seed?: number | null;
  /** Up to 4 strings that end the answer (not included). */
  stop?: string | string[] | null;
  /** Token ids that end the answer. */
  stop_token_ids?: number[] | null;
  /** Choices to generate (1 to 128). */
  n?: number | null;
  /** Report each token's log-probability. */
  logprobs?: boolean | null;
  /** With `logprobs`: also the k most likely tokens (0 to 20). */
  top_logprobs?: number | null;
  /** {@link LLM.chat} only: `include_usage` (default true) ends the stream with a usage chunk. */
  stream_options?: { include_usage?: boolean } | null;
}

/** Per-call options of {@link LLM.chat} and {@link LLM.chatCompletion}. */
export interface LLMCallOptions {
  /** Aborting ends every choice at once (finish reason `abort`) and frees its engine sequence. */
  signal?: AbortSignal;
}

/**
 * A loaded model with its tokenizer and engine, ready to chat. Make one with {@link createLLM}; end it with
 * {@link LLM.close} (or `await using`).
 */
export class LLM {
  /** The model's name, as responses carry it. */
  readonly name: string;
  /** The tokenizer prompts are encoded with. */
  readonly tokenizer: Tokenizer;
  /** The loaded model (config, backends, limits). */
  readonly model: Model;
  /** The continuous-batching engine: concurrent calls share its steps. */
  readonly engine: ModelEngine;
  readonly #ctx: RequestContext;
  #closed = false;

  /** Use {@link createLLM}. */
  constructor(init: { name: string; tokenizer: Tokenizer; model: Model; engine: ModelEngine; ctx: RequestContext }) {
    this.name = init.name;
    this.tokenizer = init.tokenizer;
    this.model = init.model;
    this.engine = init.engine;
    this.#ctx = init.ctx;
  }

  /** Context length: prompt plus generated tokens of one sequence. */
  get maxModelLen(): number {
    return this.engine.maxModelLen;
  }

  /** Whether requests may carry images. */
  get vision(): boolean {
    return this.engine.vision !== null;
  }

  /**
   * Streams a chat completion: the chunks `POST /v1/chat/completions` sends with `stream: true` (a role chunk
   * per choice, then content, reasoning and tool-call deltas, a last chunk per choice with `finish_reason`, and a
   * usage chunk unless `stream_options.include_usage` is false). A bad request throws `InvalidRequestError` (with
   * `param`) at the first iteration; leaving the loop early stops the generation.
   *
   * @example
   * ```ts
   * let text = "";
   * for await (const chunk of llm.chat({ messages: [{ role: "user", content: "Hi" }], max_tokens: 32 })) {
   *   text += chunk.choices[0]?.delta.content ?? "";
   * }
   * ```
   */
  async *chat(request: LLMChatRequest, options: LLMCallOptions = {}): AsyncGenerator<ChatCompletionChunk> {
    const streamOptions = { include_usage: true, ...request.stream_options };
    const { id, params } = await this.#prepare({ ...request, stream: true, stream_options: streamOptions });
    const run = this.#run(params, options.signal);
    yield* chatChunks(run.events, { ...this.#output(id, params, run.usage), includeUsage: params.includeUsage });
  }

  /**
   * The whole chat completion, as `POST /v1/chat/completions` answers without `stream`: the message
   * (`content`, `reasoning`, `tool_calls`), finish reason and usage of each choice.
   *
   * @example
   * ```ts
   * const done = await llm.chatCompletion({ messages: [{ role: "user", content: "Hi" }], max_tokens: 32 });
   * console.log(done.choices[0].message.content, done.usage.completion_tokens);
   * ```
   */
  async chatCompletion(request: LLMChatRequest, options: LLMCallOptions = {}): Promise<ChatCompletion> {
    const { id, params } = await this.#prepare({ ...request, stream: false });
    const run = this.#run(params, options.signal);
    return await collectChatCompletion(run.events, this.#output(id, params, run.usage));
  }

  /**
   * Stops the engine (generations still running fail with `EngineClosedError`) and frees the model's memory on
   * every backend. Later calls throw `EngineClosedError`. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.engine.close();
    this.model.dispose();
  }

  /** `await using llm = await createLLM(...)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #prepare(body: Record<string, unknown>): Promise<{ id: string; params: PreparedChat }> {
    if (this.#closed) throw new EngineClosedError();
    if (typeof body !== "object" || body === null) {
      throw new InvalidRequestError("The request must be an object with messages.", { param: "messages" });
    }
    const id = newId("chatcmpl-");
    return { id, params: await prepareChat(this.#ctx, id, body) };
  }

  /** The choices of a prepared request through the engine, with the usage they add up to. */
  #run(params: PreparedChat, signal?: AbortSignal) {
    const promptTokens = params.prompts.reduce((sum, p) => sum + p.ids.length, 0);
    let completionTokens = 0;
    let cachedTokens = 0;
    const events = runChoices({
      engine: this.engine,
      requests: choiceRequests(params),
      stops: params.stops,
      makeStage: () => new OutputStreamParser(this.tokenizer),
      pieceText: deltaText,
      signal: signal ?? new AbortController().signal,
    });
    async function* counted(): AsyncGenerator<ChoiceEvent<Delta>> {
      for await (const ev of events) {
        if (ev.type === "end") {
          completionTokens += ev.completionTokens;
          cachedTokens = Math.max(cachedTokens, ev.cachedTokens);
        }
        yield ev;
      }
    }
    const usage = (): Usage => ({
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      prompt_tokens_details: { cached_tokens: cachedTokens },
    });
    return { events: counted(), usage };
  }

  #output(id: string, params: PreparedChat, usage: () => Usage) {
    const created = Math.floor(Date.now() / 1000);
    return { tokenizer: this.tokenizer, id, created, model: this.name, n: params.n, logprobs: params.logprobs, usage };
  }
}

/** An option that cannot be used: an `InvalidRequestError` whose `param` is the option's name. */
function badOption(name: string, message: string): InvalidRequestError {
  return new InvalidRequestError(`createLLM: ${message}`, { param: name, code: "invalid_value" });
}

/** A whole number ≥ `min`, or undefined when absent. */
function intOption(options: LLMOptions, name: keyof LLMOptions, min: number): number | undefined {
  const v = options[name];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw badOption(name, `${name} must be an integer ≥ ${min}, got ${JSON.stringify(v)}.`);
  }
  return v;
}

/** Checks the options that loading would otherwise reject deep inside (or not at all). */
function checkOptions(options: LLMOptions): void {
  if (options.dtype !== undefined && !WEIGHT_DTYPES.includes(options.dtype)) {
    throw badOption("dtype", `dtype must be one of ${WEIGHT_DTYPES.join(", ")}, got ${JSON.stringify(options.dtype)}.`);
  }
  if (options.headDType !== undefined && !HEAD_DTYPES.includes(options.headDType)) {
    const got = JSON.stringify(options.headDType);
    throw badOption("headDType", `headDType must be one of ${HEAD_DTYPES.join(", ")}, got ${got}.`);
  }
  if (options.softmaxScale !== undefined) {
    try {
      softmaxScaleMode(options.softmaxScale, "softmaxScale");
    } catch (e) {
      throw badOption("softmaxScale", (e as Error).message);
    }
  }
  intOption(options, "threads", 1);
  intOption(options, "seed", 0);
  intOption(options, "maxModelLen", 1);
  intOption(options, "maxNumSeqs", 1);
  intOption(options, "maxNumBatchedTokens", 1);
  intOption(options, "maxTokensDefault", 1);
  if (options.speculative !== undefined) {
    if (typeof options.speculative?.model !== "string" || options.speculative.model === "") {
      throw badOption("speculative", "speculative.model must name the draft head (a preset or a directory).");
    }
    try {
      checkSpeculativeTokens(options.speculative.numTokens, "speculative.numTokens");
    } catch (e) {
      throw badOption("speculative", (e as Error).message);
    }
  }
}

/** The `tekken.json` beside a checkpoint; when there is none, the error says how to give one. */
async function checkpointTokenizer(dir: string): Promise<Tokenizer> {
  const path = join(dir, "tekken.json");
  const missing = () =>
    badOption("tokenizer", `${dir} has no tekken.json; pass its path as { tokenizer: "path/to/tekken.json" }.`);
  if (!hasFileSystem()) {
    // A browser: the directory is a URL path the server exposes (graph/files.ts reads it by fetch).
    const text = await readTextFile(path).catch((e) => {
      throw isNotFound(e) ? missing() : e;
    });
    return Tokenizer.fromJSON(JSON.parse(text));
  }
  try {
    await Deno.stat(path);
  } catch {
    throw missing();
  }
  return await Tokenizer.fromFile(path);
}

/**
 * Loads a model — a preset (`tiny`, `demo`, `ms4-mini`, … : random weights, noise for text, every protocol feature
 * works) or a checkpoint directory (HF or Mistral layout, with its `tekken.json`) — and starts its engine.
 *
 * @example
 * ```ts
 * const llm = await createLLM("demo", { threads: 2 });
 * const done = await llm.chatCompletion({
 *   messages: [{ role: "user", content: "What is the weather in Paris?" }],
 *   tools: [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }],
 *   tool_choice: "required",
 * });
 * console.log(done.choices[0].message.tool_calls);
 * await llm.close();
 * ```
 */
export async function createLLM(model: string, options: LLMOptions = {}): Promise<LLM> {
  if (typeof model !== "string" || model.trim() === "") {
    throw badOption("model", "model must be a preset name or a checkpoint directory.");
  }
  checkOptions(options);
  // A wrong path says "not a preset nor a checkpoint" before the tokenizer is looked for beside it.
  const preset = (await resolveModel(model)).source === "preset";
  // As the server: a preset's random weights never end; a checkpoint's generation_config.json may set a length.
  const answerLength = options.maxTokensDefault ??
    (preset ? RANDOM_MAX_NEW_TOKENS : (await readGenerationConfig(model))?.maxNewTokens ?? undefined);
  const tokenizer = options.tokenizer instanceof Tokenizer
    ? options.tokenizer
    : options.tokenizer !== undefined
    ? await Tokenizer.fromFile(options.tokenizer)
    : preset
    ? await loadDemoTokenizer()
    : await checkpointTokenizer(model);
  const logger = options.logger ?? console;
  const maxSeqs = options.maxNumSeqs ?? 8;
  const loaded = await loadModel(model, {
    backend: options.backend,
    strict: options.strict,
    dtype: options.dtype,
    headDType: options.headDType,
    threads: options.threads,
    seed: options.seed,
    softmaxScale: options.softmaxScale,
    maxModelLen: options.maxModelLen,
    maxSeqs,
    maxTokens: Math.max(options.maxNumBatchedTokens ?? 256, maxSeqs),
    vision: options.vision,
    speculative: options.speculative,
    quiet: options.quiet,
    log: options.quiet ? undefined : (line) => logger.info(line),
  });
  let engine: ModelEngine;
  try {
    engine = await ModelEngine.create(loaded, { eosId: tokenizer.eosId });
  } catch (e) {
    loaded.dispose();
    throw e;
  }
  const name = options.name ?? model.replace(/\/+$/, "").split("/").pop()!;
  const ctx: RequestContext = {
    engine,
    tokenizer,
    modelName: name,
    chatTemplate: options.chatTemplate,
    defaults: { ...DEFAULT_SAMPLING, ...options.sampling },
    images: { ...DEFAULT_IMAGE_OPTIONS, ...options.images },
    maxTokensDefault: answerLength,
    logger,
  };
  return new LLM({ name, tokenizer, model: loaded, engine, ctx });
}
