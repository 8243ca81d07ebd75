/**
 * A pool of Workers running the WASM kernels on the shared memory of a {@linkcode WasmKernels}.
 *
 * `parallelFor(kernel, args, rows)` splits `[0, rows)` into contiguous ranges, one per thread (the calling thread
 * takes the first), calls `kernel(...args, r0, r1)` on each and returns when all are done. Jobs are posted through
 * control words in a small SharedArrayBuffer: a generation counter wakes the workers, a done counter wakes the
 * caller. Both sides spin for a while before they `Atomics.wait` (workers `spinMicros` after their last job, the
 * caller `joinSpinMicros`): decode posts a job every few tens of microseconds with single-threaded work between,
 * and waking a sleeping thread costs tens of microseconds on a quiet machine and up to a scheduler tick on a busy
 * one. Kernels must write disjoint outputs per row range.
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

import { type KernelName, type WasmKernels, wasmWorkerUrl } from "./module.ts";
import type { FuncSig } from "./signatures.ts";
import { wasmProfile } from "./profile.ts";

/** Control-block layout (Int32 indices unless named _BYTE); counters sit on separate cache lines. */
export const CTL = {
  GEN: 0,
  DONE: 16,
  QUIT: 32,
  KERNEL: 33,
  NARGS: 34,
  ERR: 35,
  MSG_LEN: 36,
  // Dynamic jobs: pieces (0: static ranges), rows, units (rows / align, rounded up), align; NEXT: next piece.
  CHUNKS: 37,
  ROWS: 38,
  UNITS: 39,
  ALIGN: 40,
  SPIN_US: 41, // microseconds a worker polls after a job before it sleeps
  NEXT: 48,
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
  /** Signatures of the exports (the wasm64 build takes pointers as i64: the worker converts those arguments). */
  signatures: Map<string, FuncSig>;
}

/** Options of {@linkcode ThreadPool.create}. */
export interface PoolOptions {
  /** Bytes of stack per worker (default 2 MiB, like the main thread's). */
  stackBytes?: number;
  /**
   * Microseconds a worker polls for the next job after its last one before it sleeps (default 20). Longer spins
   * save wake-ups on a quiet machine but steal the core from the caller when other processes leave only one.
   */
  spinMicros?: number;
  /** Microseconds the caller polls for the workers to finish a job before it sleeps (default 20). */
  joinSpinMicros?: number;
}

/** Options of one {@linkcode ThreadPool.parallelFor} call. */
export interface ParallelOptions {
  /** Range boundaries fall on multiples of this (e.g. 8 for matmul panels); default 1. */
  align?: number;
  /** Fewest rows worth a thread of their own; smaller jobs use fewer threads (default 1). */
  minRows?: number;
  /**
   * Split into this many pieces (fewer if `minRows` asks), which the threads take in turn as they finish, so a
   * thread that was descheduled or given slower rows does not hold the others up. Default: one contiguous range
   * per thread. Kernels whose results depend on the split must not use it.
   */
  chunks?: number;
}

/** Start of piece `c` of `pieces` over `units` aligned units of `rows` rows. */
export function pieceBound(c: number, pieces: number, units: number, align: number, rows: number): number {
  return Math.min(rows, Math.floor((c * units) / pieces) * align);
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
  #joinSpinMs = 0.02;

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
        const w = new Worker(wasmWorkerUrl(), { type: "module" });
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
          signatures: new Map(k.signatures),
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
    pool.spinMicros = opts.spinMicros ?? 20;
    pool.joinSpinMicros = opts.joinSpinMicros ?? 20;
    return pool;
  }

  /** Microseconds a worker polls for the next job after its last one before it sleeps (takes effect at once). */
  get spinMicros(): number {
    return Atomics.load(this.#ctl, CTL.SPIN_US);
  }
  set spinMicros(us: number) {
    Atomics.store(this.#ctl, CTL.SPIN_US, Math.max(0, Math.round(us)));
  }

  /** Microseconds the caller polls for the workers to finish a job before it sleeps. */
  get joinSpinMicros(): number {
    return this.#joinSpinMs * 1000;
  }
  set joinSpinMicros(us: number) {
    this.#joinSpinMs = Math.max(0, us) / 1000;
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
    if (wasmProfile.enabled) wasmProfile.jobs++;
    const ctl = this.#ctl;
    const pieces = Math.min(Math.floor(units / perThread), Math.floor(opts.chunks ?? 0));
    const dynamic = pieces > used;
    const bound = (t: number) => pieceBound(t, used, units, alignTo, rows);
    for (let t = 1; t < this.threads; t++) {
      ctl[CTL.RANGES + 2 * t] = t < used ? bound(t) : 0;
      ctl[CTL.RANGES + 2 * t + 1] = t < used ? bound(t + 1) : 0;
    }
    for (let i = 0; i < args.length; i++) this.#args[i] = args[i];
    ctl[CTL.KERNEL] = id;
    ctl[CTL.NARGS] = args.length;
    ctl[CTL.CHUNKS] = dynamic ? pieces : 0;
    ctl[CTL.ROWS] = rows;
    ctl[CTL.UNITS] = units;
    ctl[CTL.ALIGN] = alignTo;
    Atomics.store(ctl, CTL.NEXT, 0);
    Atomics.store(ctl, CTL.ERR, 0);
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.add(ctl, CTL.GEN, 1);
    Atomics.notify(ctl, CTL.GEN);
    try {
      if (!dynamic) fn(...args, 0, bound(1));
      else {
        for (let c = Atomics.add(ctl, CTL.NEXT, 1); c < pieces; c = Atomics.add(ctl, CTL.NEXT, 1)) {
          fn(...args, pieceBound(c, pieces, units, alignTo, rows), pieceBound(c + 1, pieces, units, alignTo, rows));
        }
      }
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
    if (d !== want) {
      // Poll (reading the clock every 64 polls) until the workers are done or the spin time is spent.
      const end = performance.now() + this.#joinSpinMs;
      for (let i = 1; d !== want; i++) {
        d = Atomics.load(ctl, CTL.DONE);
        if ((i & 63) === 0 && performance.now() > end) break;
      }
    }
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
