/**
 * The `wasm` backend: the CPU backend, running segments with the WASM SIMD kernels (kernels/wasm) on one shared
 * `WebAssembly.Memory` and a pool of worker threads.
 *
 * - Memory: every buffer is an allocation in the wasm memory (wasm32: 4 GiB at most, shared by weights, caches,
 *   activations and scratch). `write`, `read`, `copy` and `fill` are memcpy/memset; `transfer` to another wasm
 *   instance is one memcpy between the two memories, to any other backend its `write` of a view of this memory (one
 *   copy, no read-back); runs are synchronous, so `sync` has nothing to wait for. A
 *   model that does not fit is refused by the scheduler, or by `alloc` with an `OutOfMemoryError`.
 * - Dtypes: activations f32, ids i32, caches f32 or bf16; weights f32, bf16, f8e4m3, q8, q4 and nvfp4 (as released:
 *   E2M1 codes, f8 block scales, global scales) natively (f16 weights are stored as f32), in the layout of layout.ts;
 *   `uploadWeight` encodes row chunks straight into
 *   it, so the host holds one chunk at a time.
 * - Execution: `prepare` compiles a segment's nodes into steps (ops.ts, mla.ts, moe.ts, vision_ops.ts) with
 *   kernels, dtype codes and tables resolved and temporary memory sized at the largest shapes; `run` binds
 *   pointers, symbol values and the host copies of the integer inputs and runs the steps, each splitting rows
 *   across the threads (matmul over output features, attention over token blocks × head groups, MoE over expert ×
 *   column chunks, elementwise over elements). `create({ tuning })` sets the dispatch tuning ({@link WasmTuning}),
 *   read at every run.
 *
 * @example
 * ```ts
 * import { wasmBackend } from "./backend.ts";
 * if (await wasmBackend.probe() > 0) {
 *   const backend = await wasmBackend.create({ threads: 4 });
 *   const view = { buffer: backend.alloc(16), offset: 0 };
 *   backend.write(view, new Float32Array([1, 2, 3, 4]));
 *   new Float32Array((await backend.read(view, 16)).buffer); // [1, 2, 3, 4]
 *   backend.dispose();
 * }
 * ```
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import { maxShape, type Node, type TensorInfo, tensorTable, type Vars } from "../../../graph/ir.ts";
import {
  type Backend,
  type BackendCaps,
  type BackendFactory,
  type BackendOptions,
  type Bindings,
  type BufferHandle,
  canStore,
  type HostInputs,
  isSplit,
  OutOfMemoryError,
  type Prepared,
  refusedOps,
  type Segment,
  storageDType,
  tensorBytes,
  type TensorView,
  weightBytes,
  type WeightSource,
  type WeightTarget,
} from "../../backend.ts";
import { uploadChunks } from "../../weight_upload.ts";
import { DEFAULT_TUNING, type RunState, type Step, type WasmTuning } from "./compile.ts";
import { encodeChunk, wasmWeightBytes } from "./layout.ts";
import { MAX_BYTES_32, MAX_BYTES_64, warmup, WasmKernels } from "./module.ts";
import { compileNode, supportsNode } from "./ops.ts";
import { profileKey, wasmProfile } from "./profile.ts";
import { ThreadPool } from "./threads.ts";

export type { WasmTuning } from "./compile.ts";
export { DEFAULT_TUNING } from "./compile.ts";

const GIB = 2 ** 30;
// Kept out of `memoryBytes` for what `prepare` allocates after the plan's buffers (attention and MoE scratch).
const SCRATCH_RESERVE = 256 * 2 ** 20;

const DTYPES: readonly DType[] = ["f32", "bf16", "f8e4m3", "q8", "q4", "nvfp4", "i32"];

/** Options of the `wasm` factory: the common ones and the dispatch tuning. */
export type WasmBackendOptions = BackendOptions & {
  /**
   * Dispatch tuning; missing fields take {@link DEFAULT_TUNING}. The backend reads this object at every run, so a
   * caller may change it between runs (benchmarks alternate variants in one process).
   */
  tuning?: Partial<WasmTuning>;
  /**
   * The memory64 build (up to 16 GiB in one memory). Default: when `memoryBytes` is over 4 GiB; the wasm32 build
   * otherwise (4 GiB at most, and slightly cheaper calls).
   */
  memory64?: boolean;
  /** Leave the memory below this byte offset unused (tests place every buffer above 4 GiB). */
  reserveBelow?: number;
};

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
  readonly name: string;
  readonly caps: BackendCaps;
  readonly #k: WasmKernels;
  readonly #pool: ThreadPool;
  readonly #refuse: ReadonlySet<string>;
  readonly #userTuning: Partial<WasmTuning>;
  readonly #tuning: WasmTuning = { ...DEFAULT_TUNING };
  #applied = "";
  #buffers = new Map<number, number>(); // buffer id → address
  #nextId = 1;
  #persistent: number[] = [];
  #temp = 0;
  #tempBytes = 0;
  #disposed = false;

  constructor(name: string, k: WasmKernels, pool: ThreadPool, limit: number, options: WasmBackendOptions) {
    this.name = name;
    this.#k = k;
    this.#pool = pool;
    this.#refuse = refusedOps(options, name);
    this.#userTuning = options.tuning ?? {};
    this.#applyTuning();
    this.caps = {
      alignment: 64,
      dtypes: DTYPES,
      promote: { f16: "f32" },
      memoryBytes: Math.max(0, limit - k.arenaBase - Math.min(SCRATCH_RESERVE, limit / 8)),
      maxBindingBytes: Infinity,
      activationDType: "f32",
    };
  }

  /** Scratch memory of the prepared segments (the largest any kernel asked for), outside the plan's buffers. */
  get scratchBytes(): number {
    return this.#tempBytes;
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    if (this.#refuse.has(node.op)) return false;
    if (!canStore(this.caps, node.dtype) || !inputs.every((t) => canStore(this.caps, t.dtype))) return false;
    const stored = inputs.map((t) => storageDType(this.caps, t.dtype));
    return supportsNode(node, stored, inputs.map((t) => t.kind));
  }

  weightBytes(shape: readonly number[], storage: DType): number {
    return wasmWeightBytes(shape, storage);
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

  uploadWeight(target: WeightTarget, source: WeightSource): Promise<void> {
    const shape = maxShape(target.decl.shape);
    return uploadChunks(target, source, (chunk, part) => {
      // Parts are whole weights here (maxBindingBytes is unbounded): the layout spans the part's rows.
      const partShape = [part.rows, ...shape.slice(1)];
      const bytes = this.bytesAt(part.view, wasmWeightBytes(partShape, target.storage));
      encodeChunk(bytes, partShape, target.storage, chunk, chunk.row0 - part.row0);
    });
  }

  write(view: TensorView, data: ArrayBufferView): void {
    this.bytesAt(view, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  read(view: TensorView, bytes: number): Promise<Uint8Array> {
    try {
      return Promise.resolve(this.bytesAt(view, bytes).slice());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  copy(src: TensorView, dst: TensorView, bytes: number): void {
    this.bytesAt(dst, bytes).set(this.bytesAt(src, bytes));
  }

  fill(view: TensorView, bytes: number, value: number): void {
    this.bytesAt(view, bytes).fill(value);
  }

  /** Another wasm instance (`wasm:1`…): one memcpy between the two memories. */
  transfer(src: TensorView, to: Backend, dst: TensorView, bytes: number): Promise<boolean> {
    if (to instanceof WasmBackend) to.bytesAt(dst, bytes).set(this.bytesAt(src, bytes));
    // Runs here are synchronous, so memory is current; `write` takes the data at once (the contract): one copy,
    // where reading first would make two.
    else to.write(dst, this.bytesAt(src, bytes));
    return Promise.resolve(true);
  }

  /** `bytes` bytes of wasm memory at `view`, checked against its buffer (valid until the memory grows). */
  bytesAt(view: TensorView, bytes: number): Uint8Array {
    const ptr = this.#address(view.buffer);
    if (!(view.offset >= 0 && bytes >= 0 && view.offset + bytes <= view.buffer.bytes)) {
      throw new RangeError(`${this.name}: ${bytes} B at ${view.offset} overflow a buffer of ${view.buffer.bytes} B`);
    }
    return this.#k.u8(ptr + view.offset, bytes);
  }

  prepare(segment: Segment): Promise<Prepared> {
    try {
      const table = tensorTable(segment.graph);
      const byId = new Map(segment.graph.nodes.map((n) => [n.id, n]));
      let tempBytes = 0;
      const ctx = {
        k: this.#k,
        pool: this.#pool,
        tuning: this.#tuning,
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
          const dts = n.inputs.map((i) => `${table[i].kind} ${table[i].dtype}`).join(", ");
          throw new Error(`${this.name}: cannot run ${n.op} "${n.name}" (inputs ${dts})`);
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

  run(prepared: Prepared, bindings: Bindings, vars: Vars, host: HostInputs): void {
    const p = prepared as WasmPrepared;
    this.#applyTuning();
    if (p.lastBindings !== bindings) {
      this.#bind(p, bindings);
      p.lastBindings = bindings;
    }
    const state: RunState = { ptr: p.ptr, vars, temp: this.#temp, host };
    if (wasmProfile.enabled) return this.#runProfiled(p, state);
    for (let i = 0; i < p.steps.length; i++) runStep(this.name, p, i, state);
  }

  /** `run` with every step timed into {@link wasmProfile}. */
  #runProfiled(p: WasmPrepared, state: RunState): void {
    const start = performance.now();
    let t = start;
    for (let i = 0; i < p.steps.length; i++) {
      const jobs = wasmProfile.jobs;
      runStep(this.name, p, i, state);
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

  /** Copies the caller's tuning over the defaults and applies what lives in the kernels and the pool. */
  #applyTuning(): void {
    Object.assign(this.#tuning, DEFAULT_TUNING, this.#userTuning);
    const t = this.#tuning,
      key = `${t.q8Prefill}/${t.q8DecodeU8}/${t.nvfp4Prefill}/${t.q4Activations}/${t.spinMicros}/${t.joinSpinMicros}`;
    if (key === this.#applied) return;
    this.#applied = key;
    this.#k.exports.q8_prefill_int8(t.q8Prefill === "int8" ? 1 : 0);
    this.#k.exports.q8_decode_u8(t.q8DecodeU8 ? 1 : 0);
    this.#k.exports.nvfp4_prefill_int8(t.nvfp4Prefill === "auto" ? -1 : t.nvfp4Prefill === "int8" ? 1 : 0);
    this.#k.exports.q4_int8(t.q4Activations === "int8" ? 1 : 0);
    this.#pool.spinMicros = t.spinMicros;
    this.#pool.joinSpinMicros = t.joinSpinMicros;
  }

  /** Resolves every tensor the segment touches to an address, checking that bound views fit their buffers. */
  #bind(p: WasmPrepared, bindings: Bindings): void {
    const { segment, table } = p;
    for (const id of [...segment.inputs, ...segment.outputs]) {
      if (!bindings.has(id)) throw new Error(`run: tensor ${id} "${table[id].name}" is not bound`);
    }
    const ids = new Set([...segment.inputs, ...p.nodes.map((n) => n.id)]);
    for (const id of ids) {
      const t = table[id], bound = bindings.get(id);
      const bytes = t.kind === "weight" ? weightBytes(this, t.shape, t.dtype) : tensorBytes(this.caps, t);
      if (!bound) {
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
      if (isSplit(bound)) throw new Error(`${this.name}: ${t.name} is bound split, which it never asks for`);
      if (bound.offset < 0 || bound.offset + bytes > bound.buffer.bytes) {
        throw new RangeError(`tensor ${id} "${t.name}" (${bytes} B at ${bound.offset}) does not fit its buffer`);
      }
      p.ptr[id] = this.#address(bound.buffer) + bound.offset;
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
    } catch {
      const used = this.#k.allocatedBytes, limit = this.#k.maxBytes;
      throw new OutOfMemoryError({
        backend: this.name,
        requested: bytes,
        missing: Math.max(0, used + bytes - limit) || bytes,
        detail:
          `${(used / GIB).toFixed(2)} GiB of its ${(limit / GIB).toFixed(2)} GiB ${
            this.#k.memory64 ? "memory64" : "wasm32"
          } memory are in use: a ` +
          `smaller --dtype (bf16: 2 B per weight, q8 or f8e4m3: about 1 B), fewer or shorter sequences, or more ` +
          `wasm instances`,
      });
    }
  }

  #address(buffer: BufferHandle): number {
    const ptr = buffer.backend === this.name ? this.#buffers.get(buffer.id) : undefined;
    if (ptr === undefined) throw new Error(`buffer ${buffer.backend}:${buffer.id} is not a live ${this.name} buffer`);
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
 * threads and workers work; the probe throws the reason otherwise. `create({ threads, memoryBytes, tuning })`:
 * worker threads (default `navigator.hardwareConcurrency`), a cap on the wasm memory (default and most 4 GiB), and
 * the dispatch tuning ({@link WasmBackendOptions}).
 */
export const wasmBackend: BackendFactory = {
  name: "wasm",
  probe,
  create(options: WasmBackendOptions = {}): Promise<Backend> {
    return createWasm(options.instance === undefined ? "wasm" : `wasm:${options.instance}`, options);
  },
};

/** A wasm backend instance named `name` (`wasm`, or `wasm:N` for one of several instances). */
export async function createWasm(name: string, options: WasmBackendOptions = {}): Promise<Backend> {
  const memory64 = options.memory64 ?? (options.memoryBytes ?? 0) > MAX_BYTES_32;
  const max = memory64 ? MAX_BYTES_64 : MAX_BYTES_32, limit = Math.min(max, options.memoryBytes ?? max);
  if (options.memoryBytes !== undefined && options.memoryBytes > MAX_BYTES_64) {
    throw new RangeError(
      `wasm: one instance holds at most 16 GiB (V8's limit for one memory64), not ${options.memoryBytes} B: ` +
        `a larger model runs on several instances (loadModel splits it by layer)`,
    );
  }
  const k = await WasmKernels.load({ maxBytes: limit, memory64, reserveBelow: options.reserveBelow });
  const pool = await ThreadPool.create(k, options.threads ?? navigator.hardwareConcurrency);
  try {
    // Gets the hot kernels past V8's baseline tier before the first step (workers share the compiled code).
    warmup(k, 150);
  } catch (e) {
    pool.dispose();
    throw e;
  }
  return new WasmBackend(name, k, pool, limit, options);
}

/** Runs step `i`; a failure names the node it compiled. */
function runStep(name: string, p: WasmPrepared, i: number, state: RunState): void {
  try {
    p.steps[i](state);
  } catch (e) {
    const n = p.nodes[i];
    throw new Error(`${name}: ${n.op} #${n.id} "${n.name}" failed: ${(e as Error).message}`, { cause: e });
  }
}
