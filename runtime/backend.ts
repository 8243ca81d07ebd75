/**
 * The backend plugin contract, whole. A backend owns memory (opaque buffers), compiles segments (a list of
 * nodes of one graph with their boundary tensors) and runs them against bound tensor views. The scheduler decides
 * which backend runs which segment, where every tensor lives (buffer + byte offset, from its memory plan), and
 * which copies move tensors between backends; a backend only follows the bindings it is given.
 *
 * Nothing here assumes host memory: weights arrive as row-chunk streams (`uploadWeight`, which may repack or even
 * generate them on the device), state is cleared with `fill`, tensors move with `copy` inside a backend and
 * `transfer` between two, and the step's small integer inputs (positions, sequence indices, block tables) come to
 * `run` as host copies, so no kernel launch reads device memory to decide anything. Values computed on the device
 * (MoE routes) stay there.
 *
 * Lifecycle: `probe()` → `create()` → `alloc` + `uploadWeight` weights, `alloc` + `fill` state → `prepare(segment)`
 * once per plan → `write` inputs, `run(prepared, bindings, vars, host)` every step → `read` outputs → `dispose()`.
 *
 * @example
 * ```ts
 * import { makeSegment, type BackendFactory } from "./backend.ts";
 * import { referenceBackend } from "./backends/reference.ts";
 * const factory: BackendFactory = referenceBackend;
 * if (await factory.probe() > 0) {
 *   const backend = await factory.create();
 *   const buffer = backend.alloc(16);
 *   backend.write({ buffer, offset: 0 }, new Float32Array([1, 2, 3, 4]));
 *   backend.fill({ buffer, offset: 8 }, 8, 0); // [1, 2, 0, 0]
 *   // const prepared = await backend.prepare(makeSegment(graph, graph.nodes.map((n) => n.id)));
 *   backend.dispose();
 * }
 * ```
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { BITS_PER_ELEMENT } from "../graph/dtype.ts";
import {
  type Graph,
  maxShape,
  type Node,
  numel,
  resolveShape,
  type Shape,
  type TensorInfo,
  type Vars,
  type WeightDecl,
} from "../graph/ir.ts";
import type { WeightSource } from "../weights/source.ts";

export type { WeightChunk, WeightSource } from "../weights/source.ts";

/** What a backend can hold and how its memory is laid out. */
export type BackendCaps = {
  /** Byte alignment every tensor offset inside a buffer must respect (WebGPU: 256 for storage bindings). */
  alignment: number;
  /** Dtypes held natively in memory. */
  dtypes: readonly DType[];
  /**
   * How other dtypes are stored, e.g. the reference stores bf16/f8/nvfp4 weights dequantised as f32: the loader
   * must then hand over dequantised data. A dtype in neither list cannot live on this backend.
   */
  promote: Readonly<Partial<Record<DType, DType>>>;
  /** Bytes the backend may allocate (Infinity when unbounded host memory). */
  memoryBytes: number;
  /**
   * The largest view one kernel can bind (WebGPU's `maxStorageBufferBindingSize`; Infinity when any buffer can be
   * bound). The memory planner splits arenas into several buffers under it, and a weight over it into row ranges
   * of its leading dimension ({@link SplitView}).
   */
  maxBindingBytes: number;
  /**
   * How the graph's float activations (f32 node results) are stored: the plan sizes arenas by it and copies
   * convert between backends that differ. Graph dtypes stay f32; a backend computing in f16 says so here.
   */
  activationDType: "f32" | "f16" | "bf16";
};

/** An opaque allocation on one backend. */
export type BufferHandle = { readonly backend: string; readonly id: number; readonly bytes: number };

/** Where a tensor lives: a buffer and a byte offset (aligned to `caps.alignment`); row-major, contiguous. */
export type TensorView = { buffer: BufferHandle; offset: number };

/** One row range of a weight's leading dimension and the view holding it. */
export type WeightPart = { view: TensorView; row0: number; rows: number };

/** A weight larger than `caps.maxBindingBytes`, held as row ranges of its leading dimension, in row order. */
export type SplitView = { parts: readonly WeightPart[] };

/** Tensor id → where it is bound for one run (split views only for weights, only on backends that split). */
export type Bindings = ReadonlyMap<number, TensorView | SplitView>;

/** True when `v` is a weight split into row ranges. */
export function isSplit(v: TensorView | SplitView): v is SplitView {
  return "parts" in v;
}

/**
 * Host copies of a run's small integer inputs (every per-run `i32` graph input: token ids, positions, sequence
 * indices, block tables, logit rows, image rows…), by tensor id. They are also bound on the device as usual;
 * these copies are for decisions (attention runs, index checks) that must not read device memory.
 */
export type HostInputs = ReadonlyMap<number, Int32Array>;

/** Where `uploadWeight` writes one weight: its declaration, the dtype it is stored as here, and its part(s). */
export type WeightTarget = {
  decl: WeightDecl;
  /** `storageDType(caps, decl.dtype)`. */
  storage: DType;
  /** One part covering every row, unless the weight is split ({@link SplitView}). */
  parts: readonly WeightPart[];
};

/**
 * A segment is a unit of work for one backend: `nodes` (ids, in topological order) of `graph`. `inputs` are the tensors the
 * nodes read but do not produce (graph inputs, state, weights, other segments' results); `outputs` are the results
 * needed after the segment. Both must be bound at `run`; any other tensor of the segment may be bound too (the
 * memory plan), else the backend keeps it in scratch memory of its own.
 */
export type Segment = { graph: Graph; nodes: number[]; inputs: number[]; outputs: number[] };

/** A compiled segment; backends extend it with their own state. */
export interface Prepared {
  /** The segment this was compiled from. */
  readonly segment: Segment;
}

/** Options every backend factory accepts (each may ignore what does not apply). */
export type BackendOptions = {
  threads?: number;
  device?: number;
  memoryBytes?: number;
  /**
   * Ops a backend must refuse (its `supports` answers false for them), by backend name (`wasm`, or one instance
   * `wasm:1`): forces fallbacks in tests and lets a user keep an op family elsewhere.
   */
  refuseOps?: Readonly<Record<string, readonly string[]>>;
  /**
   * One of several instances of this backend (`wasm:0`, `wasm:1`…: each its own memory and threads), for a model
   * larger than one instance holds; the scheduler places them as separate backends. Factories without instances
   * ignore it.
   */
  instance?: number;
};

/** One execution target (reference, wasm, webgpu, cuda, onnx…). */
export interface Backend {
  /** The instance name (`reference`, `wasm`, `wasm:1`, `cuda`…). */
  readonly name: string;
  /** Memory layout and dtypes. */
  readonly caps: BackendCaps;
  /**
   * Resolves with a {@link DeviceLostError} when the backend's device is lost under it (never because of its own
   * `dispose()`), so a server can stop serving before the next call fails; absent where memory cannot be lost (CPU).
   */
  readonly lost?: Promise<DeviceLostError>;
  /** True when the backend can run `node` whose inputs are `inputs` (their stored dtypes and kinds matter). */
  supports(node: Node, inputs: readonly TensorInfo[]): boolean;
  /** Bytes a weight of concrete `shape` stored as `storage` (a stored dtype, see {@link storageDType}) takes here. */
  weightBytes(shape: readonly number[], storage: DType): number;
  /**
   * A new buffer of `bytes` bytes (contents undefined). Throws {@link OutOfMemoryError} when the backend knows at
   * once that it has no room; a device that learns it later rejects the next `uploadWeight` or `sync` instead.
   */
  alloc(bytes: number): BufferHandle;
  /** Releases a buffer from `alloc`. */
  free(buffer: BufferHandle): void;
  /**
   * Fills `target` with the weight `source` gives (already in `target.decl.dtype`), reading its row chunks in
   * order and encoding them into this backend's layout (repacking for `consumers`, the nodes reading it, as it
   * likes). A source with a `random` recipe may instead be generated on the device, bit-identical. Rejects with
   * {@link OutOfMemoryError} naming the tensor when the device runs out, and with the source's error otherwise.
   */
  uploadWeight(target: WeightTarget, source: WeightSource, consumers: readonly Node[]): Promise<void>;
  /** Copies `data` to `view`, queued in order with runs. The data is taken at once: the caller may reuse it. */
  write(view: TensorView, data: ArrayBufferView): void;
  /** `bytes` bytes at `view`, after all queued work, in a new buffer of their own (one copy). */
  read(view: TensorView, bytes: number): Promise<Uint8Array>;
  /** Copies `bytes` bytes from `src` to `dst` (both on this backend), queued in order with runs. */
  copy(src: TensorView, dst: TensorView, bytes: number): void;
  /** Sets `bytes` bytes at `view` to the byte `value`, queued in order with runs. */
  fill(view: TensorView, bytes: number, value: number): void;
  /**
   * A direct copy of `bytes` bytes from `src` here to `dst` on `to`, when this backend has one for that target
   * (e.g. two wasm instances: one memcpy); returns false when it has none, and the executor reads then writes.
   */
  transfer?(src: TensorView, to: Backend, dst: TensorView, bytes: number): Promise<boolean>;
  /** Compiles a segment (kernels, pipelines); called once per plan, not per step. */
  prepare(segment: Segment): Promise<Prepared>;
  /**
   * Queues one execution with symbolic dims bound by `vars` and the run's integer inputs on the host (`host`).
   * Errors may surface here or at `sync`.
   */
  run(prepared: Prepared, bindings: Bindings, vars: Vars, host: HostInputs): void;
  /** Resolves when all queued work is done. */
  sync(): Promise<void>;
  /** Releases every buffer and compiled segment. */
  dispose(): void;
}

/** How a backend is discovered and created. */
export interface BackendFactory {
  /** The name `--backend` selects it by. */
  readonly name: string;
  /** 0 = unavailable here; otherwise a preference (higher wins when choosing automatically). */
  probe(): Promise<number>;
  /** A ready backend instance. */
  create(options?: BackendOptions): Promise<Backend>;
}

/** A backend ran out of memory: names the backend, the tensor when known, and how many bytes are missing. */
export class OutOfMemoryError extends RangeError {
  /** The backend's instance name. */
  readonly backend: string;
  /** The tensor being placed, when known. */
  readonly tensor?: string;
  /** Bytes asked for. */
  readonly requested: number;
  /** Bytes that would have been needed beyond what was free (≤ requested; requested when unknown). */
  readonly missing: number;

  /** Says what to change (a smaller dtype, fewer sequences, another backend). */
  readonly detail?: string;

  /** `detail` says what to change. */
  constructor(o: { backend: string; tensor?: string; requested: number; missing?: number; detail?: string }) {
    const missing = o.missing ?? o.requested;
    super(
      `${o.tensor ? `${o.tensor}: ` : ""}out of memory on ${o.backend}: ${o.requested} B asked for, ${missing} B ` +
        `missing${o.detail ? `. ${o.detail}` : ""}`,
    );
    this.name = "OutOfMemoryError";
    this.backend = o.backend;
    this.tensor = o.tensor;
    this.requested = o.requested;
    this.missing = missing;
    this.detail = o.detail;
  }

  /** The same error, naming `tensor`. */
  forTensor(tensor: string): OutOfMemoryError {
    return new OutOfMemoryError({ ...this, tensor, detail: this.detail });
  }
}

/**
 * A backend's device is gone (a GPU reset, a driver or GPU-process crash, the device destroyed by someone else): the
 * call that found it, and every later one, fails with this. Nothing on the device survives, so the process must
 * start again; an engine that sees it stops serving (the server answers 503 `device_lost`).
 */
export class DeviceLostError extends Error {
  /** The backend's instance name. */
  readonly backend: string;
  /** The backend call that found the device gone (`run`, `read`, `sync`, `alloc`…), or `device.lost` (its watcher). */
  readonly call: string;
  /** The device's own words (WebGPU's `GPUDeviceLostInfo` reason and message). */
  readonly reason: string;

  /** Says which backend, in which call, and what to do. */
  constructor(o: { backend: string; call: string; reason: string }) {
    super(
      `${o.backend}: the GPU device was lost (${o.reason}), seen by ${o.call}; nothing on it survives: restart ` +
        `the process (or the server) to recover`,
    );
    this.name = "DeviceLostError";
    this.backend = o.backend;
    this.call = o.call;
    this.reason = o.reason;
  }
}

/** The {@link DeviceLostError} `e` is or was caused by (a backend's error may wrap it), else undefined. */
export function deviceLost(e: unknown): DeviceLostError | undefined {
  for (let c = e, depth = 0; c instanceof Error && depth < 8; c = c.cause, depth++) {
    if (c instanceof DeviceLostError) return c;
  }
  return undefined;
}

/** The dtype `dtype` is stored as on a backend with `caps`; throws when it cannot be stored. */
export function storageDType(caps: BackendCaps, dtype: DType): DType {
  if (caps.dtypes.includes(dtype)) return dtype;
  const p = caps.promote[dtype];
  if (p === undefined) throw new Error(`dtype ${dtype} cannot be stored (holds ${caps.dtypes.join(", ")})`);
  return p;
}

/** True when `dtype` can be stored on a backend with `caps`. */
export function canStore(caps: BackendCaps, dtype: DType): boolean {
  return caps.dtypes.includes(dtype) || caps.promote[dtype] !== undefined;
}

/** Bytes a tensor takes on a backend: under `vars`, or at its largest (every symbol at max) without. */
export function storageBytes(caps: BackendCaps, shape: Shape, dtype: DType, vars?: Vars): number {
  const n = numel(vars ? resolveShape(shape, vars) : maxShape(shape));
  return Math.ceil((n * BITS_PER_ELEMENT[storageDType(caps, dtype)]) / 8);
}

/**
 * Bytes a graph tensor that is not a weight takes on a backend with `caps`: float node results (activations) at
 * `caps.activationDType`, everything else (inputs, state, ids) at its stored dtype; under `vars`, or at its largest.
 */
export function tensorBytes(caps: BackendCaps, t: Pick<TensorInfo, "kind" | "shape" | "dtype">, vars?: Vars): number {
  const dtype = t.kind === "node" && t.dtype === "f32" ? caps.activationDType : t.dtype;
  return storageBytes(caps, t.shape, dtype, vars);
}

/** The dtype a graph tensor that is not a weight is stored as on a backend with `caps` (see {@link tensorBytes}). */
export function tensorDType(caps: BackendCaps, t: Pick<TensorInfo, "kind" | "dtype">): DType {
  return t.kind === "node" && t.dtype === "f32" ? caps.activationDType : storageDType(caps, t.dtype);
}

/** Bytes a weight declared as `shape`/`dtype` takes on `backend` (at its largest shape). */
export function weightBytes(backend: Backend, shape: Shape, dtype: DType): number {
  return backend.weightBytes(maxShape(shape), storageDType(backend.caps, dtype));
}

/** The backend kind of an instance name: `wasm` for `wasm:1`. */
export function kindOf(name: string): string {
  const i = name.indexOf(":");
  return i < 0 ? name : name.slice(0, i);
}

/** The ops `options.refuseOps` asks the backend instance `name` (or its kind: `wasm` for `wasm:1`) to refuse. */
export function refusedOps(options: BackendOptions, name: string): Set<string> {
  const kind = kindOf(name);
  return new Set([...options.refuseOps?.[kind] ?? [], ...(kind !== name ? options.refuseOps?.[name] ?? [] : [])]);
}

/** `n` rounded up to a multiple of `alignment`. */
export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** The segment made of `nodeIds` of `graph`, with its boundary tensors computed. */
export function makeSegment(graph: Graph, nodeIds: readonly number[]): Segment {
  const inside = new Set(nodeIds);
  const order = graph.nodes.filter((n) => inside.has(n.id));
  if (order.length !== inside.size) throw new Error("makeSegment: some node ids are not nodes of the graph");
  const inputs = new Set<number>();
  for (const n of order) for (const i of n.inputs) if (!inside.has(i)) inputs.add(i);
  const needed = new Set(graph.outputs.map((o) => o.id));
  for (const n of graph.nodes) if (!inside.has(n.id)) { for (const i of n.inputs) needed.add(i); }
  const outputs = order.filter((n) => needed.has(n.id)).map((n) => n.id);
  return { graph, nodes: order.map((n) => n.id), inputs: [...inputs], outputs };
}
