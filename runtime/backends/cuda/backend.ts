/**
 * The `cuda` backend: segments run as CUDA kernels (kernels/cuda, committed as PTX and an sm_90 cubin) on one
 * NVIDIA GPU, through the driver API bound in ffi.ts (`Deno.dlopen("libcuda.so.1")`: only the driver is needed,
 * no toolkit).
 *
 * - Device: `options.device` (default 0), its primary context, one non-blocking stream. Every copy, fill and launch
 *   is queued on that stream, so they run in the order they are issued; `sync` and `read` wait on it off the main
 *   thread.
 * - Memory: one `cuMemAlloc` per buffer. Host data goes through a ring of pinned staging slots (`cuMemAllocHost`):
 *   `write` and `uploadWeight` copy into a slot and queue `cuMemcpyHtoDAsync` from it, an event per slot guarding
 *   its reuse, so a weight streams through a few MiB of pinned memory. `read` copies into a pinned buffer of its
 *   own (queued at once, behind the work before it) and waits for the stream. An allocation the device cannot hold is an {@link OutOfMemoryError} at once
 *   (naming the tensor once the executor knows it); any other driver failure is a {@link CudaError} naming the call
 *   and the code, and one that leaves the context unusable (`fatal`: illegal address, launch failure) is the device
 *   lost: a `DeviceLostError` (caused by it) from then on, which the engine and server answer with 503 `device_lost`.
 * - Dtypes and layouts: the webgpu backend's (its ops.ts `storedBytes`): activations f32, ids i32, every weight
 *   dtype kept as it is and decoded by the kernels that read it; bf16 caches stay bf16.
 * - Preset weights (a source with a `random` recipe) are made by kernels where they live (device_weights.ts),
 *   bit-identical to the host generator: f32 / bf16 / f16, and FP8 / NVFP4 with their scales.
 * - Execution: `prepare` compiles each node into a step (ops.ts); `run` lets every step record its launches (grid
 *   and block per op and shape) and its host-computed tables (rope's cos/sin, ranges, scatter targets), then
 *   queues one copy of all the tables and the launches, on the same stream. A run whose launches (kernels, grids,
 *   addresses, words) repeat the last run's is captured into a CUDA graph and replayed while they stay the same:
 *   a decode step of one bucket is one graph launch, its tables copied from a pinned buffer the graph reads. A
 *   step's sampled ids are the only read-back.
 * - Probe: 0 with the reason (no driver library, `cuInit` failing, a driver older than the PTX needs, no device),
 *   which `--backend cuda` repeats; otherwise 5, below `wasm` (10), so `auto` keeps the CPU until
 *   `bench/cuda_check.sh` has verified the kernels on a device.
 *
 * @example
 * ```ts
 * import { cudaBackend } from "./backend.ts";
 * if (await cudaBackend.probe().catch(() => 0) > 0) {
 *   const backend = await cudaBackend.create();
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
import { maxShape, type Node, numel, type TensorInfo, tensorTable, type Vars } from "../../../graph/ir.ts";
import {
  alignUp,
  type Backend,
  type BackendCaps,
  type BackendFactory,
  type BackendOptions,
  type Bindings,
  type BufferHandle,
  canStore,
  DeviceLostError,
  type HostInputs,
  isSplit,
  OutOfMemoryError,
  type Prepared,
  refusedOps,
  type Segment,
  type TensorView,
  type WeightSource,
  type WeightTarget,
} from "../../backend.ts";
import { supportsNode } from "../webgpu/ops.ts";
import type { Stored } from "../../../kernels/wgsl/common.ts";
import { checkDriverVersion, CudaError, CudaUnavailableError, Driver, type Launch, libcudaPath } from "./ffi.ts";
import { type DeviceInfo, deviceInfo, loadKernels } from "./device.ts";
import {
  ATTENTION_MAX_DV,
  compileNode,
  type Encoder,
  type LaunchSpec,
  MLA_MAX_KVR,
  type PartRef,
  type Ref,
  type Step,
} from "./ops.ts";
import { Staging } from "./staging.ts";
import { uploadWeightChunks } from "../gpu_upload.ts";
import { deviceRecipe, generateOnDevice } from "./device_weights.ts";
import { maxBytes, storedBytes, storedOf } from "../gpu_layout.ts";

export { CudaError, CudaUnavailableError } from "./ffi.ts";

/** Options of the `cuda` factory: the common ones, and the driver library (tests load a fake one). */
export type CudaBackendOptions = BackendOptions & {
  /** Path of libcuda.so.1 (default: `TRAMONTANE_LIBCUDA`, else the system's). */
  libcuda?: string;
  /** Bytes of one pinned staging slot (default 4 MiB) and the slot count (default 4). */
  stagingBytes?: number;
  stagingSlots?: number;
  /** Make preset weights on the device (default true; false streams them from the host generator). */
  deviceWeights?: boolean;
  /**
   * Replay a run whose launches repeat the last run's as a CUDA graph (default true, or `TRAMONTANE_CUDA_GRAPHS=0`
   * to turn them off): a decode step is then one graph launch.
   */
  graphs?: boolean;
};

type CudaPrepared = Prepared & {
  nodes: Node[];
  steps: Step[];
  table: TensorInfo[];
  /** Device buffers of this segment: scratch and unbound results (by key). */
  own: Map<string, Ref>;
  /** The arena a run's host-computed tables are copied to, in one copy (grown as runs need). */
  tables?: Ref;
  /** The last run's launches, and the size of its tables ({@link sameLaunches}). */
  last?: Recorded;
  /**
   * The graph captured when a run repeated the last one's launches: replayed while they stay the same, its table
   * copy reading `pinned` (written before each launch, once `done`, the event behind its last launch, completed).
   */
  graph?: {
    recorded: Recorded;
    graph: Deno.PointerValue;
    exec: Deno.PointerValue;
    pinned: { ptr: Deno.PointerObject; bytes: number; view: Uint8Array };
    done: Deno.PointerValue;
  };
};

/** A run's launches and where and how large its tables are: everything a graph of it depends on but their values. */
type Recorded = { launches: readonly LaunchSpec[]; arena: bigint; tableBytes: number };

/** True when two runs launch the same kernels with the same grids, addresses and words (compared in place). */
function sameLaunches(a: Recorded, b: Recorded): boolean {
  if (a.arena !== b.arena || a.tableBytes !== b.tableBytes || a.launches.length !== b.launches.length) return false;
  for (let i = 0; i < a.launches.length; i++) {
    const x = a.launches[i], y = b.launches[i];
    if (x.kernel !== y.kernel || x.block !== y.block || (x.shared ?? 0) !== (y.shared ?? 0)) return false;
    const gx = x.grid, gy = y.grid;
    if (typeof gx === "number" || typeof gy === "number" ? gx !== gy : gx[0] !== gy[0] || gx[1] !== gy[1]) return false;
    if (x.ptrs.length !== y.ptrs.length || x.words.length !== y.words.length) return false;
    for (let j = 0; j < x.ptrs.length; j++) if (x.ptrs[j] !== y.ptrs[j]) return false;
    for (let j = 0; j < x.words.length; j++) if (x.words[j] !== y.words[j]) return false;
  }
  return true;
}

/** Bytes of the argument block every kernel takes (kernels/cuda/common.cuh `Args`: 8 pointers, 16 words). */
export const ARGS_BYTES = 8 * 8 + 16 * 4;

class CudaBackend implements Backend {
  readonly name: string;
  readonly caps: BackendCaps;
  /** The device, in words (name, compute capability, memory), for reports. */
  readonly device: DeviceInfo;
  readonly #d: Driver;
  readonly #stream: Deno.PointerValue;
  readonly #module: Deno.PointerValue;
  readonly #ordinal: number;
  readonly #refuse: ReadonlySet<string>;
  readonly #staging: Staging;
  readonly #deviceWeights: boolean;
  #graphs: boolean;
  #functions = new Map<string, Deno.PointerValue>();
  #buffers = new Map<number, { ptr: bigint; bytes: number }>();
  #nextId = 1;
  #allocated = 0;
  #prepared: CudaPrepared[] = [];
  #args = new Uint8Array(ARGS_BYTES);
  #argPtrs = new BigUint64Array(this.#args.buffer, 0, 8);
  #argWords = new Uint32Array(this.#args.buffer, 64, 16);
  /** Pinned read-back buffers: all of them (freed at dispose), and those not in use. */
  #readBuffers: { ptr: Deno.PointerObject; bytes: number }[] = [];
  #readPool: { ptr: Deno.PointerObject; bytes: number }[] = [];
  #lost: CudaError | undefined;
  #disposed = false;

  constructor(name: string, d: Driver, ordinal: number, device: DeviceInfo, options: CudaBackendOptions) {
    this.name = name;
    this.#d = d;
    this.#ordinal = ordinal;
    this.device = device;
    this.#refuse = refusedOps(options, name);
    this.#deviceWeights = options.deviceWeights ?? true;
    this.#graphs = (options.graphs ?? envFlag("TRAMONTANE_CUDA_GRAPHS", true)) && d.hasGraphs;
    // What is made here is released again if a later part fails (a module the driver rejects, no pinned memory).
    d.primaryContext(device.handle);
    const undo: (() => void)[] = [() => d.releasePrimaryContext(device.handle)];
    try {
      this.#stream = d.streamCreate();
      undo.push(() => d.streamDestroy(this.#stream));
      this.#module = loadKernels(d, device);
      undo.push(() => d.moduleUnload(this.#module));
      this.#staging = new Staging(d, this.#stream, options.stagingBytes ?? 4 * 2 ** 20, options.stagingSlots ?? 4);
    } catch (e) {
      for (const f of undo.reverse()) {
        try {
          f();
        } catch { /* the first error is the one to report */ }
      }
      throw e;
    }
    this.caps = {
      alignment: 256,
      dtypes: ["f32", "i32", "bf16", "f16", "f8e4m3", "q8", "nvfp4", "q4"],
      promote: {},
      memoryBytes: options.memoryBytes ?? device.totalMem,
      maxBindingBytes: Infinity,
      activationDType: "f32",
    };
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    if (this.#refuse.has(node.op)) return false;
    if (!canStore(this.caps, node.dtype) || !inputs.every((t) => canStore(this.caps, t.dtype))) return false;
    // The webgpu kernels' coverage and layouts; shared memory and binding counts are no limit here, but the
    // attention kernel holds at most ATTENTION_MAX_DV value columns per query.
    if (
      (node.op === "attention" || node.op === "attention_rows") && !(Number(inputs[2]?.shape[2]) <= ATTENTION_MAX_DV)
    ) {
      return false;
    }
    // ... and mla_split at most MLA_MAX_KVR latent columns.
    if (node.op === "mla_attention" && !((node.attrs as { kvr?: number }).kvr! <= MLA_MAX_KVR)) return false;
    return supportsNode(node, inputs, 48 * 1024, 16);
  }

  weightBytes(shape: readonly number[], storage: DType): number {
    if (storage === "i32") return 4 * numel(shape);
    if (storage !== storedOf({ dtype: storage })) throw new RangeError(`cuda: weights are not stored as ${storage}`);
    return storedBytes(shape, storage as Stored);
  }

  alloc(bytes: number): BufferHandle {
    this.#live("alloc");
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const size = Math.max(256, bytes);
    if (this.#allocated + size > this.caps.memoryBytes) {
      throw new OutOfMemoryError({
        backend: this.name,
        requested: bytes,
        missing: this.#allocated + size - this.caps.memoryBytes,
        detail: `${this.#allocated} B of the ${this.caps.memoryBytes} B allowed are in use`,
      });
    }
    let ptr: bigint;
    try {
      ptr = this.#d.memAlloc(size);
    } catch (e) {
      if (e instanceof CudaError && e.outOfMemory) {
        const free = this.#tryFree();
        throw new OutOfMemoryError({
          backend: this.name,
          requested: bytes,
          missing: free === undefined ? bytes : Math.max(1, size - free),
          detail: `cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (${free ?? "?"} B free on ${this.device.name}): a smaller ` +
            `dtype (--dtype nvfp4 / q4), fewer sequences, or another backend for some layers`,
        });
      }
      throw this.#fail(e);
    }
    const id = this.#nextId++;
    this.#buffers.set(id, { ptr, bytes: size });
    this.#allocated += size;
    return { backend: this.name, id, bytes };
  }

  free(buffer: BufferHandle): void {
    const b = buffer.backend === this.name ? this.#buffers.get(buffer.id) : undefined;
    if (!b) return;
    this.#buffers.delete(buffer.id);
    this.#allocated -= b.bytes;
    // cuMemFree waits for work using it, as the contract needs.
    this.#call(() => this.#d.memFree(b.ptr));
  }

  async uploadWeight(target: WeightTarget, source: WeightSource): Promise<void> {
    this.#live("uploadWeight");
    const how = this.#deviceWeights ? deviceRecipe(target, source) : undefined;
    if (how) {
      // A preset's weight made where it lives (device_weights.ts): no host generation, no copy.
      const temps: bigint[] = [];
      try {
        generateOnDevice(
          {
            launch: (spec) => this.#launch(spec),
            zeroed: (bytes) => {
              const p = this.#d.memAlloc(bytes);
              temps.push(p);
              this.#d.memsetD8Async(p, 0, bytes, this.#stream);
              return p;
            },
            address: (view) => this.#address(view, 0, target.decl.name),
          },
          target,
          how,
        );
      } catch (e) {
        throw this.#fail(e);
      } finally {
        // cuMemFree waits for the kernels that use them.
        for (const p of temps) this.#call(() => this.#d.memFree(p));
      }
      return;
    }
    try {
      await uploadWeightChunks(target, source, { backend: this.name, write: (view, data) => this.write(view, data) });
    } catch (e) {
      throw e instanceof CudaError ? this.#fail(e) : e;
    }
  }

  write(view: TensorView, data: ArrayBufferView): void {
    const dst = this.#address(view, data.byteLength, "write");
    if (data.byteLength === 0) return;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.#call(() => this.#staging.put(dst, bytes));
  }

  read(view: TensorView, bytes: number): Promise<Uint8Array> {
    try {
      const src = this.#address(view, bytes, "read");
      if (bytes === 0) return Promise.resolve(new Uint8Array(0));
      // Queued now, behind the work queued so far, into a pinned buffer of its own until it is copied out.
      const buf = this.#pinnedRead(bytes);
      try {
        this.#call(() => this.#d.memcpyDtoHAsync(buf.ptr, src, bytes, this.#stream));
      } catch (e) {
        this.#readPool.push(buf);
        throw e;
      }
      return this.sync().then(
        () => new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(buf.ptr, bytes)).slice(),
      ).finally(() => this.#readPool.push(buf));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  copy(src: TensorView, dst: TensorView, bytes: number): void {
    const s = this.#address(src, bytes, "copy"), d = this.#address(dst, bytes, "copy");
    if (bytes === 0) return;
    if (src.buffer.id === dst.buffer.id && src.offset < dst.offset + bytes && dst.offset < src.offset + bytes) {
      throw new RangeError(`${this.name}: copy of ${bytes} B at ${src.offset} → ${dst.offset} overlaps itself`);
    }
    this.#call(() => this.#d.memcpyDtoDAsync(d, s, bytes, this.#stream));
  }

  fill(view: TensorView, bytes: number, value: number): void {
    const d = this.#address(view, bytes, "fill");
    if (bytes === 0) return;
    this.#call(() => this.#d.memsetD8Async(d, value & 255, bytes, this.#stream));
  }

  prepare(segment: Segment): Promise<Prepared> {
    try {
      this.#live("prepare");
      const table = tensorTable(segment.graph);
      const byId = new Map(segment.graph.nodes.map((n) => [n.id, n]));
      const nodes: Node[] = [], steps: Step[] = [];
      for (const id of segment.nodes) {
        const n = byId.get(id);
        if (!n) throw new Error(`segment node ${id} is not in the graph`);
        if (!this.supports(n, n.inputs.map((i) => table[i]))) {
          const dts = n.inputs.map((i) => `${table[i].kind} ${table[i].dtype}`).join(", ");
          throw new Error(`${this.name}: cannot run ${n.op} "${n.name}" (inputs ${dts})`);
        }
        steps.push(compileNode({ table }, n));
        nodes.push(n);
      }
      const p: CudaPrepared = { segment, nodes, steps, table, own: new Map() };
      this.#prepared.push(p);
      return Promise.resolve(p);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  run(prepared: Prepared, bindings: Bindings, vars: Vars, host: HostInputs): void {
    this.#live("run");
    const p = prepared as CudaPrepared;
    for (const id of [...p.segment.inputs, ...p.segment.outputs]) {
      if (!bindings.has(id)) throw new Error(`run: tensor ${id} "${p.table[id].name}" is not bound`);
    }
    // Record first (launches, and host tables placed in the segment's table arena), then one copy of every table,
    // then the launches: a run's tables land before its kernels and after everything queued earlier. An arena
    // too small for this run's tables grows and the steps record again (the first run of a larger bucket).
    for (;;) {
      let stepKey = "", used = 0, end = 0;
      const launches: LaunchSpec[] = [], tables: { at: number; data: Uint8Array }[] = [];
      const arena = p.tables?.ptr ?? 0n, capacity = p.tables?.size ?? 0;
      const encoder: Encoder = {
        vars,
        host,
        view: (id) => this.#view(p, bindings, id),
        parts: (id) => this.#parts(p, bindings, id),
        scratch: (key, bytes) => this.#own(p, `${stepKey}/${key}`, bytes),
        upload: (_key, data, max) => {
          const at = used;
          used = alignUp(used + data.byteLength, 256);
          end = Math.max(end, at + data.byteLength);
          if (data.byteLength) tables.push({ at, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
          return { ptr: arena + BigInt(at), size: max };
        },
        launch: (spec) => launches.push(spec),
      };
      for (let i = 0; i < p.steps.length; i++) {
        stepKey = String(p.nodes[i].id);
        try {
          p.steps[i](encoder);
        } catch (e) {
          const n = p.nodes[i];
          if (e instanceof CudaError) throw this.#fail(e);
          throw new Error(`${this.name}: ${n.op} #${n.id} "${n.name}" failed: ${(e as Error).message}`, { cause: e });
        }
      }
      if (used > capacity) {
        const size = Math.max(used, 2 * capacity, 4096);
        this.#call(() => {
          if (p.tables) this.#d.memFree(p.tables.ptr); // waits for the runs that read it
          p.tables = undefined;
          p.tables = { ptr: this.#d.memAlloc(size), size };
        });
        continue;
      }
      const all = new Uint8Array(end);
      for (const t of tables) all.set(t.data, t.at);
      if (this.#graphs) {
        // The same launches as the last run (a decode step of one bucket): replay its graph, or capture one.
        const recorded: Recorded = { launches, arena, tableBytes: end };
        if (p.graph && sameLaunches(p.graph.recorded, recorded)) return this.#call(() => this.#replay(p, all));
        if (p.last && sameLaunches(p.last, recorded) && this.#capture(p, recorded, all)) return;
        p.last = recorded;
      }
      if (end) this.#call(() => this.#staging.put(arena, all));
      for (const l of launches) this.#call(() => this.#launch(l));
      return;
    }
  }

  /** Tables into the segment's pinned table buffer (once the graph that read it last is done), then the graph. */
  #replay(p: CudaPrepared, tables: Uint8Array): void {
    const g = p.graph!;
    this.#d.eventSynchronize(g.done);
    g.pinned.view.set(tables);
    this.#d.graphLaunch(g.exec, this.#stream);
    this.#d.eventRecord(g.done, this.#stream);
  }

  /**
   * Captures the run's table copy (from a pinned buffer of the segment, at a fixed address) and launches into a
   * graph and launches it; false (graphs off from now on, the run goes eager) when the driver refuses to capture.
   */
  #capture(p: CudaPrepared, recorded: Recorded, tables: Uint8Array): boolean {
    const { launches, arena } = recorded;
    const d = this.#d, old = p.graph;
    if (old) d.eventSynchronize(old.done);
    let pinned = old?.pinned;
    if (!pinned || pinned.bytes < tables.length) {
      if (pinned) d.memFreeHost(pinned.ptr);
      const bytes = Math.max(tables.length, 4096), ptr = d.memAllocHost(bytes);
      pinned = { ptr, bytes, view: new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, bytes)) };
    }
    pinned.view.set(tables);
    let graph: Deno.PointerValue = null, exec: Deno.PointerValue = null;
    try {
      d.beginCapture(this.#stream);
      try {
        if (tables.length) d.memcpyHtoDAsync(arena, pinned.ptr, tables.length, this.#stream);
        for (const l of launches) this.#launch(l);
      } finally {
        graph = d.endCapture(this.#stream);
      }
      exec = d.graphInstantiate(graph);
    } catch (e) {
      if (!(e instanceof CudaError) || e.fatal) throw this.#fail(e);
      if (graph) d.graphDestroy(graph);
      d.memFreeHost(pinned.ptr);
      if (old) this.#dropGraph(old, false);
      p.graph = undefined;
      this.#graphs = false;
      console.warn(`${this.name}: CUDA graphs off (${e.message}); steps launch their kernels one by one`);
      return false;
    }
    const done = old?.done ?? d.eventCreate(0);
    if (old) this.#dropGraph(old, false);
    p.graph = { recorded, graph, exec, pinned, done };
    d.graphLaunch(exec, this.#stream);
    d.eventRecord(done, this.#stream);
    return true;
  }

  /** Destroys a segment's graph (and its pinned table buffer and event with `all`). */
  #dropGraph(g: NonNullable<CudaPrepared["graph"]>, all: boolean): void {
    this.#d.graphExecDestroy(g.exec);
    this.#d.graphDestroy(g.graph);
    if (all) {
      this.#d.memFreeHost(g.pinned.ptr);
      this.#d.eventDestroy(g.done);
    }
  }

  async sync(): Promise<void> {
    this.#live("sync");
    try {
      await this.#d.streamSynchronize(this.#stream);
    } catch (e) {
      throw this.#fail(e);
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const d = this.#d;
    const quiet = (f: () => void) => {
      try {
        f();
      } catch { /* releasing after a fatal error: nothing more to do */ }
    };
    for (const b of this.#buffers.values()) quiet(() => d.memFree(b.ptr));
    for (const p of this.#prepared) {
      for (const r of [...p.own.values(), ...(p.tables ? [p.tables] : [])]) quiet(() => d.memFree(r.ptr));
      if (p.graph) quiet(() => this.#dropGraph(p.graph!, true));
    }
    this.#buffers.clear();
    this.#prepared = [];
    this.#staging.dispose();
    for (const b of this.#readBuffers) quiet(() => d.memFreeHost(b.ptr));
    quiet(() => d.streamDestroy(this.#stream));
    quiet(() => d.moduleUnload(this.#module));
    quiet(() => d.releasePrimaryContext(this.device.handle));
    quiet(() => d.close());
  }

  /** Queues one launch on the stream, its argument block packed as kernels/cuda/common.cuh `Args`. */
  #launch(spec: LaunchSpec): void {
    if (spec.ptrs.length > 8 || spec.words.length > 16) throw new Error(`cuda: ${spec.kernel}: too many arguments`);
    this.#argPtrs.fill(0n);
    this.#argWords.fill(0);
    spec.ptrs.forEach((p, i) => this.#argPtrs[i] = p);
    spec.words.forEach((w, i) => this.#argWords[i] = w >>> 0);
    const [gx, gy] = typeof spec.grid === "number" ? [spec.grid, 1] : spec.grid;
    const l: Launch = {
      fn: this.#function(spec.kernel),
      grid: [gx, gy, 1],
      block: [spec.block, 1, 1],
      sharedBytes: spec.shared ?? 0,
      args: this.#args,
    };
    this.#d.launch(l, this.#stream, spec.kernel);
  }

  #function(name: string): Deno.PointerValue {
    let f = this.#functions.get(name);
    if (f === undefined) this.#functions.set(name, f = this.#d.moduleGetFunction(this.#module, name));
    return f;
  }

  /** A free pinned read buffer of at least `bytes` (the smallest that fits), or a new one. */
  #pinnedRead(bytes: number): { ptr: Deno.PointerObject; bytes: number } {
    let best = -1;
    this.#readPool.forEach((b, i) => {
      if (b.bytes >= bytes && (best < 0 || b.bytes < this.#readPool[best].bytes)) best = i;
    });
    if (best >= 0) return this.#readPool.splice(best, 1)[0];
    const size = Math.max(bytes, 64 * 1024);
    const buf = { ptr: this.#d.memAllocHost(size), bytes: size };
    this.#readBuffers.push(buf);
    return buf;
  }

  /** Free device memory, when the driver can say. */
  #tryFree(): number | undefined {
    try {
      return this.#d.memInfo().free;
    } catch {
      return undefined;
    }
  }

  /** Runs a driver call, turning a fatal error into the backend's lost state. */
  #call(f: () => void): void {
    try {
      f();
    } catch (e) {
      throw this.#fail(e);
    }
  }

  /**
   * A fatal error (the context is unusable) is the device lost: a {@link DeviceLostError} (the engine fails every
   * sequence with it, the server answers 503 `device_lost`) whose `cause` is the driver's error; it sticks.
   */
  #fail(e: unknown): unknown {
    if (e instanceof CudaError && e.fatal) {
      this.#lost ??= e;
      return this.#lostError(e.call);
    }
    return e;
  }

  #lostError(call: string): DeviceLostError {
    const e = this.#lost!;
    const lost = new DeviceLostError({
      backend: this.name,
      call,
      reason: `${e.call} failed: ${e.codeName} (${e.code})`,
    });
    lost.cause = e;
    return lost;
  }

  #live(call = "a call"): void {
    if (this.#lost) throw this.#lostError(call);
    if (this.#disposed) throw new Error(`${this.name}: used after dispose()`);
  }

  /** A device buffer of the prepared segment (scratch, an unbound result, a host table), made on first use. */
  #own(p: CudaPrepared, key: string, bytes: number): Ref {
    const size = Math.max(256, bytes);
    let r = p.own.get(key);
    if (!r || r.size < size) {
      if (r) this.#d.memFree(r.ptr);
      r = { ptr: this.#d.memAlloc(size), size };
      p.own.set(key, r);
    }
    return r;
  }

  /** Tensor `id` as one range (an unbound node result gets a buffer of the segment). */
  #view(p: CudaPrepared, bindings: Bindings, id: number): Ref {
    const t = p.table[id], bound = bindings.get(id), bytes = maxBytes(t);
    if (!bound) {
      if (t.kind !== "node") throw new Error(`tensor ${id} "${t.name}" is not bound`);
      return this.#own(p, `result/${id}`, bytes);
    }
    if (isSplit(bound)) {
      throw new Error(`${t.name} is split in ${bound.parts.length} parts, and this op reads it whole`);
    }
    return { ptr: this.#address(bound, bytes, t.name), size: bytes };
  }

  #parts(p: CudaPrepared, bindings: Bindings, id: number): PartRef[] {
    const t = p.table[id], bound = bindings.get(id);
    if (!bound) throw new Error(`tensor ${id} "${t.name}" is not bound`);
    const shape = maxShape(t.shape);
    if (!isSplit(bound)) {
      return [{
        ref: { ptr: this.#address(bound, maxBytes(t), t.name), size: maxBytes(t) },
        row0: 0,
        rows: shape[0] ?? 1,
      }];
    }
    return bound.parts.map((part) => {
      const bytes = storedBytes([part.rows, ...shape.slice(1)], storedOf(t));
      return { ref: { ptr: this.#address(part.view, bytes, t.name), size: bytes }, row0: part.row0, rows: part.rows };
    });
  }

  /** The device address of `view`, checking `bytes` fit its buffer. */
  #address(view: TensorView, bytes: number, what: string): bigint {
    this.#live("a read, write, copy or fill");
    const b = view.buffer.backend === this.name ? this.#buffers.get(view.buffer.id) : undefined;
    if (!b) {
      throw new Error(`${what}: buffer ${view.buffer.backend}:${view.buffer.id} is not a live ${this.name} buffer`);
    }
    if (!(view.offset >= 0 && bytes >= 0 && view.offset + bytes <= Math.max(view.buffer.bytes, b.bytes))) {
      throw new RangeError(`${what} of ${bytes} B at ${view.offset} overflows a buffer of ${view.buffer.bytes} B`);
    }
    return b.ptr + BigInt(view.offset);
  }

  /** Test hook: the device ordinal. */
  get ordinal(): number {
    return this.#ordinal;
  }
}

/** A boolean environment variable (`0` / `false` off), `fallback` when unset or unreadable. */
function envFlag(name: string, fallback: boolean): boolean {
  try {
    const v = Deno.env.get(name);
    return v === undefined ? fallback : !(v === "0" || v.toLowerCase() === "false");
  } catch {
    return fallback;
  }
}

/** What a probe found: the device's description, or why there is none. */
export type CudaProbe = { ok: true; device: DeviceInfo } | { ok: false; reason: string };

/**
 * Opens the driver and looks at device `ordinal`: the reason when there is no driver library, `cuInit` fails, the
 * driver is older than the PTX needs, or there is no device.
 */
export function probeCuda(o: { libcuda?: string; device?: number } = {}): CudaProbe {
  let d: Driver;
  try {
    d = Driver.open(o.libcuda);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  try {
    try {
      d.init();
    } catch (e) {
      const err = e as CudaError;
      const hint = err.code === 100
        ? "no NVIDIA GPU is visible (CUDA_VISIBLE_DEVICES, container --gpus)"
        : err.code === 34
        ? "this libcuda.so.1 is the toolkit's stub, not a driver: install the NVIDIA driver"
        : "the NVIDIA driver is installed but does not initialise (nvidia-smi says why)";
      return { ok: false, reason: `${err.message}: ${hint}` };
    }
    try {
      checkDriverVersion(d.driverVersion());
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
    const count = d.deviceCount();
    const ordinal = o.device ?? 0;
    if (count === 0) return { ok: false, reason: "the NVIDIA driver found no CUDA device (cuDeviceGetCount = 0)" };
    if (ordinal >= count) return { ok: false, reason: `no CUDA device ${ordinal} (the driver sees ${count})` };
    return { ok: true, device: deviceInfo(d, ordinal) };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  } finally {
    d.close();
  }
}

/**
 * A `cuda` factory. `probe()` is 5 on a usable device (below `wasm`: `auto` keeps the CPU until the kernels are
 * verified on a device) and throws the reason otherwise (`--backend cuda` repeats it); `create` opens the driver,
 * the device's primary context, a stream and the kernels' module.
 */
export function makeCudaFactory(defaults: CudaBackendOptions = {}): BackendFactory {
  // Probed once per driver library (`TRAMONTANE_LIBCUDA` may name another one later).
  const probes = new Map<string, CudaProbe>();
  return {
    name: "cuda",
    probe(): Promise<number> {
      const lib = defaults.libcuda ?? libcudaPath();
      let probed = probes.get(lib);
      if (!probed) probes.set(lib, probed = probeCuda({ ...defaults, libcuda: lib }));
      return probed.ok ? Promise.resolve(5) : Promise.reject(new CudaUnavailableError(probed.reason));
    },
    create(options: CudaBackendOptions = {}): Promise<Backend> {
      try {
        const o = { ...defaults, ...options };
        const found = probeCuda({ libcuda: o.libcuda, device: o.device });
        if (!found.ok) throw new CudaUnavailableError(found.reason);
        const d = Driver.open(o.libcuda);
        try {
          d.init();
          const ordinal = o.device ?? 0;
          const info = deviceInfo(d, ordinal);
          const name = o.instance === undefined ? "cuda" : `cuda:${o.instance}`;
          return Promise.resolve(new CudaBackend(name, d, ordinal, info, o));
        } catch (e) {
          d.close();
          throw e;
        }
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}

/** Factory of the `cuda` backend on the system's driver (see {@link makeCudaFactory}). */
export const cudaBackend: BackendFactory = makeCudaFactory();
