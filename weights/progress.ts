/**
 * A one-line progress reporter for weight loading: bytes done / total, tensors, MB/s, on stderr. Silent when stderr
 * is not a terminal (logs and CI stay clean) or when `quiet`.
 *
 * @module
 */

/** Options of {@link LoadProgress}. */
export interface ProgressOptions {
  /** Total bytes expected. */
  totalBytes: number;
  /** Total tensors expected. */
  totalTensors: number;
  /** Line prefix. Default "loading weights". */
  label?: string;
  /** Print nothing. */
  quiet?: boolean;
  /** Where lines go. Default stderr; a custom sink is treated as a terminal unless `isTerminal` says otherwise. */
  write?: (text: string) => void;
  /** Override terminal detection (tests). */
  isTerminal?: boolean;
  /** Least milliseconds between redraws. Default 200. */
  intervalMs?: number;
  /** Clock in milliseconds (tests). Default `performance.now`. */
  now?: () => number;
}

const encoder = new TextEncoder();

function stderrWrite(text: string): void {
  Deno.stderr.writeSync(encoder.encode(text));
}

function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(bytes < 1e10 ? 2 : 1);
}

/**
 * Counts loaded tensors and redraws one status line at most every `intervalMs`.
 *
 * @example
 * ```ts
 * const p = new LoadProgress({ totalBytes: reader.totalBytes, totalTensors: reader.tensors.length });
 * for (const t of reader.tensors) { await reader.read(t.name); p.add(t.byteLength); }
 * p.done();
 * ```
 */
export class LoadProgress {
  /** Bytes loaded so far. */
  bytesDone = 0;
  /** Tensors loaded so far. */
  tensorsDone = 0;
  readonly #opts: ProgressOptions;
  readonly #write?: (text: string) => void;
  readonly #now: () => number;
  readonly #start: number;
  #lastDraw = -Infinity;

  /** Starts the clock; draws nothing until the first {@link add}. */
  constructor(options: ProgressOptions) {
    this.#opts = options;
    this.#now = options.now ?? (() => performance.now());
    this.#start = this.#now();
    const terminal = options.isTerminal ??
      (options.write ? true : typeof Deno !== "undefined" && Deno.stderr.isTerminal()); // no stderr in a browser
    if (!options.quiet && terminal) this.#write = options.write ?? stderrWrite;
  }

  /** True when this reporter prints. */
  get enabled(): boolean {
    return this.#write !== undefined;
  }

  /** Seconds since construction. */
  get elapsed(): number {
    return (this.#now() - this.#start) / 1000;
  }

  /** Mean throughput so far in MB/s (10^6 bytes). */
  get mbPerSecond(): number {
    const s = this.elapsed;
    return s > 0 ? this.bytesDone / 1e6 / s : 0;
  }

  /** Records one more tensor of `bytes` and redraws when due. */
  add(bytes: number): void {
    this.bytesDone += bytes;
    this.tensorsDone++;
    if (!this.#write) return;
    const t = this.#now();
    if (t - this.#lastDraw < (this.#opts.intervalMs ?? 200)) return;
    this.#lastDraw = t;
    this.#write(`\r\x1b[K${this.line()}`);
  }

  /** The status line, e.g. `loading weights 12.50/119.0 GB (10%) 1234/13900 tensors 2345 MB/s`. */
  line(): string {
    const { totalBytes, totalTensors, label = "loading weights" } = this.#opts;
    const pct = totalBytes > 0 ? Math.floor((100 * this.bytesDone) / totalBytes) : 100;
    return `${label} ${gb(this.bytesDone)}/${gb(totalBytes)} GB (${pct}%) ` +
      `${this.tensorsDone}/${totalTensors} tensors ${Math.round(this.mbPerSecond)} MB/s`;
  }

  /** Draws the final line and ends it with a newline. */
  done(): void {
    if (!this.#write) return;
    this.#write(`\r\x1b[K${this.line()} in ${this.elapsed.toFixed(1)} s\n`);
  }
}
