/**
 * The `webgpu` backend: segments run as WGSL compute kernels (kernels/wgsl) on a `navigator.gpu` device, through
 * the standard WebGPU API only (no Deno call), so the same module runs in a browser page.
 *
 * - Memory: every buffer is a `GPUBuffer` (storage, copy source and destination). `write` is `queue.writeBuffer`,
 *   `copy`/`fill` are encoded commands, `read` copies into a mappable staging buffer and maps it. All of them and
 *   every run are ordered on the one queue. A buffer the device cannot hold is an {@link OutOfMemoryError}: at
 *   once when it is over `maxBufferSize`, else from the `out-of-memory` error scope around its creation, which the
 *   next `uploadWeight` (naming the weight), `read` or `sync` rejects with, naming any other buffer by the tensors
 *   a run bound in it (an arena); a segment's own buffers (activations, scratch, tables, made at a bucket's first
 *   run) are named too (`act of moe_experts "…"`), and asked for again by the next run.
 * - Device loss: from then on every call throws a {@link DeviceLostError} naming the call, and a read or sync
 *   waiting on the device rejects with it at once (a lost device may never settle a map). Only `dispose()` is not a
 *   loss: a device destroyed by anyone else is one, whatever its reason says.
 * - Dtypes: activations f32, ids i32; every weight dtype stays as it is, decoded by the kernels that read it: bf16
 *   and f16 packed two to a 32-bit word (widened with a shift, or `unpack2x16float`, core WGSL: no `shader-f16`
 *   needed); FP8 (E4M3, one scale per K-row), q8 (int8, one scale per 32) and NVFP4 (E2M1 two to a byte, one scale
 *   per 16) as their codes packed into words and followed by their f32 scales (matmul, embedding, MoE experts and
 *   W_kvb read those); q4 (Q4_0's numbers) as its wasm blocks of codes then its f16 scales two to a word (matmul,
 *   embedding and MoE experts; a q4 W_kvb is refused). bf16 caches stay bf16. Every weight is written as its chunks come.
 * - Limits: `maxBindingBytes` is the device's `maxStorageBufferBindingSize`; weights over it come split by rows
 *   (matmul and embedding run part by part; other ops refuse a split weight with a message naming it).
 * - Execution: `prepare` compiles each node into a step (ops.ts) and every kernel it dispatches into a pipeline
 *   (cached by WGSL source); `run` writes the step's parameter words (and host-computed tables: rope's cos/sin,
 *   query temperatures) once, then encodes every dispatch into one compute pass of one command encoder, left open
 *   until the next `read` (whose copy joins it), `write` or `sync` submits it: a step whose outputs are read from
 *   here is one `queue.submit` and one `mapAsync` per output. Bind groups are cached per prepared segment by the
 *   buffer ranges they bind (views are sized at the largest shape, so every step of a bucket binds the same
 *   ranges): they are made on a bucket's first run only.
 * - Kernels: matmuls run a cooperative matvec for steps of ≤ 8 rows and a 64×64-tiled GEMM above (ops_matmul.ts);
 *   `mla_attention` splits a decode step's context over chunks (flash-decoding) past `splitChunk` positions
 *   (ops_mla.ts); both choose per run but record every variant (the others with 0 workgroups), so a bucket's bind
 *   groups are all made on its first run. `shader-f16` is requested where the adapter has it and f16 weights are
 *   then read as `vec2<f16>` (`webgpuTuning.f16: false` forces the core-WGSL fallback); {@link WebGpuBackend.f16}
 *   says which. The `profile` option times each kernel with timestamp queries (profile.ts, bench/webgpu.ts).
 * - Ops: every op of the text and vision graphs, `sample` included (temperature, top-k, top-p and the packed
 *   constraint masks on the device, so a step reads back token ids); a mixed plan (`--backend webgpu,wasm`) runs what
 *   a test or a user refuses elsewhere.
 * - Adapter: `probe()` scores a fallback (software) adapter 2 and a hardware one 5, both below `wasm` (10), so
 *   `auto` never picks this backend until it runs the whole model; `--backend webgpu` picks it by name.
 *
 * @example
 * ```ts
 * import { webgpuBackend } from "./backend.ts";
 * if (await webgpuBackend.probe().catch(() => 0) > 0) {
 *   const backend = await webgpuBackend.create();
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
import { compileNode, type Encoder, type PartRef, type Ref, type Step, supportsNode } from "./ops.ts";
import type { Stored } from "../../../kernels/wgsl/common.ts";
import { DEFAULT_WEBGPU_TUNING, type WebGpuTuning } from "./tuning.ts";
import { KernelProfiler, type KernelTime } from "./profile.ts";
import { uploadWeightChunks } from "../gpu_upload.ts";
import { describe, findAdapter, type Found, isFallback } from "./adapter.ts";
import { maxBytes, storedBytes, storedOf } from "../gpu_layout.ts";

/** Options of the `webgpu` factory: the common ones and test-only limits. */
export type WebGpuBackendOptions = BackendOptions & {
  /** A smaller binding limit than the device's (tests force split weights with it). */
  maxBindingBytes?: number;
  /** An adapter to use instead of `navigator.gpu.requestAdapter()` (a page that chose one; tests). */
  adapter?: GPUAdapter;
  /** Kernel choices over their defaults (tuning.ts; tests force the split MLA decode and the f16 fallback). */
  webgpuTuning?: Partial<WebGpuTuning>;
  /**
   * Time every dispatch with timestamp queries (profile.ts; benchmarks only: a pass and a read-back more per
   * dispatch and run). Needs the adapter's `timestamp-query`; without it {@link WebGpuBackend.kernelTimes} says so.
   */
  profile?: boolean;
};

/** Bytes of one step's parameter slot (the storage offset alignment every device accepts). */
const SLOT = 256;

type GpuRef = Ref & { buffer: GPUBuffer };

type WebGpuPrepared = Prepared & {
  nodes: Node[];
  steps: Step[];
  table: TensorInfo[];
  /** Device buffers of this segment: scratch, node results left unbound, host tables (by key). */
  own: Map<string, GPUBuffer>;
  /** Bind groups by the ranges they bind. */
  groups: Map<string, GPUBindGroup>;
  /** Parameter slots (256 B each), grown when a run needs more. */
  params?: GPUBuffer;
  slots: number;
};

/** The `webgpu` backend (see the module docs); `create` returns one. */
export class WebGpuBackend implements Backend {
  readonly name: string;
  readonly caps: BackendCaps;
  /** The adapter, in words (vendor, description), for reports. */
  readonly adapterName: string;
  readonly lost: Promise<DeviceLostError>;
  readonly #device: GPUDevice;
  readonly #refuse: ReadonlySet<string>;
  readonly #workgroupBytes: number;
  readonly #tuning: WebGpuTuning;
  /** Whether kernels may use `shader-f16` (the device has it and the tuning allows it). */
  readonly f16: boolean;
  #buffers = new Map<number, GPUBuffer>();
  #nextId = 1;
  #allocated = 0;
  /** Out-of-memory scopes of the segments' own buffers (scratch, results, tables) not yet checked. */
  #ownChecks: { check: Promise<GPUError | null>; p: WebGpuPrepared; key: string; buffer: GPUBuffer }[] = [];
  /** The tensors a run bound in each buffer, by buffer id (a buffer that could not be made is named by them). */
  #holds = new Map<number, Set<string>>();
  /** Out-of-memory scopes of allocations not yet checked, by buffer id. */
  #allocChecks = new Map<number, Promise<GPUError | null>>();
  /** Validation scopes of submitted work not yet checked. */
  #errors: Promise<GPUError | null>[] = [];
  #encoder: GPUCommandEncoder | undefined;
  #pipelines = new Map<string, GPUComputePipeline>();
  #prepared: WebGpuPrepared[] = [];
  #dummy: GPUBuffer;
  readonly #profiler: KernelProfiler | undefined;
  readonly #profileMissing: string | undefined;
  /** The device's words when it was lost under us (not by our own dispose). */
  #lost: string | undefined;
  #disposed = false;
  /** Rejecters of the device promises being awaited (map, work done, error scopes): a lost device fails them. */
  #waiting = new Set<() => void>();

  constructor(name: string, device: GPUDevice, found: Found, options: WebGpuBackendOptions) {
    this.name = name;
    this.#device = device;
    this.adapterName = `${found.description}${found.fallback ? " (software)" : ""}`;
    this.#refuse = refusedOps(options, name);
    this.#workgroupBytes = device.limits.maxComputeWorkgroupStorageSize;
    this.#tuning = { ...DEFAULT_WEBGPU_TUNING, ...options.webgpuTuning };
    this.f16 = this.#tuning.f16 && device.features.has("shader-f16");
    const stamps = device.features.has("timestamp-query");
    this.#profiler = options.profile && stamps ? new KernelProfiler(device) : undefined;
    this.#profileMissing = !options.profile
      ? "create the backend with `profile: true`"
      : stamps
      ? undefined
      : "the adapter has no timestamp-query";
    const binding = Math.min(device.limits.maxStorageBufferBindingSize, options.maxBindingBytes ?? Infinity);
    this.caps = {
      alignment: Math.max(SLOT, device.limits.minStorageBufferOffsetAlignment),
      dtypes: ["f32", "i32", "bf16", "f16", "f8e4m3", "q8", "nvfp4", "q4"],
      promote: {},
      memoryBytes: options.memoryBytes ?? Infinity,
      // Whole 4-byte words: every binding is an array of 32-bit elements.
      maxBindingBytes: Math.floor(binding / 4) * 4,
      activationDType: "f32",
    };
    this.#dummy = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    // Whatever the reason ("destroyed" included): only our own dispose() is not a loss.
    this.lost = new Promise((resolve) =>
      device.lost.then((info) => {
        if (!this.#disposed) {
          this.#lost = `${info.reason}: ${info.message || "no message"}`;
          resolve(new DeviceLostError({ backend: this.name, call: "device.lost", reason: this.#lost }));
        }
        for (const fail of [...this.#waiting]) fail();
      })
    );
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    if (this.#refuse.has(node.op)) return false;
    if (!canStore(this.caps, node.dtype) || !inputs.every((t) => canStore(this.caps, t.dtype))) return false;
    return supportsNode(node, inputs, this.#workgroupBytes, this.#device.limits.maxStorageBuffersPerShaderStage);
  }

  weightBytes(shape: readonly number[], storage: DType): number {
    if (storage === "i32") return 4 * numel(shape);
    if (storage !== storedOf({ dtype: storage })) throw new RangeError(`webgpu: weights are not stored as ${storage}`);
    return storedBytes(shape, storage as Stored);
  }

  alloc(bytes: number): BufferHandle {
    this.#live("alloc");
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const size = Math.max(4, alignUp(bytes, 4)), limit = this.#device.limits.maxBufferSize;
    if (size > limit || this.#allocated + size > this.caps.memoryBytes) {
      const over = size > limit;
      throw new OutOfMemoryError({
        backend: this.name,
        requested: bytes,
        missing: over ? size - limit : this.#allocated + size - this.caps.memoryBytes,
        detail: over
          ? `one buffer holds at most ${limit} B on this device (maxBufferSize): a smaller model or batch`
          : `${this.#allocated} B of the ${this.caps.memoryBytes} B allowed are in use`,
      });
    }
    this.#device.pushErrorScope("out-of-memory");
    const buffer = this.#device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    const id = this.#nextId++;
    this.#allocChecks.set(id, this.#device.popErrorScope());
    this.#buffers.set(id, buffer);
    this.#allocated += size;
    return { backend: this.name, id, bytes };
  }

  free(buffer: BufferHandle): void {
    const b = buffer.backend === this.name ? this.#buffers.get(buffer.id) : undefined;
    if (!b) return;
    this.#flush(); // queued work may still use it
    this.#buffers.delete(buffer.id);
    this.#allocChecks.delete(buffer.id);
    this.#holds.delete(buffer.id);
    this.#allocated -= b.size;
    b.destroy();
  }

  async uploadWeight(target: WeightTarget, source: WeightSource): Promise<void> {
    const name = target.decl.name;
    for (const part of target.parts) {
      const check = this.#allocChecks.get(part.view.buffer.id);
      const err = check && await this.#untilLost(check, "uploadWeight");
      if (err) {
        throw new OutOfMemoryError({
          backend: this.name,
          tensor: `weight ${name}`,
          requested: part.view.buffer.bytes,
          detail: `the device could not allocate it (${err.message}): a smaller model, or another backend for some ` +
            `layers`,
        });
      }
      this.#allocChecks.delete(part.view.buffer.id);
    }
    await uploadWeightChunks(target, source, {
      backend: this.name,
      write: (view, data) => this.write(view, data),
      wholeWords: true,
    });
  }

  write(view: TensorView, data: ArrayBufferView): void {
    const b = this.#buffer(view, data.byteLength, "write");
    if (data.byteLength === 0) return;
    if (view.offset % 4 !== 0 || data.byteLength % 4 !== 0) {
      throw new RangeError(`${this.name}: write of ${data.byteLength} B at ${view.offset}: not whole 4-byte words`);
    }
    this.#flush(); // after the work queued so far
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // writeBuffer takes no shared memory (the wasm backend's): such data is copied first.
    const own = bytes.buffer instanceof ArrayBuffer ? bytes as Uint8Array<ArrayBuffer> : bytes.slice();
    this.#device.queue.writeBuffer(b, view.offset, own.buffer, own.byteOffset, own.byteLength);
  }

  async read(view: TensorView, bytes: number): Promise<Uint8Array> {
    const b = this.#buffer(view, bytes, "read");
    if (bytes === 0) return new Uint8Array(0);
    const start = view.offset - (view.offset % 4), end = alignUp(view.offset + bytes, 4);
    const staging = this.#device.createBuffer({
      size: end - start,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      this.#commands().copyBufferToBuffer(b, start, staging, 0, end - start);
      this.#flush();
      await this.#untilLost(staging.mapAsync(GPUMapMode.READ), "read");
      const skip = view.offset - start;
      const out = new Uint8Array(staging.getMappedRange()).slice(skip, skip + bytes);
      staging.unmap();
      await this.#checkErrors("read");
      return out;
    } finally {
      staging.destroy();
    }
  }

  copy(src: TensorView, dst: TensorView, bytes: number): void {
    const s = this.#buffer(src, bytes, "copy"), d = this.#buffer(dst, bytes, "copy");
    if (bytes === 0) return;
    if (src.offset % 4 || dst.offset % 4 || bytes % 4) {
      throw new RangeError(`${this.name}: copy of ${bytes} B at ${src.offset} → ${dst.offset}: not whole 4-byte words`);
    }
    if (s === d && src.offset < dst.offset + bytes && dst.offset < src.offset + bytes) {
      throw new RangeError(`${this.name}: copy of ${bytes} B at ${src.offset} → ${dst.offset} overlaps itself`);
    }
    this.#commands().copyBufferToBuffer(s, src.offset, d, dst.offset, bytes);
  }

  fill(view: TensorView, bytes: number, value: number): void {
    const b = this.#buffer(view, bytes, "fill");
    if (bytes === 0) return;
    if (view.offset % 4 === 0 && bytes % 4 === 0 && value === 0) {
      this.#commands().clearBuffer(b, view.offset, bytes);
      return;
    }
    this.write(view, new Uint8Array(bytes).fill(value));
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
        const use = (...wgsl: string[]) => wgsl.forEach((k) => this.#pipeline(k));
        const c = { table, workgroupBytes: this.#workgroupBytes, use, tuning: this.#tuning, f16: this.f16 };
        steps.push(compileNode(c, n));
        nodes.push(n);
      }
      const p: WebGpuPrepared = { segment, nodes, steps, table, own: new Map(), groups: new Map(), slots: 0 };
      this.#prepared.push(p);
      return Promise.resolve(p);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  run(prepared: Prepared, bindings: Bindings, vars: Vars, host: HostInputs): void {
    this.#live("run");
    const p = prepared as WebGpuPrepared;
    for (const id of [...p.segment.inputs, ...p.segment.outputs]) {
      if (!bindings.has(id)) throw new Error(`run: tensor ${id} "${p.table[id].name}" is not bound`);
    }
    // Record first (host tables are written as steps ask), then write parameters, then encode: a run's writes
    // land before its dispatches and after everything queued earlier.
    this.#flush();
    type Dispatch = { wgsl: string; params: readonly number[]; refs: readonly GpuRef[]; groups: number; op: string };
    const recorded: Dispatch[] = [];
    let stepKey = "", op = "";
    const encoder: Encoder = {
      vars,
      host,
      view: (id) => this.#view(p, bindings, id),
      parts: (id) => this.#parts(p, bindings, id),
      scratch: (key, bytes) => this.#own(p, `${stepKey}/${key}`, bytes),
      shared: (key, bytes) => this.#own(p, `shared/${key}/${bytes}`, bytes),
      upload: (key, data, max) => {
        const ref = this.#own(p, `${stepKey}/${key}`, max);
        // Deno 2.9.6 panics on an empty writeBuffer (a zero-length array has no backing store).
        if (data.length) {
          this.#device.queue.writeBuffer(ref.buffer, 0, data as Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer>);
        }
        return ref;
      },
      dummy: () => ({ buffer: this.#dummy, offset: 0, size: 16 }),
      dispatch: (wgsl, params, refs, groups) => recorded.push({ wgsl, params, refs: refs as GpuRef[], groups, op }),
    };
    for (let i = 0; i < p.steps.length; i++) {
      stepKey = String(p.nodes[i].id);
      op = p.nodes[i].op;
      try {
        p.steps[i](encoder);
      } catch (e) {
        if (e instanceof DeviceLostError) throw e;
        const n = p.nodes[i];
        throw new Error(`${this.name}: ${n.op} #${n.id} "${n.name}" failed: ${(e as Error).message}`, { cause: e });
      }
    }
    if (recorded.length > p.slots) this.#growSlots(p, recorded.length);
    const words = new Uint32Array((SLOT / 4) * recorded.length);
    recorded.forEach((d, i) => words.set(d.params, (SLOT / 4) * i));
    if (recorded.length) this.#device.queue.writeBuffer(p.params!, 0, words);
    this.#device.pushErrorScope("validation");
    // One compute pass, or one a dispatch when profiling (each stamped at its beginning and end).
    const commands = this.#commands(), prof = this.#profiler;
    prof?.begin(recorded.length);
    const one = prof ? undefined : commands.beginComputePass();
    recorded.forEach((d, i) => {
      const group = this.#bindGroup(p, d.wgsl, i, d.refs);
      if (!d.groups) return; // a variant this run skips: its bind group is ready for the runs that take it
      const pass = one ??
        commands.beginComputePass(
          prof!.pass(KernelProfiler.nameOf(d.wgsl, d.op), d.refs.reduce((n, r) => n + r.size, 0)),
        );
      pass.setPipeline(this.#pipeline(d.wgsl));
      pass.setBindGroup(0, group);
      const x = Math.min(d.groups, 65535);
      pass.dispatchWorkgroups(x, Math.ceil(d.groups / x));
      if (!one) pass.end();
    });
    one?.end();
    prof?.end(commands);
    this.#errors.push(this.#device.popErrorScope());
  }

  /**
   * GPU time per kernel over the runs so far (since {@link resetKernelTimes}), from timestamp queries: needs the
   * `profile` option and an adapter with `timestamp-query`.
   */
  async kernelTimes(): Promise<Map<string, KernelTime>> {
    if (!this.#profiler) throw new Error(`${this.name}: no kernel timings: ${this.#profileMissing}`);
    this.#flush();
    return await this.#profiler.collect();
  }

  /** Forgets the kernel timings so far (after a warm-up). */
  async resetKernelTimes(): Promise<void> {
    await this.kernelTimes();
    this.#profiler!.reset();
  }

  async sync(): Promise<void> {
    this.#live("sync");
    this.#flush();
    await this.#untilLost(this.#device.queue.onSubmittedWorkDone(), "sync");
    await this.#checkErrors("sync");
    this.#live("sync");
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const b of this.#buffers.values()) b.destroy();
    for (const p of this.#prepared) {
      for (const b of p.own.values()) b.destroy();
      p.params?.destroy();
    }
    this.#buffers.clear();
    this.#profiler?.dispose();
    this.#prepared = [];
    this.#pipelines.clear();
    this.#device.destroy();
  }

  /** The open command encoder (one per batch of runs and copies, submitted by {@link #flush}). */
  #commands(): GPUCommandEncoder {
    return this.#encoder ??= this.#device.createCommandEncoder();
  }

  /** Submits what is encoded. */
  #flush(): void {
    const encoder = this.#encoder;
    if (!encoder) return;
    this.#encoder = undefined;
    this.#device.pushErrorScope("validation");
    this.#device.queue.submit([encoder.finish()]);
    this.#errors.push(this.#device.popErrorScope());
  }

  /**
   * Throws any allocation that failed (first: a buffer the device could not make fails the work using it too), then
   * the first validation error of work submitted so far. A segment's own buffer that failed is dropped, so a later run
   * asks for it again.
   */
  async #checkErrors(call: string): Promise<void> {
    const errors = this.#errors;
    this.#errors = [];
    const allocs = [...this.#allocChecks.entries()], owns = this.#ownChecks;
    this.#allocChecks.clear();
    this.#ownChecks = [];
    const oom = (tensor: string | undefined, requested: number, e: GPUError) =>
      new OutOfMemoryError({
        backend: this.name,
        tensor,
        requested,
        detail: `the device could not allocate it (${e.message}): fewer sequences or tokens per step ` +
          `(--max-num-seqs, --max-tokens-per-step), a smaller model, or another backend for some layers`,
      });
    let failed: OutOfMemoryError | undefined;
    for (const { check, p, key, buffer } of owns) {
      const e = await this.#untilLost(check, call);
      if (!e) continue;
      failed ??= oom(this.#ownName(p, key), buffer.size, e);
      if (p.own.get(key) === buffer) p.own.delete(key);
      p.groups.clear(); // some bound the failed buffer
      buffer.destroy();
    }
    for (const [id, check] of allocs) {
      const e = await this.#untilLost(check, call);
      // A weight is named by uploadWeight; an arena by the tensors a run bound in it (a run before this check).
      const holds = [...this.#holds.get(id) ?? []];
      if (e) {
        failed ??= oom(
          holds.length ? `the buffer of ${holds.join(", ")}` : undefined,
          this.#buffers.get(id)?.size ?? 0,
          e,
        );
      }
    }
    const validation = await this.#untilLost(Promise.all(errors), call);
    if (failed) throw failed;
    for (const e of validation) if (e) throw new Error(`${this.name}: ${e.message}`);
  }

  /** Throws a {@link DeviceLostError} naming `call` once the device is lost, and an error after dispose(). */
  #live(call: string): void {
    if (this.#lost) throw new DeviceLostError({ backend: this.name, call, reason: this.#lost });
    if (this.#disposed) throw new Error(`${this.name}: ${call}() after dispose()`);
  }

  /**
   * `p`, or a {@link DeviceLostError} naming `call` as soon as the device is lost (a lost device may leave a map or
   * a work-done promise pending forever, or reject it with an error that does not say why).
   */
  #untilLost<T>(p: Promise<T>, call: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fail = () => {
        try {
          this.#live(call);
        } catch (e) {
          reject(e);
        }
      };
      this.#waiting.add(fail);
      // A device lost under a map rejects the map (aborted) before `lost` resolves: a timer turn lets it resolve.
      p.then(resolve, (e) =>
        setTimeout(() => {
          fail();
          reject(e);
        }, 0)).finally(() => this.#waiting.delete(fail));
      if (this.#lost || this.#disposed) fail();
    });
  }

  #growSlots(p: WebGpuPrepared, n: number): void {
    p.params?.destroy();
    p.slots = Math.max(n, 2 * p.slots);
    p.params = this.#device.createBuffer({
      size: SLOT * p.slots,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    p.groups.clear(); // they bound the old parameter buffer
  }

  #pipeline(wgsl: string): GPUComputePipeline {
    let pipeline = this.#pipelines.get(wgsl);
    if (!pipeline) {
      // A shader that does not compile surfaces with the compiler's message at the next sync or read.
      this.#device.pushErrorScope("validation");
      const module = this.#device.createShaderModule({ code: wgsl });
      pipeline = this.#device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
      this.#errors.push(this.#device.popErrorScope());
      this.#pipelines.set(wgsl, pipeline);
    }
    return pipeline;
  }

  #bindGroup(p: WebGpuPrepared, wgsl: string, slot: number, refs: readonly GpuRef[]): GPUBindGroup {
    const key = `${slot}|${refs.map((r) => `${this.#bufferKey(r.buffer)}:${r.offset}:${r.size}`).join(",")}|` +
      this.#pipelineKey(wgsl);
    let group = p.groups.get(key);
    if (!group) {
      group = this.#device.createBindGroup({
        layout: this.#pipeline(wgsl).getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: p.params!, offset: SLOT * slot, size: SLOT } },
          ...refs.map((r, i) => ({ binding: i + 1, resource: { buffer: r.buffer, offset: r.offset, size: r.size } })),
        ],
      });
      p.groups.set(key, group);
    }
    return group;
  }

  #keys = new WeakMap<object, number>();
  #nextKey = 1;
  #bufferKey(o: object): number {
    let k = this.#keys.get(o);
    if (k === undefined) this.#keys.set(o, k = this.#nextKey++);
    return k;
  }
  #pipelineKeys = new Map<string, number>();
  #pipelineKey(wgsl: string): number {
    let k = this.#pipelineKeys.get(wgsl);
    if (k === undefined) this.#pipelineKeys.set(wgsl, k = this.#pipelineKeys.size + 1);
    return k;
  }

  /** A buffer of the prepared segment (scratch, an unbound result, a host table), made on first use. */
  #own(p: WebGpuPrepared, key: string, bytes: number): GpuRef {
    const size = Math.max(4, alignUp(bytes, 4));
    let b = p.own.get(key);
    if (!b || b.size < size) {
      b?.destroy();
      this.#device.pushErrorScope("out-of-memory");
      b = this.#device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      this.#ownChecks.push({ check: this.#device.popErrorScope(), p, key, buffer: b });
      p.own.set(key, b);
    }
    return { buffer: b, offset: 0, size };
  }

  /** What a buffer of a prepared segment holds, in words: `result/<id>` or `<node id>/<name>`. */
  #ownName(p: WebGpuPrepared, key: string): string {
    const [head, tail] = key.split("/");
    if (head === "result") return `activation ${p.table[Number(tail)]?.name ?? tail}`;
    const node = p.nodes.find((n) => String(n.id) === head);
    return node ? `${tail} of ${node.op} "${node.name}"` : key;
  }

  /** Tensor `id` as one bound range (an unbound node result gets a buffer of the segment). */
  #view(p: WebGpuPrepared, bindings: Bindings, id: number): GpuRef {
    const t = p.table[id], bound = bindings.get(id);
    const bytes = Math.max(4, alignUp(maxBytes(t), 4));
    if (!bound) {
      if (t.kind !== "node") throw new Error(`tensor ${id} "${t.name}" is not bound`);
      return this.#own(p, `result/${id}`, bytes);
    }
    if (isSplit(bound)) {
      throw new Error(`${t.name} is split in ${bound.parts.length} parts, and this op reads it whole`);
    }
    return this.#range(bound, bytes, t.name);
  }

  #parts(p: WebGpuPrepared, bindings: Bindings, id: number): PartRef[] {
    const t = p.table[id], bound = bindings.get(id);
    if (!bound) throw new Error(`tensor ${id} "${t.name}" is not bound`);
    const shape = maxShape(t.shape);
    if (!isSplit(bound)) return [{ ref: this.#range(bound, maxBytes(t), t.name), row0: 0, rows: shape[0] ?? 1 }];
    return bound.parts.map((part) => ({
      ref: this.#range(part.view, storedBytes([part.rows, ...shape.slice(1)], storedOf(t)), t.name),
      row0: part.row0,
      rows: part.rows,
    }));
  }

  #range(view: TensorView, bytes: number, what: string): GpuRef {
    const b = this.#buffer(view, 0, what);
    const holds = this.#holds.get(view.buffer.id) ?? new Set();
    if (holds.size < 4) this.#holds.set(view.buffer.id, holds.add(what));
    const size = Math.min(Math.max(4, alignUp(bytes, 4)), b.size - view.offset);
    if (bytes > b.size - view.offset) {
      throw new RangeError(`tensor "${what}" (${bytes} B at ${view.offset}) does not fit its buffer of ${b.size} B`);
    }
    return { buffer: b, offset: view.offset, size };
  }

  #buffer(view: TensorView, bytes: number, what: string): GPUBuffer {
    this.#live(what);
    const b = view.buffer.backend === this.name ? this.#buffers.get(view.buffer.id) : undefined;
    if (!b) {
      throw new Error(`${what}: buffer ${view.buffer.backend}:${view.buffer.id} is not a live ${this.name} buffer`);
    }
    if (!(view.offset >= 0 && bytes >= 0 && view.offset + bytes <= view.buffer.bytes)) {
      throw new RangeError(`${what} of ${bytes} B at ${view.offset} overflows a buffer of ${view.buffer.bytes} B`);
    }
    return b;
  }
}

/**
 * A `webgpu` factory over `gpu()` (a `GPU` object: `navigator.gpu`, or a stand-in in tests). `probe()` is 2 on a
 * software adapter (lavapipe, SwiftShader, WARP), 5 on a hardware one: above the reference, below `wasm` (10), so
 * `auto` keeps the CPU until this backend runs every op; it throws what is missing when there is no WebGPU or no
 * adapter, and the registry repeats that for `--backend webgpu`.
 */
export function makeWebgpuFactory(gpu: () => GPU | undefined): BackendFactory {
  let probed: Promise<Found> | undefined;
  // The adapter is found once (the probe and `create` share it).
  const found = () => probed ??= findAdapter(gpu());
  return {
    name: "webgpu",
    async probe(): Promise<number> {
      return (await found()).fallback ? 2 : 5;
    },
    async create(options: WebGpuBackendOptions = {}): Promise<Backend> {
      const f = options.adapter
        ? { adapter: options.adapter, fallback: isFallback(options.adapter), description: describe(options.adapter) }
        : await found();
      const { adapter } = f, limits = adapter.limits;
      // shader-f16 where the adapter has it (f16 weights read as f16 vectors); core WGSL otherwise.
      const requiredFeatures: GPUFeatureName[] = adapter.features.has("shader-f16") ? ["shader-f16"] : [];
      if (options.profile && adapter.features.has("timestamp-query")) requiredFeatures.push("timestamp-query");
      const device = await adapter.requestDevice({
        requiredFeatures,
        requiredLimits: {
          maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
          maxBufferSize: limits.maxBufferSize,
          maxStorageBuffersPerShaderStage: Math.min(limits.maxStorageBuffersPerShaderStage, 10),
          maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
        },
      });
      const name = options.instance === undefined ? "webgpu" : `webgpu:${options.instance}`;
      return new WebGpuBackend(name, device, f, options);
    },
  };
}

/** Factory of the `webgpu` backend on `navigator.gpu` (see {@link makeWebgpuFactory}). */
export const webgpuBackend: BackendFactory = makeWebgpuFactory(() =>
  (globalThis.navigator as Navigator | undefined)?.gpu
);
