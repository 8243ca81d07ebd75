/**
 * The consumer side of one sequence: a {@link Generation} fed by the engine loop. Written by hand rather than as
 * an `async function*` so that `return()` cancels at once, even before the first `next()` or while a `next()` is
 * pending (a native generator would queue it behind that `next()`, or skip its cleanup entirely when unstarted).
 *
 * @module
 */

import type { GeneratedToken, GenerationEnd } from "./types.ts";

/** Backpressure settings of a {@link TokenStream}. */
export interface TokenStreamBackpressure {
  /** Unread tokens at which the stream reads as {@link TokenStream.full}: the producer should stop pushing. */
  limit: number;
  /** Called when a read takes a full stream below `limit`: the producer may push again. */
  onDrain: () => void;
}

/**
 * Tokens flow in through {@link TokenStream.push}, and the stream ends through {@link TokenStream.finish} or
 * {@link TokenStream.fail}. The consumer ends it early by `return()`, `throw()` or the request's abort signal; each
 * calls `onCancel` once, so the engine can free the sequence's slot and cache blocks. With `backpressure`, a stream
 * whose reader falls `limit` tokens behind reads as {@link TokenStream.full} (the engine then pauses the sequence
 * rather than buffer its whole generation) until a read drains it.
 *
 * @example
 * ```ts
 * const stream = new TokenStream(() => console.log("cancelled"));
 * stream.push({ id: 7 });
 * stream.finish({ reason: "eos", cachedTokens: 0 });
 * for await (const t of stream) console.log(t.id); // 7
 * ```
 */
export class TokenStream implements AsyncGenerator<GeneratedToken, GenerationEnd, undefined> {
  /** Prompt tokens served from the prefix cache, reported in the end value (set by the engine on admission). */
  cachedTokens = 0;
  #items: GeneratedToken[] = [];
  #head = 0;
  #end: GenerationEnd | null = null;
  #error: { error: unknown } | null = null;
  #waiters: (() => void)[] = [];
  #onCancel: (() => void) | null;
  readonly #signal?: AbortSignal;
  readonly #backpressure?: TokenStreamBackpressure;
  readonly #onAbort = () => this.#cancel();

  /** A stream that calls `onCancel` if the consumer or `signal` ends it before the engine does. */
  constructor(onCancel: () => void, signal?: AbortSignal, backpressure?: TokenStreamBackpressure) {
    this.#onCancel = onCancel;
    this.#signal = signal;
    this.#backpressure = backpressure;
    if (signal?.aborted) this.#cancel();
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** True once the stream has an end or an error: nothing more will be pushed. */
  get closed(): boolean {
    return this.#end !== null || this.#error !== null;
  }

  /** Tokens pushed and not read yet. */
  get buffered(): number {
    return this.#items.length - this.#head;
  }

  /** True while the reader is `backpressure.limit` tokens behind (never without backpressure, or once closed). */
  get full(): boolean {
    return this.#backpressure !== undefined && !this.closed && this.buffered >= this.#backpressure.limit;
  }

  /** Producer: delivers one token. */
  push(token: GeneratedToken): void {
    if (this.closed) return;
    this.#items.push(token);
    this.#wake();
  }

  /** Producer: ends the stream after the tokens already pushed. */
  finish(end: Omit<GenerationEnd, "cachedTokens">): void {
    if (this.closed) return;
    this.#end = { ...end, cachedTokens: this.cachedTokens };
    this.#settle();
  }

  /** Producer: ends the stream with an error, which the next `next()` rejects with (buffered tokens first). */
  fail(error: unknown): void {
    if (this.closed) return;
    this.#error = { error };
    this.#settle();
  }

  /** The next token, or the end (`done`). */
  async next(): Promise<IteratorResult<GeneratedToken, GenerationEnd>> {
    for (;;) {
      if (this.#head < this.#items.length) {
        const wasFull = this.full;
        const value = this.#items[this.#head++];
        if (this.#head === this.#items.length) this.#items.length = this.#head = 0;
        if (wasFull) this.#backpressure!.onDrain();
        return { done: false, value };
      }
      if (this.#error) {
        const { error } = this.#error;
        // Reported once; afterwards the stream reads as ended.
        this.#error = null;
        this.#end = { reason: "abort", cachedTokens: this.cachedTokens };
        throw error;
      }
      if (this.#end) return { done: true, value: this.#end };
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Ends the stream early (like an abort); the engine frees the sequence now. */
  async return(
    value?: GenerationEnd | PromiseLike<GenerationEnd>,
  ): Promise<IteratorResult<GeneratedToken, GenerationEnd>> {
    this.#cancel();
    const given = await value;
    return { done: true, value: given ?? this.#end! };
  }

  /** Ends the stream early and rejects with `error`, as a generator that does not catch it would. */
  throw(error?: unknown): Promise<IteratorResult<GeneratedToken, GenerationEnd>> {
    this.#cancel();
    return Promise.reject(error);
  }

  /** The stream is its own iterator. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  /** `await using` support: ends the stream early. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }

  /** Consumer-side end: drop what is buffered (an unreported error too) and end with `"abort"`, unless ended. */
  #cancel(): void {
    if (this.#end === null) {
      this.#items.length = this.#head = 0;
      this.#error = null;
      this.#end = { reason: "abort", cachedTokens: this.cachedTokens };
    }
    const onCancel = this.#onCancel;
    this.#settle();
    onCancel?.();
  }

  /** The stream is closed: stop listening for the abort, forget the engine callback, wake readers. */
  #settle(): void {
    this.#onCancel = null;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}
