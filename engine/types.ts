/**
 * The contract between the HTTP server and an inference engine. The server turns requests into prompt ids and
 * sampling settings, the engine turns them into a stream of token ids. The real engine (continuous batching over a
 * paged latent cache) and the test fake (`tests/fake_engine.ts`) both implement {@link Engine}.
 *
 * @module
 */

import type { TokenConstraint } from "../grammar/types.ts";

export type { ConstraintMatcher, TokenConstraint } from "../grammar/types.ts";
/** What a backend throws when its device is lost or out of memory (the server maps both to 503). */
export { DeviceLostError, OutOfMemoryError } from "../runtime/backend.ts";

/** How to pick each token. Ranges are checked by the server; the engine may trust them. */
export interface SamplingParams {
  /** 0 = greedy (argmax); otherwise logits are divided by it. */
  temperature: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability sums to at least this; 1 = off. */
  topP: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK: number;
  /** Drop tokens whose probability is below `minP` × the top probability; 0 = off. */
  minP: number;
  /** OpenAI's presence penalty in [-2, 2], applied to tokens generated so far; 0 = off. */
  presencePenalty: number;
  /** OpenAI's frequency penalty in [-2, 2], scaled by each token's count so far; 0 = off. */
  frequencyPenalty: number;
  /** Multiplicative (CTRL-style) penalty over prompt and output tokens; 1 or absent = off. */
  repetitionPenalty?: number;
  /**
   * Seeds this sequence's own generator: the same seed and prompt give the same tokens. Any safe integer (the
   * engine hashes it to its generator's width); absent = random.
   */
  seed?: number;
  /** Report log-probabilities: absent = none, 0 = the chosen token's only, k = also the k most likely. */
  logprobs?: number;
  /**
   * Constrained decoding: only ids the constraint allows are sampled, and the output is complete within
   * `maxTokens` (JSON schemas, forced tool calls; see `grammar/`). Absent = unconstrained.
   */
  constraint?: TokenConstraint;
}

/** One sequence to generate. */
export interface GenerateRequest {
  /** The whole prompt, `<s>` included. */
  promptIds: number[];
  /** Sampling settings. */
  sampling: SamplingParams;
  /** Most tokens to generate; the server guarantees `promptIds.length + maxTokens <= maxModelLen`. */
  maxTokens: number;
  /** Ids that end the sequence (not yielded) besides `</s>`. */
  stopIds?: number[];
  /** Aborting frees the sequence's slot and cache blocks at once; the iterator then ends with `"abort"`. */
  signal?: AbortSignal;
  /**
   * The prompt's images, in prompt order: each one's preprocessed pixels and the prompt positions of its `[IMG]`
   * tokens, which receive its vectors. Only for an engine with {@link Engine.vision}.
   */
  images?: ImageInput[];
}

/** One image of a prompt, ready for the vision encoder (`chat/image.ts` `preprocessImage` makes the pixels). */
export interface ImageInput {
  /** Normalised CHW pixels of `(patch·merge·rows) × (patch·merge·cols)`. */
  pixels: Float32Array;
  /** Token grid: `rows · cols` vectors, row-major. */
  grid: { rows: number; cols: number };
  /** Prompt positions of the image's `[IMG]` tokens, increasing, `rows · cols` of them (row-major). */
  positions: number[];
  /**
   * A digest of the image's content (any length; e.g. SHA-256 of its bytes as 8 words): prompts share cached
   * blocks only where their images' keys agree, since `[IMG]` token ids alone say nothing about the picture.
   */
  key: Uint32Array;
}

/** How an engine's model wants images preprocessed (from its vision config). */
export interface VisionSettings {
  /** Pixels per patch side. */
  patchSize: number;
  /** Patches per merged token side. */
  mergeSize: number;
  /** Longest image side before the downscale. */
  maxImageSize: number;
}

/** One generated token. */
export interface GeneratedToken {
  /** The token id. */
  id: number;
  /** Natural log of its probability under the sampling distribution; present when `sampling.logprobs` is set. */
  logprob?: number;
  /** The most likely tokens at this step, most likely first; `sampling.logprobs` of them when it is > 0. */
  topLogprobs?: TokenLogprob[];
}

/** An id with its log-probability. */
export interface TokenLogprob {
  /** The token id. */
  id: number;
  /** Natural log of its probability (≤ 0). */
  logprob: number;
}

/**
 * Why a sequence ended: `eos` — the model produced `</s>` (not yielded); `stop` — it produced one of `stopIds`
 * (not yielded); `length` — `maxTokens` or the context was reached; `abort` — the signal fired or the consumer
 * stopped iterating.
 */
export type EndReason = "eos" | "stop" | "length" | "abort";

/** The iterator's return value: how a sequence ended and what the prompt cost. */
export interface GenerationEnd {
  /** Why it ended. */
  reason: EndReason;
  /** The stop id that ended it, when `reason` is `"stop"`. */
  stopId?: number;
  /** Prompt tokens served from the prefix cache instead of being computed (0 when none). */
  cachedTokens: number;
}

/**
 * One generation: an async generator of tokens whose return value is the {@link GenerationEnd}. Read it with
 * `next()` to see the end, or with `for await` when the reason does not matter. Calling `return()` early ends it
 * like an abort.
 */
export type Generation = AsyncGenerator<GeneratedToken, GenerationEnd, undefined>;

/** Engine gauges and counters, read by `/metrics`. */
export interface EngineStats {
  /** Sequences being generated now. */
  running: number;
  /** Sequences queued for a slot or for cache blocks. */
  waiting: number;
  /** Sequences in the last engine step. */
  batchSize: number;
  /** KV-cache blocks in use. */
  cacheBlocksUsed: number;
  /** KV-cache blocks in all. */
  cacheBlocksTotal: number;
  /** Tokens run through the model since start (prompt and generated; prefix-cache hits not counted). */
  tokensProcessed: number;
  /** Speculative decoding's counters since start; absent when the engine does not speculate. */
  speculative?: SpeculativeStats;
}

/** Counters of speculative decoding (an EAGLE draft proposing, the target verifying). */
export interface SpeculativeStats {
  /** Tokens the draft proposes per sequence and step (`--num-speculative-tokens`). */
  numTokens: number;
  /** Proposals verified by the target. */
  proposed: number;
  /** Proposals the target accepted. */
  accepted: number;
  /** Verifications: one per sequence and step that had proposals. */
  verifications: number;
  /** Draft forwards run (catch-up and chained proposals). */
  draftSteps: number;
}

/**
 * What the server needs from an engine.
 *
 * @example
 * ```ts
 * const gen = engine.generate({ promptIds, sampling, maxTokens: 16, signal });
 * for (let r = await gen.next(); ; r = await gen.next()) {
 *   if (r.done) { console.log("ended:", r.value.reason); break; }
 *   console.log(r.value.id);
 * }
 * ```
 */
export interface Engine {
  /** Context length: prompt plus generated tokens of one sequence. */
  readonly maxModelLen: number;
  /** False while weights load or warm up; the server answers 503 meanwhile. */
  readonly ready: boolean;
  /**
   * Set once the engine can no longer generate (a backend's device was lost: a `DeviceLostError`): running
   * and new requests fail with it, and the server answers 503 `device_lost`, `/health` included. Absent or null
   * while it can.
   */
  readonly failure?: Error | null;
  /** Set when the model reads images ({@link GenerateRequest.images}); absent or null for text only. */
  readonly vision?: VisionSettings | null;
  /** Starts one sequence. Errors (out of memory, a backend failure) reject the iterator's `next()`. */
  generate(req: GenerateRequest): Generation;
  /** Current load, for `/metrics`. */
  stats(): EngineStats;
}
