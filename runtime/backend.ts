/**
 * The backend plugin contract, whole. A backend owns memory (opaque buffers), compiles segments (a list of
 * nodes of one graph with their boundary tensors) and runs them against bound tensor views. The scheduler decides
 * which backend runs which segment, where every tensor lives (buffer + byte offset, from its memory plan), and
 * which copies move tensors between backends; a backend only follows the bindings it is given.
 *
 * Lifecycle: `probe()` → `create()` → `alloc`/`write` weights and state → `prepare(segment)` once per plan →
 * `run(prepared, bindings, vars)` every step → `read` outputs → `dispose()`.
 *
 * @example
 * ```ts
 * import { makeSegment, type BackendFactory } from "./backend.ts";
 * import { referenceBackend } from "./backends/reference.ts";
 * const factory: BackendFactory = referenceBackend;
 * if (await factory.probe() > 0) {
 *   const backend = await factory.create();
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
} from "../graph/ir.ts";

/** What a backend can hold and how its memory is laid out. */
export type BackendCaps = {
  /** Byte alignment every tensor offset inside a buffer must respect. */
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
  /** True when buffers are host memory (copies to and from the host are plain memcpy). */
  hostMemory: boolean;
  /**
   * How weights are laid out when not as plain elements of their stored dtype (e.g. quantisation scales stored
   * after the values). Absent: a weight is its elements, {@link storageBytes} long.
   */
  weightLayout?: WeightLayout;
};

/**
 * A loaded weight as the loader holds it (structurally `CanonicalWeight` of weights/load.ts): elements of
 * `dtype` in `data`, plus FP8 block scales or q8 per-32 scales in `scales`.
 */
export type WeightData = { shape: readonly number[]; dtype: DType; data: Uint8Array; scales?: Float32Array };

/**
 * A backend's own weight layout: its size, and the encoder the loader hands weights through. `dtype` is always a
 * stored dtype (see {@link storageDType}); the loader converts a weight to it before `encode`.
 */
export type WeightLayout = {
  /** Bytes a weight of concrete `shape` stored as `dtype` takes. */
  bytes(shape: readonly number[], dtype: DType): number;
  /** The stored bytes of `w` (`w.dtype` a stored dtype of this backend), exactly `bytes(w.shape, w.dtype)` long. */
  encode(w: WeightData): Uint8Array;
};

/** An opaque allocation on one backend. */
export type BufferHandle = { readonly backend: string; readonly id: number; readonly bytes: number };

/** Where a tensor lives: a buffer and a byte offset (aligned to `caps.alignment`); row-major, contiguous. */
export type TensorView = { buffer: BufferHandle; offset: number };

/** Tensor id → view, for one run. */
export type Bindings = ReadonlyMap<number, TensorView>;

/**
 * A unit of work for one backend: `nodes` (ids, in topological order) of `graph`. `inputs` are the tensors the
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
export type BackendOptions = { threads?: number; device?: number; memoryBytes?: number };

/** One execution target (reference, wasm, webgpu, cuda, onnx…). */
export interface Backend {
  /** The factory's name (`reference`, `wasm`, `cuda`…). */
  readonly name: string;
  /** Memory layout and dtypes. */
  readonly caps: BackendCaps;
  /** True when the backend can run `node` whose inputs are `inputs` (their stored dtypes matter: weights). */
  supports(node: Node, inputs: readonly TensorInfo[]): boolean;
  /** A new buffer of `bytes` bytes (contents undefined). Throws when memory is exhausted. */
  alloc(bytes: number): BufferHandle;
  /** Releases a buffer from `alloc`. */
  free(buffer: BufferHandle): void;
  /** Copies `data` into `buffer` at byte `offset` (queued in order with runs). */
  write(buffer: BufferHandle, offset: number, data: ArrayBufferView): void;
  /** Copies `bytes` bytes at `offset` back to the host, after all queued work. */
  read(buffer: BufferHandle, offset: number, bytes: number): Promise<Uint8Array>;
  /** Compiles a segment (kernels, pipelines); called once per plan, not per step. */
  prepare(segment: Segment): Promise<Prepared>;
  /** Queues one execution with symbolic dims bound by `vars`. Errors may surface here or at `sync`. */
  run(prepared: Prepared, bindings: Bindings, vars: Vars): void;
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

/** Bytes a weight takes on a backend: its `caps.weightLayout` when it has one, else {@link storageBytes}. */
export function weightBytes(caps: BackendCaps, shape: Shape, dtype: DType): number {
  const layout = caps.weightLayout;
  return layout ? layout.bytes(maxShape(shape), storageDType(caps, dtype)) : storageBytes(caps, shape, dtype);
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
