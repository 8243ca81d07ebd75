/**
 * Per-kernel GPU timings of the `webgpu` backend through timestamp queries (the `timestamp-query` feature), for
 * benchmarks: with the factory's `profile` option, every dispatch of a run gets a compute pass of its own whose
 * beginning and end the GPU stamps; the stamps are resolved into a buffer at the end of the run and read when
 * {@link KernelProfiler.collect} is called (an extra read-back per run: profiling only, never in serving).
 *
 * A kernel is named by its WGSL's first line when that is a `// name` comment (matmul and split-MLA kernels),
 * else by the op of the node that dispatched it.
 *
 * @module
 */

/** What one kernel took over the runs collected: dispatches, nanoseconds, bytes bound (an upper bound on traffic). */
export type KernelTime = { dispatches: number; ns: number; boundBytes: number };

/** One run's stamps on their way back. */
type Pending = { staging: GPUBuffer; names: string[]; bytes: number[] };

/** Timestamp queries around each dispatch (see the module docs). */
export class KernelProfiler {
  readonly #device: GPUDevice;
  #querySet: GPUQuerySet | undefined;
  #resolve: GPUBuffer | undefined;
  #capacity = 0;
  #pending: Pending[] = [];
  #names: string[] = [];
  #bytes: number[] = [];
  readonly #times = new Map<string, KernelTime>();

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** The kernel name for `wgsl` dispatched by a node of `op`. */
  static nameOf(wgsl: string, op: string): string {
    const first = /^(?:enable f16;\n)?\/\/ ([^\n]+)/.exec(wgsl);
    return first ? first[1] : op;
  }

  /** Starts a run of `n` dispatches (query slots grow to fit). */
  begin(n: number): void {
    if (n > this.#capacity) {
      this.#querySet?.destroy();
      this.#resolve?.destroy();
      this.#capacity = Math.max(n, 2 * this.#capacity);
      this.#querySet = this.#device.createQuerySet({ type: "timestamp", count: 2 * this.#capacity });
      this.#resolve = this.#device.createBuffer({
        size: 16 * this.#capacity,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
    }
    this.#names = [];
    this.#bytes = [];
  }

  /** The timestamp writes of the next dispatch, named `name`, binding `bytes`. */
  pass(name: string, bytes: number): GPUComputePassDescriptor {
    const i = this.#names.length;
    this.#names.push(name);
    this.#bytes.push(bytes);
    return {
      timestampWrites: { querySet: this.#querySet!, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    };
  }

  /** Ends the run: its stamps are resolved and copied for reading, on `encoder`. */
  end(encoder: GPUCommandEncoder): void {
    const n = this.#names.length;
    if (!n) return;
    const staging = this.#device.createBuffer({
      size: 16 * n,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.resolveQuerySet(this.#querySet!, 0, 2 * n, this.#resolve!, 0);
    encoder.copyBufferToBuffer(this.#resolve!, 0, staging, 0, 16 * n);
    this.#pending.push({ staging, names: this.#names, bytes: this.#bytes });
  }

  /** Reads the stamps of the runs submitted so far and returns the totals since the last `reset`, by kernel. */
  async collect(): Promise<Map<string, KernelTime>> {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      await p.staging.mapAsync(GPUMapMode.READ);
      const stamps = new BigUint64Array(p.staging.getMappedRange().slice(0));
      p.staging.unmap();
      p.staging.destroy();
      p.names.forEach((name, i) => {
        const t = this.#times.get(name) ?? { dispatches: 0, ns: 0, boundBytes: 0 };
        t.dispatches++;
        // A driver may stamp an end before its beginning when the pass was empty: count 0.
        t.ns += Math.max(0, Number(stamps[2 * i + 1] - stamps[2 * i]));
        t.boundBytes += p.bytes[i];
        this.#times.set(name, t);
      });
    }
    return new Map(this.#times);
  }

  /** Forgets the totals (after a warm-up). */
  reset(): void {
    this.#times.clear();
  }

  dispose(): void {
    this.#querySet?.destroy();
    this.#resolve?.destroy();
  }
}
