/**
 * The `wasm` backend: the CPU backend, running segments with the WASM SIMD kernels (kernels/wasm) on one shared
 * `WebAssembly.Memory` and a pool of worker threads.
 *
 * - Memory: every buffer is an allocation in the wasm memory (wasm32: 4 GiB at most, shared by weights, caches,
 *   activations and scratch). `write` and `read` are memcpy; runs are synchronous, so `sync` has nothing to wait
 *   for. A model that does not fit is refused by the scheduler, or by `alloc`, with what to change (`--dtype`).
 * - Dtypes: activations f32, ids i32, caches f32 or bf16; weights f32, bf16, f8e4m3 and q8 natively (f16 and
 *   nvfp4 weights are stored as f32). Quantised weights carry their scales in their buffer: see
 *   {@link wasmWeightLayout}, the `caps.weightLayout` the loader encodes weights with.
 * - Execution: `prepare` compiles a segment's nodes into steps (runtime/backends/wasm/ops.ts) with kernels,
 *   dtype codes and tables resolved and temporary memory sized at the largest shapes; `run` binds pointers and
 *   symbol values and runs the steps, each splitting rows across the threads (matmul over output features,
 *   attention over token blocks × head groups, MoE over expert × column chunks, elementwise over elements).
 *
 * @example
 * ```ts
 * import { wasmBackend } from "./backend.ts";
 * if (await wasmBackend.probe() > 0) {
 *   const backend = await wasmBackend.create({ threads: 4 });
 *   const buf = backend.alloc(16);
 *   backend.write(buf, 0, new Float32Array([1, 2, 3, 4]));
 *   new Float32Array((await backend.read(buf, 0, 16)).buffer); // [1, 2, 3, 4]
 *   backend.dispose();
 * }
 * ```
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { type Node, type TensorInfo, tensorTable, type Vars } from "../../../graph/ir.ts";
import {
  type Backend,
  type BackendCaps,
  type BackendFactory,
  type BackendOptions,
  type Bindings,
  type BufferHandle,
  canStore,
  type Prepared,
  type Segment,
  storageBytes,
  storageDType,
  weightBytes,
} from "../../backend.ts";
import { warmup, WasmKernels } from "./module.ts";
import { compileNode, type RunState, type Step, supportsNode, wasmWeightLayout } from "./ops.ts";
import { profileKey, wasmProfile } from "./profile.ts";
import { ThreadPool } from "./threads.ts";

export { wasmWeightLayout } from "./ops.ts";

const GIB = 2 ** 30;
const MAX_MEMORY = 4 * GIB; // wasm32
// Kept out of `memoryBytes` for what `prepare` allocates after the plan's buffers (attention and MoE scratch).
const SCRATCH_RESERVE = 256 * 2 ** 20;

const DTYPES: readonly DType[] = ["f32", "bf16", "f8e4m3", "q8", "i32"];

type WasmPrepared = Prepared & {
  steps: Step[];
  nodes: Node[];
  /** Profile key of each step (see profile.ts). */
  keys: string[];
  table: TensorInfo[];
  /** Scratch of node results left unbound (allocated on first use). */
  scratch: Map<number, number>;
  /** Pointers by tensor id for `lastBindings` (recomputed when a run brings other bindings). */
  ptr: Float64Array;
  lastBindings?: Bindings;
};

class WasmBackend implements Backend {
  readonly name = "wasm";
  readonly caps: BackendCaps;
  readonly #k: WasmKernels;
  readonly #pool: ThreadPool;
  #buffers = new Map<number, number>(); // buffer id → address
  #nextId = 1;
  #persistent: number[] = [];
  #temp = 0;
  #tempBytes = 0;
  #disposed = false;

  constructor(k: WasmKernels, pool: ThreadPool, limit: number) {
    this.#k = k;
    this.#pool = pool;
    this.caps = {
      alignment: 64,
      dtypes: DTYPES,
      promote: { f16: "f32", nvfp4: "f32" },
      memoryBytes: Math.max(0, limit - k.byteLength - Math.min(SCRATCH_RESERVE, limit / 8)),
      hostMemory: true,
      weightLayout: wasmWeightLayout,
    };
  }

  /** Threads each step splits its rows across (the caller included). */
  get threads(): number {
    return this.#pool.threads;
  }

  /** Scratch memory of the prepared segments (the largest any kernel asked for), outside the plan's buffers. */
  get scratchBytes(): number {
    return this.#tempBytes;
  }

  /** The kernels instance (benchmarks switch its q8 prefill path). */
  get kernels(): WasmKernels {
    return this.#k;
  }

  /** The thread pool (benchmarks tune its spin times). */
  get pool(): ThreadPool {
    return this.#pool;
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    if (!canStore(this.caps, node.dtype) || !inputs.every((t) => canStore(this.caps, t.dtype))) return false;
    const stored = inputs.map((t) => storageDType(this.caps, t.dtype));
    return supportsNode(node, stored, inputs.map((t) => t.kind));
  }

  alloc(bytes: number): BufferHandle {
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const ptr = this.#alloc(bytes);
    const id = this.#nextId++;
    this.#buffers.set(id, ptr);
    return { backend: this.name, id, bytes };
  }

  free(buffer: BufferHandle): void {
    const ptr = this.#buffers.get(buffer.id);
    if (ptr === undefined || buffer.backend !== this.name) return;
    this.#buffers.delete(buffer.id);
    this.#k.free(ptr);
  }

  write(buffer: BufferHandle, offset: number, data: ArrayBufferView): void {
    const ptr = this.#address(buffer);
    if (offset < 0 || offset + data.byteLength > buffer.bytes) {
      throw new RangeError(`write of ${data.byteLength} B at ${offset} overflows buffer of ${buffer.bytes} B`);
    }
    this.#k.u8(ptr + offset, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  read(buffer: BufferHandle, offset: number, bytes: number): Promise<Uint8Array> {
    try {
      const ptr = this.#address(buffer);
      if (offset < 0 || offset + bytes > buffer.bytes) {
        throw new RangeError(`read of ${bytes} B at ${offset} overflows buffer of ${buffer.bytes} B`);
      }
      return Promise.resolve(this.#k.u8(ptr + offset, bytes).slice());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  prepare(segment: Segment): Promise<Prepared> {
    try {
      const table = tensorTable(segment.graph);
      const byId = new Map(segment.graph.nodes.map((n) => [n.id, n]));
      let tempBytes = 0;
      const ctx = {
        k: this.#k,
        pool: this.#pool,
        table,
        stored: (id: number) => storageDType(this.caps, table[id].dtype),
        persist: (bytes: number) => {
          const ptr = this.#alloc(bytes);
          this.#persistent.push(ptr);
          return ptr;
        },
        temp: (bytes: number) => void (tempBytes = Math.max(tempBytes, bytes)),
      };
      const nodes: Node[] = [], steps: Step[] = [];
      for (const id of segment.nodes) {
        const n = byId.get(id);
        if (!n) throw new Error(`segment node ${id} is not in the graph`);
        if (!this.supports(n, n.inputs.map((i) => table[i]))) {
          const dts = n.inputs.map((i) => table[i].dtype).join(", ");
          throw new Error(`wasm: cannot run ${n.op} "${n.name}" (inputs ${dts})`);
        }
        tempBytes = 0;
        steps.push(compileNode(ctx, n));
        nodes.push(n);
        this.#growTemp(tempBytes);
      }
      const keys = nodes.map((n) =>
        profileKey(n.op, n.name, n.op === "matmul" ? storageDType(this.caps, table[n.inputs[1]].dtype) : undefined)
      );
      const prepared: WasmPrepared = {
        segment,
        steps,
        nodes,
        keys,
        table,
        scratch: new Map(),
        ptr: new Float64Array(table.length),
      };
      return Promise.resolve(prepared);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  run(prepared: Prepared, bindings: Bindings, vars: Vars): void {
    const p = prepared as WasmPrepared;
    if (p.lastBindings !== bindings) {
      this.#bind(p, bindings);
      p.lastBindings = bindings;
    }
    const state: RunState = { ptr: p.ptr, vars, temp: this.#temp };
    if (wasmProfile.enabled) return this.#runProfiled(p, state);
    for (let i = 0; i < p.steps.length; i++) runStep(p, i, state);
  }

  /** `run` with every step timed into {@link wasmProfile}. */
  #runProfiled(p: WasmPrepared, state: RunState): void {
    const start = performance.now();
    let t = start;
    for (let i = 0; i < p.steps.length; i++) {
      const jobs = wasmProfile.jobs;
      runStep(p, i, state);
      const now = performance.now();
      wasmProfile.record(p.keys[i], now - t, wasmProfile.jobs - jobs);
      t = now;
    }
    wasmProfile.runMs += performance.now() - start;
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#pool.dispose();
    for (const ptr of this.#buffers.values()) this.#k.free(ptr);
    for (const ptr of this.#persistent) this.#k.free(ptr);
    if (this.#temp) this.#k.free(this.#temp);
    this.#buffers.clear();
    this.#persistent = [];
    this.#temp = this.#tempBytes = 0;
  }

  /** Resolves every tensor the segment touches to an address, checking that bound views fit their buffers. */
  #bind(p: WasmPrepared, bindings: Bindings): void {
    const { segment, table } = p;
    for (const id of [...segment.inputs, ...segment.outputs]) {
      if (!bindings.has(id)) throw new Error(`run: tensor ${id} "${table[id].name}" is not bound`);
    }
    const ids = new Set([...segment.inputs, ...p.nodes.map((n) => n.id)]);
    for (const id of ids) {
      const t = table[id], view = bindings.get(id);
      const bytes = t.kind === "weight"
        ? weightBytes(this.caps, t.shape, t.dtype)
        : storageBytes(this.caps, t.shape, t.dtype);
      if (!view) {
        // An intermediate the caller left to us: scratch of its own, sized at the largest shape.
        let ptr = p.scratch.get(id);
        if (ptr === undefined) {
          ptr = this.#alloc(bytes);
          this.#persistent.push(ptr);
          p.scratch.set(id, ptr);
        }
        p.ptr[id] = ptr;
        continue;
      }
      if (view.offset < 0 || view.offset + bytes > view.buffer.bytes) {
        throw new RangeError(`tensor ${id} "${t.name}" (${bytes} B at ${view.offset}) does not fit its buffer`);
      }
      p.ptr[id] = this.#address(view.buffer) + view.offset;
    }
  }

  /** Temp memory is shared by every step of every segment (runs never overlap); it only grows, at prepare. */
  #growTemp(bytes: number): void {
    if (bytes <= this.#tempBytes) return;
    if (this.#temp) this.#k.free(this.#temp);
    this.#temp = 0;
    this.#temp = this.#alloc(bytes);
    this.#tempBytes = bytes;
  }

  #alloc(bytes: number): number {
    try {
      return this.#k.alloc(bytes);
    } catch (e) {
      const used = (this.#k.allocatedBytes / GIB).toFixed(2);
      throw new RangeError(
        `wasm: cannot allocate ${bytes} B: the wasm32 memory holds at most 4 GiB and ${used} GiB are in use. ` +
          `Load the model with a smaller --dtype (bf16: 2 B per weight, q8 or f8e4m3: about 1 B), fewer or ` +
          `shorter sequences, or on a backend with more memory`,
        { cause: e },
      );
    }
  }

  #address(buffer: BufferHandle): number {
    const ptr = buffer.backend === this.name ? this.#buffers.get(buffer.id) : undefined;
    if (ptr === undefined) throw new Error(`buffer ${buffer.backend}:${buffer.id} is not a live wasm buffer`);
    return ptr;
  }
}

let probed: Promise<number> | undefined;

/** Compiles the kernels and checks shared memory and workers once; throws the reason when something is missing. */
function probe(): Promise<number> {
  probed ??= (async () => {
    if (typeof SharedArrayBuffer !== "function") throw new Error("no SharedArrayBuffer (needed by wasm threads)");
    if (typeof Worker !== "function") throw new Error("no Web Workers (needed by wasm threads)");
    try {
      new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    } catch (e) {
      throw new Error(`no shared WebAssembly memory: ${(e as Error).message}`);
    }
    try {
      await WasmKernels.load({ maxBytes: 8 * 2 ** 20 });
    } catch (e) {
      throw new Error(
        `the WASM SIMD kernels do not compile here (SIMD, relaxed SIMD, threads): ${(e as Error).message}`,
      );
    }
    return 10;
  })();
  return probed;
}

/**
 * Factory of the `wasm` backend: preferred over `reference` (probe 10) wherever WebAssembly SIMD, relaxed SIMD,
 * threads and workers work; the probe throws the reason otherwise. `create({ threads, memoryBytes })`: worker
 * threads (default `navigator.hardwareConcurrency`) and a cap on the wasm memory (default and most 4 GiB).
 */
export const wasmBackend: BackendFactory = {
  name: "wasm",
  probe,
  async create(options: BackendOptions = {}): Promise<Backend> {
    const limit = Math.min(MAX_MEMORY, options.memoryBytes ?? MAX_MEMORY);
    const k = await WasmKernels.load({ maxBytes: limit });
    const pool = await ThreadPool.create(k, options.threads ?? navigator.hardwareConcurrency);
    try {
      // Gets the hot kernels past V8's baseline tier before the first step (workers share the compiled code).
      warmup(k, 150);
    } catch (e) {
      pool.dispose();
      throw e;
    }
    return new WasmBackend(k, pool, limit);
  },
};

/** Runs step `i`; a failure names the node it compiled. */
function runStep(p: WasmPrepared, i: number, state: RunState): void {
  try {
    p.steps[i](state);
  } catch (e) {
    const n = p.nodes[i];
    throw new Error(`wasm: ${n.op} #${n.id} "${n.name}" failed: ${(e as Error).message}`, { cause: e });
  }
}
