/**
 * A pool of Workers running the WASM kernels on the shared memory of a {@linkcode WasmKernels}.
 *
 * `parallelFor(kernel, args, rows)` splits `[0, rows)` into contiguous ranges, one per thread (the calling thread
 * takes the first), calls `kernel(...args, r0, r1)` on each and returns when all are done. Jobs are posted through
 * control words in a small SharedArrayBuffer: a generation counter wakes the workers (they spin briefly, then
 * `Atomics.wait`), a done counter wakes the caller. Kernels must write disjoint outputs per row range.
 *
 * @example
 * ```ts
 * import { WasmKernels } from "./module.ts";
 * import { ThreadPool } from "./threads.ts";
 * const k = await WasmKernels.load();
 * using pool = await ThreadPool.create(k, 2);
 * const a = k.alloc(4096), y = k.alloc(4096);
 * pool.parallelFor("add", [a, a, y], 1024);
 * ```
 *
 * @module
 */

import type { KernelName, WasmKernels } from "./module.ts";

/** Control-block layout (Int32 indices unless named _BYTE); counters sit on separate cache lines. */
export const CTL = {
  GEN: 0,
  DONE: 16,
  QUIT: 32,
  KERNEL: 33,
  NARGS: 34,
  ERR: 35,
  MSG_LEN: 36,
  RANGES: 64, // [r0, r1] per thread
  ARGS_BYTE: 1024,
  MAX_ARGS: 32,
  MSG_BYTE: 2048,
  BYTES: 4096,
} as const;

/** What a worker receives at start-up. */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctl: SharedArrayBuffer;
  index: number;
  workers: number;
  stackTop: number;
  names: string[];
  spin: number;
}

/** Options of {@linkcode ThreadPool.create}. */
export interface PoolOptions {
  /** Bytes of stack per worker (default 2 MiB, like the main thread's). */
  stackBytes?: number;
  /** Polls of the control word before a worker sleeps (default 1000, a few microseconds). */
  spin?: number;
  /** Polls of the done counter before the caller sleeps (default 1000). */
  joinSpin?: number;
}

/** Options of one {@linkcode ThreadPool.parallelFor} call. */
export interface ParallelOptions {
  /** Range boundaries fall on multiples of this (e.g. 8 for matmul panels); default 1. */
  align?: number;
  /** Fewest rows worth a thread of their own; smaller jobs use fewer threads (default 1). */
  minRows?: number;
}

/** Worker threads that share the kernels' memory. Dispose to terminate them. */
export class ThreadPool {
  /** Threads per job, the caller included. */
  readonly threads: number;
  readonly #k: WasmKernels;
  readonly #workers: Worker[];
  readonly #stacks: number[];
  readonly #ctl: Int32Array;
  readonly #args: Float64Array;
  readonly #ids: Map<string, number>;
  readonly #fns: ((...a: number[]) => unknown)[];
  #disposed = false;
  #joinSpin = 1000;

  private constructor(
    k: WasmKernels,
    threads: number,
    workers: Worker[],
    stacks: number[],
    ctl: SharedArrayBuffer,
    names: string[],
  ) {
    this.#k = k;
    this.threads = threads;
    this.#workers = workers;
    this.#stacks = stacks;
    this.#ctl = new Int32Array(ctl);
    this.#args = new Float64Array(ctl, CTL.ARGS_BYTE, CTL.MAX_ARGS);
    this.#ids = new Map(names.map((n, i) => [n, i]));
    const ex = k.exports as unknown as Record<string, (...a: number[]) => unknown>;
    this.#fns = names.map((n) => ex[n]);
  }

  /** Starts `threads − 1` workers (default: `navigator.hardwareConcurrency`). */
  static async create(k: WasmKernels, threads?: number, opts: PoolOptions = {}): Promise<ThreadPool> {
    const n = Math.max(1, Math.floor(threads ?? navigator.hardwareConcurrency ?? 1));
    const names = WebAssembly.Module.exports(k.module).filter((e) => e.kind === "function").map((e) => e.name);
    const ctl = new SharedArrayBuffer(CTL.BYTES);
    const stackBytes = opts.stackBytes ?? 2 * 2 ** 20;
    const workers: Worker[] = [], stacks: number[] = [], ready: Promise<void>[] = [];
    try {
      for (let i = 1; i < n; i++) {
        const stack = k.alloc(stackBytes);
        stacks.push(stack);
        const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
        workers.push(w);
        ready.push(
          new Promise<void>((resolve, reject) => {
            w.onmessage = () => resolve();
            w.onerror = (e) => {
              e.preventDefault();
              reject(new Error(`wasm kernel worker ${i} failed to start: ${e.message}`));
            };
          }),
        );
        const init: WorkerInit = {
          module: k.module,
          memory: k.memory,
          ctl,
          index: i,
          workers: n - 1,
          stackTop: stack + stackBytes,
          names,
          spin: opts.spin ?? 1000,
        };
        w.postMessage(init);
      }
      await Promise.all(ready);
    } catch (e) {
      for (const w of workers) w.terminate();
      for (const s of stacks) k.free(s);
      throw e;
    }
    for (const w of workers) w.onmessage = w.onerror = null;
    const pool = new ThreadPool(k, n, workers, stacks, ctl, names);
    pool.#joinSpin = opts.joinSpin ?? 1000;
    return pool;
  }

  /**
   * Runs `kernel(...args, r0, r1)` over `[0, rows)` split across the threads and waits for all of them.
   * Throws if the kernel trapped on any thread.
   */
  parallelFor(kernel: KernelName, args: readonly number[], rows: number, opts: ParallelOptions = {}): void {
    if (this.#disposed) throw new Error("ThreadPool is disposed");
    const id = this.#ids.get(kernel);
    if (id === undefined) throw new Error(`unknown kernel ${kernel}`);
    if (args.length > CTL.MAX_ARGS) throw new Error(`too many kernel arguments (${args.length})`);
    if (rows <= 0) return;
    const alignTo = Math.max(1, opts.align ?? 1);
    const units = Math.ceil(rows / alignTo);
    const perThread = Math.max(1, Math.ceil((opts.minRows ?? 1) / alignTo));
    const used = Math.max(1, Math.min(this.threads, Math.floor(units / perThread)));
    const fn = this.#fns[id];
    if (used === 1) {
      fn(...args, 0, rows);
      return;
    }
    const ctl = this.#ctl;
    const bound = (t: number) => Math.min(rows, Math.floor((t * units) / used) * alignTo);
    for (let t = 1; t < this.threads; t++) {
      ctl[CTL.RANGES + 2 * t] = t < used ? bound(t) : 0;
      ctl[CTL.RANGES + 2 * t + 1] = t < used ? bound(t + 1) : 0;
    }
    for (let i = 0; i < args.length; i++) this.#args[i] = args[i];
    ctl[CTL.KERNEL] = id;
    ctl[CTL.NARGS] = args.length;
    Atomics.store(ctl, CTL.ERR, 0);
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.add(ctl, CTL.GEN, 1);
    Atomics.notify(ctl, CTL.GEN);
    try {
      fn(...args, 0, bound(1));
    } finally {
      this.#join();
    }
    const err = Atomics.load(ctl, CTL.ERR);
    if (err !== 0) {
      const msg = new TextDecoder().decode(new Uint8Array(ctl.buffer, CTL.MSG_BYTE, ctl[CTL.MSG_LEN]).slice());
      throw new Error(`kernel ${kernel} failed on worker ${err}: ${msg}`);
    }
  }

  #join(): void {
    const ctl = this.#ctl, want = this.threads - 1;
    let d = Atomics.load(ctl, CTL.DONE);
    for (let i = 0; i < this.#joinSpin && d !== want; i++) d = Atomics.load(ctl, CTL.DONE);
    while (d !== want) {
      Atomics.wait(ctl, CTL.DONE, d, 1000);
      d = Atomics.load(ctl, CTL.DONE);
    }
  }

  /** Stops and terminates the workers and frees their stacks. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    Atomics.store(this.#ctl, CTL.QUIT, 1);
    Atomics.add(this.#ctl, CTL.GEN, 1);
    Atomics.notify(this.#ctl, CTL.GEN);
    for (const w of this.#workers) w.terminate();
    for (const s of this.#stacks) this.#k.free(s);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
