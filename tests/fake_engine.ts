/**
 * A deterministic stand-in for the inference engine, for server tests: no model, just token ids from a script or
 * from a seeded PRNG, with the same contract as the real engine ({@link Engine}).
 *
 * @module
 */

import type {
  Engine,
  EngineStats,
  GeneratedToken,
  GenerateRequest,
  Generation,
  GenerationEnd,
  TokenLogprob,
  VisionSettings,
} from "../engine/types.ts";
import { mulberry32 } from "./fixtures.ts";

/** Options for {@link FakeEngine}. */
export interface FakeEngineOptions {
  /**
   * What temperature 0 emits: a fixed id list, or a function of the request (so a test can answer by prompt). The
   * script is cut by `maxTokens`, stop ids and `</s>`; when it runs out the fake emits `</s>`. Default: empty.
   */
  script?: readonly number[] | ((req: GenerateRequest) => readonly number[]);
  /** Ids that sampling (temperature > 0) draws from, uniformly from a PRNG seeded by `sampling.seed`. */
  vocab?: readonly number[];
  /** End-of-sequence id (default 2, `</s>`). It may be in `vocab`: drawing it ends the sequence. */
  eosId?: number;
  /** Context length (default 4096). */
  maxModelLen?: number;
  /** Milliseconds to wait before each token (default 0), for disconnect tests. */
  delayMs?: number;
  /** Initial readiness (default true); tests flip {@link FakeEngine.ready}. */
  ready?: boolean;
  /** Tokens per cache block, for the made-up cache gauges (default 16). */
  blockSize?: number;
  /** Cache blocks in all (default 1024). */
  cacheBlocks?: number;
  /** Accept images preprocessed this way (default: text only); they are recorded in `requests`, not looked at. */
  vision?: VisionSettings;
}

/** A stable hash of two integers into [0, 1): logprobs depend only on (id, position), never on timing. */
function hash01(a: number, b: number): number {
  return mulberry32(Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 1, 0x85ebca77))();
}

/** Resolves after `ms`, or early when `signal` aborts (no timer is left behind either way). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * A fake engine: temperature 0 plays the script, temperature > 0 draws from `vocab` with a PRNG seeded by
 * `sampling.seed` (same seed → same tokens). Honours `maxTokens`, `stopIds`, `</s>`, the context length and abort;
 * counts running sequences so tests can see that a disconnect freed its slot.
 *
 * @example
 * ```ts
 * const engine = new FakeEngine({ script: tok.encode("Hello there"), delayMs: 5 });
 * for await (const t of engine.generate({ promptIds: [1], sampling, maxTokens: 8 })) console.log(t.id);
 * ```
 */
export class FakeEngine implements Engine {
  readonly maxModelLen: number;
  /** See {@link FakeEngineOptions.vision}. */
  readonly vision: VisionSettings | null;
  /** Settable by tests: the server answers 503 while false. */
  ready: boolean;
  /** Settable by tests: per-token delay in milliseconds. */
  delayMs: number;
  /** Settable by tests: what temperature 0 emits. */
  script: readonly number[] | ((req: GenerateRequest) => readonly number[]);
  /** Every request the fake has received, in order (tests inspect prompts and sampling). */
  readonly requests: GenerateRequest[] = [];
  readonly #vocab: readonly number[];
  readonly #eosId: number;
  readonly #blockSize: number;
  readonly #cacheBlocks: number;
  #running = new Map<number, number>(); // sequence number → tokens held (prompt + generated)
  #next = 0;
  #tokensProcessed = 0;
  #lastBatch = 0;

  /** Creates a fake engine. */
  constructor(options: FakeEngineOptions = {}) {
    this.script = options.script ?? [];
    this.#vocab = options.vocab ?? [];
    this.#eosId = options.eosId ?? 2;
    this.maxModelLen = options.maxModelLen ?? 4096;
    this.vision = options.vision ?? null;
    this.delayMs = options.delayMs ?? 0;
    this.ready = options.ready ?? true;
    this.#blockSize = options.blockSize ?? 16;
    this.#cacheBlocks = options.cacheBlocks ?? 1024;
  }

  /** Starts one sequence (see {@link Engine.generate}). */
  generate(req: GenerateRequest): Generation {
    this.requests.push(req);
    return this.#run(req);
  }

  /** Current load. */
  stats(): EngineStats {
    let used = 0;
    for (const held of this.#running.values()) used += Math.ceil(held / this.#blockSize);
    return {
      running: this.#running.size,
      waiting: 0,
      batchSize: this.#lastBatch,
      cacheBlocksUsed: used,
      cacheBlocksTotal: this.#cacheBlocks,
      tokensProcessed: this.#tokensProcessed,
    };
  }

  async *#run(req: GenerateRequest): AsyncGenerator<GeneratedToken, GenerationEnd, undefined> {
    const seq = this.#next++;
    const { sampling, signal } = req;
    const stopIds = new Set(req.stopIds ?? []);
    const greedy = sampling.temperature === 0 || this.#vocab.length === 0;
    const script = greedy ? (typeof this.script === "function" ? this.script(req) : this.script) : [];
    const random = mulberry32(sampling.seed ?? Math.floor(Math.random() * 2 ** 32));
    const limit = Math.min(req.maxTokens, this.maxModelLen - req.promptIds.length);
    this.#running.set(seq, req.promptIds.length);
    this.#tokensProcessed += req.promptIds.length;
    try {
      for (let pos = 0;; pos++) {
        if (this.delayMs > 0) await sleep(this.delayMs, signal);
        if (signal?.aborted) return { reason: "abort", cachedTokens: 0 };
        if (pos >= limit) return { reason: "length", cachedTokens: 0 };
        const id = greedy ? (pos < script.length ? script[pos] : this.#eosId) : this.#draw(random);
        this.#tokensProcessed++;
        this.#lastBatch = this.#running.size;
        if (id === this.#eosId) return { reason: "eos", cachedTokens: 0 };
        if (stopIds.has(id)) return { reason: "stop", stopId: id, cachedTokens: 0 };
        this.#running.set(seq, req.promptIds.length + pos + 1);
        yield this.#token(id, pos, sampling.logprobs);
      }
    } finally {
      // Runs on normal end, abort, and an early return() by the consumer alike.
      this.#running.delete(seq);
    }
  }

  #draw(random: () => number): number {
    return this.#vocab[Math.floor(random() * this.#vocab.length)];
  }

  /** Made-up but consistent logprobs: the chosen id is the most likely; alternatives come from `vocab`. */
  #token(id: number, pos: number, logprobs: number | undefined): GeneratedToken {
    if (logprobs === undefined) return { id };
    const logprob = -hash01(id, pos) * 0.5;
    const top: TokenLogprob[] = [];
    if (logprobs > 0) {
      top.push({ id, logprob });
      // Distinct alternatives from `vocab`, strictly less likely than the chosen token.
      const pool = this.#vocab;
      const start = Math.floor(hash01(pos, id) * pool.length);
      for (let j = 0; j < pool.length && top.length < logprobs; j++) {
        const alt = pool[(start + j) % pool.length];
        if (top.some((t) => t.id === alt)) continue;
        top.push({ id: alt, logprob: logprob - top.length - hash01(alt, pos) * 0.5 });
      }
    }
    return { id, logprob, topLogprobs: top };
  }
}
