/**
 * One request's state inside the engine: its token history, its place in the cache, its sampler state and the
 * stream its consumer reads.
 *
 * @module
 */

import type { GenerateRequest, ImageInput } from "./types.ts";
import type { SequenceBlocks } from "./kv_cache.ts";
import { SamplingState } from "./sampler.ts";
import type { TokenStream } from "./stream.ts";

/** Where a sequence is: queued for a slot, holding cache blocks, or gone. */
export type SequenceStatus = "waiting" | "running" | "done";

/**
 * A sequence's whole history is `tokens` (prompt, then generated ids). The cache holds entries for the first
 * `computed` of them; the rest are pending. Prefill and decode are the same thing: feed pending tokens, and sample
 * once the last one is fed. So a sequence preempted by recompute just drops its blocks (`computed = 0`) and, when
 * admitted again, prefills its prompt and output together, sampling the next new token at the end.
 *
 * @example
 * ```ts
 * const seq = new Sequence(req, stream, { maxModelLen: 4096 });
 * seq.pending; // req.promptIds.length: nothing is cached yet
 * ```
 */
export class Sequence {
  /** Prompt then generated ids. */
  readonly tokens: number[];
  /** Length of the original prompt. */
  readonly promptLen: number;
  /** Most tokens this sequence may generate (`maxTokens`, or less where the context ends first). */
  readonly maxGenerated: number;
  /** Ids that end the sequence besides end-of-sequence. */
  readonly stopIds: ReadonlySet<number>;
  /** Penalty statistics and the seeded generator; kept across preemption. */
  readonly sampling: SamplingState;
  /** What the consumer reads. */
  readonly stream: TokenStream;
  /** Cache blocks while running; null while waiting or done. */
  blocks: SequenceBlocks | null = null;
  /** Tokens whose cache entries are written. */
  computed = 0;
  /** Queue state. */
  status: SequenceStatus = "waiting";
  /** Whether it was ever admitted (cached tokens are reported from the first admission only). */
  admitted = false;
  /** The prompt's images (empty for text). */
  readonly images: readonly ImageInput[];
  /**
   * The image-store row of its first image's first vector from the start of its encode (the images follow one
   * another; the engine knows when the encode is done) until its prefill has passed its last image token; null
   * before, and after (a preempted sequence encodes them again).
   */
  imageStart: number | null = null;
  /**
   * The draft head's proposals for the next step (speculative decoding) and the distribution each was drawn from
   * (null: greedy, certain); null when there are none. Dropped when the sequence is preempted or verified.
   */
  spec: { proposals: number[]; probs: (Float64Array | null)[] } | null = null;
  /** The settings the draft's proposals are drawn with (temperature and filters only), made at its first proposal. */
  draftSampling: SamplingState | null = null;
  /** The draft's distributions, one buffer per proposal index, reused from step to step (`spec.probs` holds them). */
  draftProbs: Float64Array[] | null = null;
  #keys: number[] | null = null;

  /** Wraps a validated request. */
  constructor(req: GenerateRequest, stream: TokenStream, opts: { maxModelLen: number }) {
    this.tokens = [...req.promptIds];
    this.promptLen = req.promptIds.length;
    this.maxGenerated = Math.max(0, Math.min(req.maxTokens, opts.maxModelLen - this.promptLen));
    this.stopIds = new Set(req.stopIds ?? []);
    this.images = req.images ?? [];
    if (this.images.length > 0) this.#keys = imageKeys(req.promptIds, this.images);
    this.sampling = new SamplingState(req.sampling, req.promptIds);
    this.stream = stream;
  }

  /** Ids generated so far. */
  get generated(): number {
    return this.tokens.length - this.promptLen;
  }

  /** Tokens it may still generate, the next one included: what a constraint must finish within. */
  get remaining(): number {
    return this.maxGenerated - this.generated;
  }

  /** True while its reader is too far behind (its stream is full): it gets no step until the reader catches up. */
  get paused(): boolean {
    return this.stream.full;
  }

  /** Tokens still to feed before the next sample. */
  get pending(): number {
    return this.tokens.length - this.computed;
  }

  /**
   * Whether tokens `[from, to)` hold image tokens whose vectors are not computed yet (a prompt whose images are
   * all served from the prefix cache never runs the encoder).
   */
  needsImages(from: number, to: number): boolean {
    if (this.imageStart !== null) return false;
    return this.images.some((im) => im.positions.some((p) => p >= from && p < to));
  }

  /** Image-store rows its images take: one per `[IMG]` token. */
  get imageRows(): number {
    return this.images.reduce((n, im) => n + im.positions.length, 0);
  }

  /** Its last image token's position (−1 without images). */
  get lastImagePosition(): number {
    return this.images.reduce((m, im) => Math.max(m, im.positions[im.positions.length - 1] ?? -1), -1);
  }

  /**
   * What the prefix cache hashes: the tokens, except that each `[IMG]` position carries a word of its image's key,
   * so two prompts share blocks only where their pictures match too.
   */
  get cacheKeys(): readonly number[] {
    const keys = this.#keys;
    if (keys === null) return this.tokens;
    while (keys.length < this.tokens.length) keys.push(this.tokens[keys.length]);
    return keys;
  }
}

/** The prompt with every image position replaced by a key word (high bit set: never a token id). */
function imageKeys(prompt: readonly number[], images: readonly ImageInput[]): number[] {
  const keys = [...prompt];
  for (const im of images) {
    im.positions.forEach((p, i) => keys[p] = (im.key[i % im.key.length] | 0x80000000) | 0);
  }
  return keys;
}
