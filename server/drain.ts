/**
 * A server's requests in flight and its shutdown: once {@link Drain.shutdown} starts, the server refuses new work,
 * running requests get a grace period to finish, and those still running after it are cancelled (their generations
 * end with finish reason `abort`, streams with their last chunk and `[DONE]`).
 *
 * @module
 */

/** Time running requests get to finish when the server shuts down (`--shutdown-grace`), in milliseconds. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/**
 * Once the grace is over and the requests are cancelled, how long they get to end (a stream's last chunk, a
 * generation's abort) before the shutdown stops waiting for them.
 */
export const CANCEL_FLUSH_MS = 1_000;

/** What {@link Drain.shutdown} reports, for the server's log. */
export interface DrainHooks {
  /** The shutdown started with `running` requests in flight. */
  onStart?(running: number): void;
  /** The grace ran out with `running` requests still in flight; they are being cancelled. */
  onCancel?(running: number): void;
}

/**
 * Tracks the requests in flight. Each gets an `AbortController` from {@link Drain.begin}; the shutdown aborts those
 * still running when its grace runs out.
 *
 * @example
 * ```ts
 * const drain = new Drain();
 * const request = drain.begin();
 * // … serve it, stopping when request.signal aborts …
 * drain.end(request);
 * await drain.shutdown(10_000); // resolves at once: nothing is running
 * ```
 */
export class Drain {
  readonly #running = new Set<AbortController>();
  /** Called when the last request in flight ends. */
  readonly #idleWaiters = new Set<() => void>();
  readonly #stopping = new AbortController();
  #shutdown: Promise<void> | undefined;

  /** Aborts when the shutdown starts (Deno.serve's graceful shutdown ends request bodies still uploading then). */
  get stopping(): AbortSignal {
    return this.#stopping.signal;
  }

  /** True once {@link Drain.shutdown} has been called: new work is refused. */
  get draining(): boolean {
    return this.#shutdown !== undefined;
  }

  /** Requests in flight. */
  get running(): number {
    return this.#running.size;
  }

  /** A request starts; its controller aborts if the shutdown's grace runs out before {@link Drain.end}. */
  begin(): AbortController {
    const controller = new AbortController();
    this.#running.add(controller);
    return controller;
  }

  /** A request is over (its response sent, or its stream ended). */
  end(controller: AbortController): void {
    if (!this.#running.delete(controller) || this.#running.size > 0) return;
    for (const wake of this.#idleWaiters) wake();
    this.#idleWaiters.clear();
  }

  /**
   * Starts the shutdown (later calls return the same promise): waits up to `graceMs` for the requests in flight,
   * then aborts those still running and waits up to {@link CANCEL_FLUSH_MS} for them to end. Resolves then, ended
   * or not.
   */
  shutdown(graceMs: number = DEFAULT_SHUTDOWN_GRACE_MS, hooks: DrainHooks = {}): Promise<void> {
    if (!(graceMs >= 0 && graceMs <= 2 ** 31 - 1)) {
      throw new RangeError(`shutdown: graceMs must be from 0 to ${2 ** 31 - 1} ms, got ${graceMs}`);
    }
    return this.#shutdown ??= this.#run(graceMs, hooks);
  }

  async #run(graceMs: number, hooks: DrainHooks): Promise<void> {
    this.#stopping.abort();
    hooks.onStart?.(this.#running.size);
    if (await this.#idleWithin(graceMs)) return;
    hooks.onCancel?.(this.#running.size);
    for (const controller of this.#running) controller.abort();
    await this.#idleWithin(CANCEL_FLUSH_MS);
  }

  /** True once no request is in flight, false if `ms` pass first. */
  #idleWithin(ms: number): Promise<boolean> {
    if (this.#running.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#idleWaiters.delete(wake);
        resolve(false);
      }, ms);
      this.#idleWaiters.add(wake);
    });
  }
}
