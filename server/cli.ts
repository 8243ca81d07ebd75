/**
 * `deno task serve`: flags → tokenizer → listen (503 on /health while loading) → load model → engine → serve until
 * SIGTERM or SIGINT, then drain (`--shutdown-grace`) and exit 0.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { type DType, HEAD_DTYPES, WEIGHT_DTYPES } from "../graph/dtype.ts";
import { type SoftmaxScaleMode, softmaxScaleMode } from "../graph/models/mistral4.ts";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import { Tokenizer } from "../chat/tokenizer.ts";
import type { Engine, EngineStats, GenerateRequest, Generation, VisionSettings } from "../engine/types.ts";
import { ModelEngine } from "../engine/engine.ts";
import { checkSpeculativeTokens, loadModel, MAX_SPECULATIVE_TOKENS } from "../engine/model.ts";
import { GENERATION_CONFIG, RANDOM_MAX_NEW_TOKENS, readGenerationConfig } from "../weights/generation_config.ts";
import { presets } from "../graph/models/mistral4_presets.ts";
import { createServer, DEFAULT_SHUTDOWN_GRACE_MS } from "./server.ts";

/** `--shutdown-grace`'s default, in seconds. */
const DEFAULT_GRACE_S = DEFAULT_SHUTDOWN_GRACE_MS / 1000;

const USAGE = `usage: deno task serve [options]
  --model DIR|PRESET         checkpoint directory (HF or Mistral layout) or preset (default: demo)
  --tokenizer FILE           tekken.json (default: DIR/tekken.json; a preset uses the built-in demo vocabulary)
  --host ADDR                listen address (default 127.0.0.1)
  --port N                   listen port (default 8000; 0 picks a free one)
  --api-key KEY              require Authorization: Bearer KEY on /v1/*
  --backend NAME[,NAME…]     backend, or a preference list (wasm,reference): each op on the first that runs it,
                             every fallback and copy printed at load (default: the best available)
  --strict                   refuse any fallback from the first backend of --backend (a load error naming them)
  --dtype NAME               weight dtype (f32, bf16, f8e4m3, q8, q4: every text linear in 4 bits but the head)
  --head-dtype NAME          the lm head's dtype (q4, q8, bf16; default as --dtype, q8 under q4)
  --threads N                CPU threads
  --max-model-len N          context length per sequence (default min(model, 4096))
  --max-num-seqs N           sequences decoded together (default 8)
  --max-num-batched-tokens N token budget of one step (default 256)
  --max-tokens-default N     tokens a request without max_tokens generates at most (llama-server's --n-predict);
                             none: up to the context, as OpenAI. Default: 256 for a preset (random weights never
                             end an answer), else max_new_tokens of DIR/generation_config.json, else none
  --chat-template FILE       a Jinja chat template instead of the built-in v15 encoder
  --served-model-name NAME   the model name clients use (default: the preset or directory name)
  --max-body-bytes N         largest request body (default 32 MiB)
  --seed N                   seed of a preset's random weights (default 0)
  --max-images N             images accepted per request (default 8)
  --max-image-bytes N        largest image, downloaded or inline (default 20 MB)
  --allow-private-image-urls let image URLs reach private and loopback addresses (trusted networks only)
  --softmax-scale MODE       MLA softmax scale: plain (1/sqrt(qk_head_dim)) or deepseek_yarn (DeepSeek's
                             mscale²/sqrt(qk_head_dim), as transformers and llama.cpp apply it; MODEL.md §1.7);
                             default: the checkpoint's (plain unless its config says otherwise)
  --speculative-model DIR|PRESET
                             speculative decoding with an EAGLE draft head (a checkpoint directory, or a preset
                             <target>-eagle such as demo-eagle, random weights); greedy output is unchanged, sampled
                             output keeps the target's distribution
  --num-speculative-tokens K tokens the draft proposes per sequence and step, 1 to 16 (default 3; needs
                             --speculative-model)
  --cache-dtype NAME         latent cache dtype: bf16 (default) or f32 (exact comparisons)
  --shutdown-grace S         on SIGTERM or SIGINT: stop accepting, let running requests finish for up to S seconds,
                             cancel the rest, exit 0 (default ${DEFAULT_GRACE_S}; a second signal, or one while the
                             model loads, ends the process at once)
  --no-web-ui                do not serve the chat page (GET / and /web/*; on by default)
  --web-ui-models DIR[,DIR…] checkpoint directories the page's in-page engine may load, read-only at
                             /web/models/NAME/ (NAME: the directory's last component; repeat the flag or list them)
  --help, -h                 this text`;

/** Longest `--shutdown-grace`, in seconds (a day). */
const MAX_SHUTDOWN_GRACE_S = 86_400;

/** The server's settings, read from its flags by {@link parseServeArgs}. */
export interface ServeOptions {
  /** `--help`: print the usage and do nothing else. */
  help: boolean;
  /** `--model`: checkpoint directory or preset. */
  model: string;
  /** `--tokenizer`: a tekken.json path. */
  tokenizer?: string;
  /** `--host`. */
  host: string;
  /** `--port` (0: any free port). */
  port: number;
  /** `--api-key`. */
  apiKey?: string;
  /** `--backend`: a name or a comma-separated preference list. */
  backend?: string;
  /** `--strict`: no fallback from the first backend. */
  strict: boolean;
  /** `--dtype`. */
  dtype?: DType;
  /** `--head-dtype`. */
  headDType?: DType;
  /** `--threads`. */
  threads?: number;
  /** `--max-model-len`. */
  maxModelLen?: number;
  /** `--max-num-seqs`. */
  maxNumSeqs: number;
  /** `--max-num-batched-tokens`. */
  maxNumBatchedTokens: number;
  /** `--max-tokens-default`: a number, null for `none` (up to the context), undefined when not given. */
  maxTokensDefault?: number | null;
  /** `--chat-template`: a Jinja file path. */
  chatTemplate?: string;
  /** `--served-model-name`, else the preset or the directory's last component. */
  servedModelName: string;
  /** `--max-body-bytes`. */
  maxBodyBytes?: number;
  /** `--seed`. */
  seed?: number;
  /** `--max-images`. */
  maxImages?: number;
  /** `--max-image-bytes`. */
  maxImageBytes?: number;
  /** `--allow-private-image-urls`. */
  allowPrivateImageUrls: boolean;
  /** `--softmax-scale`. */
  softmaxScale?: SoftmaxScaleMode;
  /** `--shutdown-grace`, in seconds. */
  shutdownGrace: number;
  /** `--speculative-model` and `--num-speculative-tokens`, when speculating. */
  speculative?: { model: string; numTokens: number };
  /** `--cache-dtype`. */
  cacheDtype?: DType;
  /** False with `--no-web-ui`: no chat page at `/`. */
  webUi: boolean;
  /** `--web-ui-models`: checkpoint directories exposed to the in-page engine. */
  webUiModels: string[];
}

/** `--cache-dtype`'s values. */
const CACHE_DTYPES: readonly DType[] = ["bf16", "f32"];

/** Default of `--num-speculative-tokens`. */
const DEFAULT_SPECULATIVE_TOKENS = 3;

/**
 * `--speculative-model` and `--num-speculative-tokens` (vLLM's names) as loadModel's `speculative`, checked: K from 1
 * to 16, and K only with a draft. Shared with `deno task bench`.
 */
export function speculativeFlags(
  model: string | undefined,
  k: string | undefined,
): { model: string; numTokens: number } | undefined {
  if (k !== undefined && model === undefined) {
    throw new UsageError("--num-speculative-tokens needs --speculative-model DIR|PRESET (the draft head)");
  }
  if (model === undefined) return undefined;
  if (model.trim() === "") throw new UsageError("--speculative-model must not be empty");
  const n = k === undefined ? DEFAULT_SPECULATIVE_TOKENS : /^\d+$/.test(k) ? Number(k) : NaN;
  try {
    return { model, numTokens: checkSpeculativeTokens(n) };
  } catch {
    throw new UsageError(`--num-speculative-tokens must be an integer from 1 to ${MAX_SPECULATIVE_TOKENS}, got "${k}"`);
  }
}

/** `--cache-dtype`: bf16 or f32; undefined when not given. Shared with `deno task bench`. */
export function cacheDtypeFlag(v: string | undefined): DType | undefined {
  return dtypeFlag("cache-dtype", v, CACHE_DTYPES);
}

/** `--name`'s value, one of `allowed`; undefined when not given. */
function dtypeFlag(name: string, v: string | undefined, allowed: readonly DType[]): DType | undefined {
  if (v !== undefined && !allowed.includes(v as DType)) {
    throw new UsageError(`--${name} must be one of ${allowed.join(", ")}, got "${v}"`);
  }
  return v as DType | undefined;
}

/** A flag the server cannot start with: an unknown flag, a stray argument or a bad value; the message says which. */
export class UsageError extends Error {
  /** `message` names the flag and what it accepts. */
  constructor(message: string) {
    super(`${message} (deno task serve --help lists the flags)`);
    this.name = "UsageError";
  }
}

/** An engine that answers "not ready" until the real one is loaded, so /health can say 503 meanwhile. */
class LoadingEngine implements Engine {
  inner: Engine | null = null;
  constructor(readonly maxModelLen: number) {}
  get ready(): boolean {
    return this.inner?.ready ?? false;
  }
  get failure(): Error | null {
    return this.inner?.failure ?? null;
  }
  get vision(): VisionSettings | null {
    return this.inner?.vision ?? null;
  }
  generate(req: GenerateRequest): Generation {
    if (!this.inner) throw new Error("the model is still loading");
    return this.inner.generate(req);
  }
  stats(): EngineStats {
    return this.inner?.stats() ??
      { running: 0, waiting: 0, batchSize: 0, cacheBlocksUsed: 0, cacheBlocksTotal: 0, tokensProcessed: 0 };
  }
}

/** `--name`'s value as a whole number ≥ `min` (decimal digits only: "", "1e3", "0x10" and "-1" are refused). */
function intFlag(values: Record<string, unknown>, name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(String(v)) ? Number(v) : NaN;
  if (!(n >= min && n <= max)) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
    throw new UsageError(`--${name} must be ${range}, got "${v}"`);
  }
  return n;
}

/** `--max-tokens-default`: N ≥ 1, or `none` (null: up to the context); undefined when not given. */
function maxTokensFlag(v: string | undefined): number | null | undefined {
  if (v === undefined) return undefined;
  if (v === "none") return null;
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= Number.MAX_SAFE_INTEGER)) {
    throw new UsageError(`--max-tokens-default must be an integer ≥ 1 or none, got "${v}"`);
  }
  return n;
}

/** `--name`'s value, refusing an empty one. */
function textFlag(values: Record<string, unknown>, name: string): string | undefined {
  const v = values[name] as string | undefined;
  if (v !== undefined && v.trim() === "") throw new UsageError(`--${name} must not be empty`);
  return v;
}

/**
 * Reads `deno task serve`'s flags (see USAGE) into {@link ServeOptions}, checking every value; throws
 * {@link UsageError} naming the flag for an unknown flag, a stray argument or a bad value.
 *
 * @example
 * ```ts
 * const o = parseServeArgs(["--model", "tiny", "--port", "0", "--softmax-scale", "deepseek_yarn"]);
 * // o.port === 0, o.softmaxScale === "deepseek_yarn", o.servedModelName === "tiny"
 * ```
 */
export function parseServeArgs(args: string[]): ServeOptions {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({
      args,
      options: {
        model: { type: "string", default: "demo" },
        tokenizer: { type: "string" },
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "8000" },
        "api-key": { type: "string" },
        backend: { type: "string" },
        strict: { type: "boolean" },
        dtype: { type: "string" },
        "head-dtype": { type: "string" },
        threads: { type: "string" },
        "max-model-len": { type: "string" },
        "max-num-seqs": { type: "string" },
        "max-num-batched-tokens": { type: "string" },
        "max-tokens-default": { type: "string" },
        "chat-template": { type: "string" },
        "served-model-name": { type: "string" },
        "max-body-bytes": { type: "string" },
        seed: { type: "string" },
        "max-images": { type: "string" },
        "max-image-bytes": { type: "string" },
        "allow-private-image-urls": { type: "boolean" },
        "no-web-ui": { type: "boolean" },
        "softmax-scale": { type: "string" },
        "shutdown-grace": { type: "string" },
        "speculative-model": { type: "string" },
        "num-speculative-tokens": { type: "string" },
        "cache-dtype": { type: "string" },
        "web-ui-models": { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const dtype = dtypeFlag("dtype", values.dtype as string | undefined, WEIGHT_DTYPES);
  const headDType = dtypeFlag("head-dtype", values["head-dtype"] as string | undefined, HEAD_DTYPES);
  let softmaxScale: SoftmaxScaleMode | undefined;
  try {
    if (values["softmax-scale"] !== undefined) {
      softmaxScale = softmaxScaleMode(values["softmax-scale"], "--softmax-scale");
    }
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const model = textFlag(values, "model")!;
  return {
    help: values.help === true,
    model,
    tokenizer: textFlag(values, "tokenizer"),
    host: textFlag(values, "host")!,
    port: intFlag(values, "port", 0, 65535)!,
    apiKey: textFlag(values, "api-key"), // an empty key would turn authentication off
    backend: textFlag(values, "backend"),
    strict: values.strict === true,
    dtype,
    headDType,
    threads: intFlag(values, "threads", 1),
    maxModelLen: intFlag(values, "max-model-len", 1),
    maxNumSeqs: intFlag(values, "max-num-seqs", 1) ?? 8,
    maxNumBatchedTokens: intFlag(values, "max-num-batched-tokens", 1) ?? 256,
    maxTokensDefault: maxTokensFlag(values["max-tokens-default"] as string | undefined),
    chatTemplate: textFlag(values, "chat-template"),
    servedModelName: textFlag(values, "served-model-name") ?? model.replace(/\/+$/, "").split("/").pop()!,
    maxBodyBytes: intFlag(values, "max-body-bytes", 1),
    seed: intFlag(values, "seed", 0),
    maxImages: intFlag(values, "max-images", 0),
    maxImageBytes: intFlag(values, "max-image-bytes", 1),
    allowPrivateImageUrls: values["allow-private-image-urls"] === true,
    webUi: values["no-web-ui"] !== true,
    softmaxScale,
    // A day at most: the grace is one setTimeout, whose delay stops at 2³¹ ms (about 24.8 days).
    shutdownGrace: intFlag(values, "shutdown-grace", 0, MAX_SHUTDOWN_GRACE_S) ?? DEFAULT_GRACE_S,
    speculative: speculativeFlags(
      values["speculative-model"] as string | undefined,
      values["num-speculative-tokens"] as string | undefined,
    ),
    cacheDtype: cacheDtypeFlag(values["cache-dtype"] as string | undefined),
    webUiModels: ((values["web-ui-models"] ?? []) as unknown as string[]).flatMap((v) => v.split(",")).filter((v) =>
      v !== ""
    ),
  };
}

/**
 * Resolves with the first SIGTERM or SIGINT. `dispose()` (call it once that signal has come, or when no longer
 * waiting) removes the listeners, so a second signal takes the default action: the process ends at once.
 */
function stopSignal(): { signal: Promise<Deno.Signal>; dispose(): void } {
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const listening: [Deno.Signal, () => void][] = [];
  const signal = new Promise<Deno.Signal>((resolve) => {
    for (const name of signals) {
      const listener = () => resolve(name);
      try {
        Deno.addSignalListener(name, listener);
        listening.push([name, listener]);
      } catch {
        // Windows has SIGINT (Ctrl-C) but no SIGTERM.
      }
    }
  });
  return { signal, dispose: () => listening.forEach(([name, listener]) => Deno.removeSignalListener(name, listener)) };
}

/**
 * Runs the server until SIGTERM or SIGINT, then shuts it down: it stops accepting, and running requests have
 * `--shutdown-grace` seconds to finish before they are cancelled. Resolves once the server has stopped; the caller
 * exits. The signals are handled only once the model is ready: one that comes while it loads (or a second one)
 * takes the default action and ends the process at once.
 */
export async function main(args: string[]): Promise<void> {
  const o = parseServeArgs(args);
  if (o.help) {
    console.log(USAGE);
    return;
  }
  const model = o.model;
  const isPreset = !model.includes("/") && !(await exists(model));
  const tokenizer = await loadServeTokenizer(o, isPreset);
  const maxTokens = await defaultMaxTokens(o, isPreset);
  const chatTemplate = o.chatTemplate ? await Deno.readTextFile(o.chatTemplate) : undefined;
  const maxSeqs = o.maxNumSeqs;

  const engine = new LoadingEngine(o.maxModelLen ?? 4096);
  const server = createServer({
    engine,
    tokenizer,
    modelName: o.servedModelName,
    apiKey: o.apiKey,
    maxBodyBytes: o.maxBodyBytes,
    chatTemplate,
    images: { maxImages: o.maxImages, maxBytes: o.maxImageBytes, allowPrivate: o.allowPrivateImageUrls },
    maxTokensDefault: maxTokens.limit ?? undefined,
    webUi: o.webUi,
    webModels: o.webUiModels,
  });
  const handle = server.serve({ hostname: o.host, port: o.port });
  console.log(`tramontane: listening on ${handle.url} (loading ${model}…)`);
  if (isPreset) {
    console.log("tramontane: a preset has random weights: its text is noise. Use --model DIR for real weights.");
  }
  if (maxTokens.limit !== null) {
    console.log(
      `tramontane: requests without max_tokens stop at ${maxTokens.limit} tokens (${maxTokens.source}; ` +
        `--max-tokens-default N|none changes it)`,
    );
  }
  const t0 = performance.now();
  const loaded = await loadModel(model, {
    backend: o.backend,
    strict: o.strict,
    log: (line) => console.log(`tramontane: ${line}`),
    dtype: o.dtype,
    headDType: o.headDType,
    threads: o.threads,
    seed: o.seed,
    maxModelLen: o.maxModelLen,
    maxSeqs,
    maxTokens: Math.max(o.maxNumBatchedTokens, maxSeqs),
    softmaxScale: o.softmaxScale,
    speculative: o.speculative,
    cacheDtype: o.cacheDtype,
  });
  // The real context length is known only now (the model's own maximum caps the default).
  Object.defineProperty(engine, "maxModelLen", { value: loaded.limits.maxModelLen });
  const modelEngine = await ModelEngine.create(loaded, { eosId: tokenizer.eosId });
  engine.inner = modelEngine;
  console.log(
    `tramontane: ${model} ready on ${loaded.backends.map((b) => b.name).join(",")} in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s ` +
      `(context ${loaded.limits.maxModelLen}, ${maxSeqs} sequences, ${loaded.limits.numBlocks} cache blocks, ` +
      `softmax scale ${loaded.config.softmax_scale_mode})`,
  );
  if (loaded.draft) {
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    console.log(
      `tramontane: speculative decoding: draft ${loaded.draft.name} proposes ${loaded.draft.numTokens} tokens per ` +
        `step (${loaded.draft.config.num_hidden_layers} layers; its cache ${mib(loaded.draft.cacheBytes)}, its own ` +
        `weights ${mib(loaded.draft.weightBytes)}, embedding and head shared)`,
    );
  }
  const stop = stopSignal();
  const signal = await Promise.race([stop.signal, handle.finished.then(() => null)]);
  stop.dispose();
  if (signal !== null) {
    console.log(
      `tramontane: ${signal}: shutting down; running requests have ${o.shutdownGrace} s to finish ` +
        `(send it again to stop at once)`,
    );
    await handle.shutdown(o.shutdownGrace * 1000);
  }
  await modelEngine.close();
  console.log("tramontane: stopped");
}

/**
 * The tokenizer to serve with: `--tokenizer FILE`, else the directory's `tekken.json`, else (a preset) the demo's.
 * A directory without one is an error that says what to do.
 */
export async function loadServeTokenizer(
  o: Pick<ServeOptions, "model" | "tokenizer">,
  isPreset: boolean,
): Promise<Tokenizer> {
  if (o.tokenizer) return await Tokenizer.fromFile(o.tokenizer);
  if (isPreset) return await loadDemoTokenizer();
  if (!(await exists(o.model))) {
    throw new Error(`--model ${o.model}: no such directory (presets: ${Object.keys(presets).join(", ")})`);
  }
  const path = join(o.model, "tekken.json");
  if (!(await exists(path))) {
    throw new Error(
      `tokenizer: ${path} does not exist. Pass --tokenizer PATH to the model's tekken.json (Mistral's releases ship ` +
        `one); a checkpoint written by deno task make-checkpoint has one beside its weights`,
    );
  }
  return await Tokenizer.fromFile(path);
}

/**
 * How many tokens a request without `max_tokens` generates at most (null: up to the context) and why: the flag, else
 * {@link RANDOM_MAX_NEW_TOKENS} for a preset (random weights never end an answer), else the checkpoint's
 * `generation_config.json` `max_new_tokens` (make-checkpoint writes 256), else none, as OpenAI.
 */
export async function defaultMaxTokens(
  o: Pick<ServeOptions, "model" | "maxTokensDefault">,
  isPreset: boolean,
): Promise<{ limit: number | null; source: string }> {
  if (o.maxTokensDefault !== undefined) return { limit: o.maxTokensDefault, source: "--max-tokens-default" };
  if (isPreset) return { limit: RANDOM_MAX_NEW_TOKENS, source: "a preset's default: random weights never end" };
  const file = join(o.model, GENERATION_CONFIG);
  const limit = (await readGenerationConfig(o.model))?.maxNewTokens ?? null;
  return limit === null
    ? { limit, source: "OpenAI's: up to the context" }
    : { limit, source: `max_new_tokens of ${file}` };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
