/**
 * The `reference` backend: runs any segment with the ops' pure-TypeScript references. Slow and exact — the oracle
 * every other backend is compared with. Memory is host `ArrayBuffer`s; float tensors are stored as f32 (weights
 * arrive dequantised), ids as i32.
 *
 * @example
 * ```ts
 * import { referenceBackend } from "./reference.ts";
 * const backend = await referenceBackend.create();
 * const view = { buffer: backend.alloc(16), offset: 0 };
 * backend.write(view, new Float32Array([1, 2, 3, 4]));
 * new Float32Array((await backend.read(view, 16)).buffer); // [1, 2, 3, 4]
 * ```
 *
 * @module
 */

import type { DType } from "../../graph/dtype.ts";
import { maxShape, type Node, numel, resolveShape, type TensorInfo, tensorTable, type Vars } from "../../graph/ir.ts";
import { REGISTRY } from "../../ops/mod.ts";
import type { RefData, RefTensor } from "../../ops/op.ts";
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
  type Prepared,
  refusedOps,
  type Segment,
  type SplitView,
  storageDType,
  type TensorView,
  type WeightSource,
  type WeightTarget,
} from "../backend.ts";
import { uploadChunks } from "../weight_upload.ts";
import { chunkToF32, scratchF32 } from "../../weights/chunks.ts";
import { rowElements } from "../../weights/source.ts";

const CAPS: BackendCaps = {
  alignment: 16,
  dtypes: ["f32", "i32"],
  promote: { bf16: "f32", f16: "f32", f8e4m3: "f32", nvfp4: "f32", q8: "f32", q4: "f32" },
  memoryBytes: Infinity,
  maxBindingBytes: Infinity,
  activationDType: "f32",
};

type ReferencePrepared = Prepared & { nodes: Node[]; table: TensorInfo[] };

class ReferenceBackend implements Backend {
  readonly name = "reference";
  readonly caps = CAPS;
  #buffers = new Map<number, ArrayBuffer>();
  #nextId = 1;
  #refuse: ReadonlySet<string>;

  constructor(options: BackendOptions) {
    this.#refuse = refusedOps(options, "reference");
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    return REGISTRY.has(node.op) && !this.#refuse.has(node.op) && canStore(CAPS, node.dtype) &&
      inputs.every((t) => canStore(CAPS, t.dtype));
  }

  weightBytes(shape: readonly number[], storage: DType): number {
    if (storage !== "f32" && storage !== "i32") throw new RangeError(`reference: weights are not stored as ${storage}`);
    return 4 * numel(shape);
  }

  /** Each chunk decoded to f32 (`storedWeight`'s values: what the graph's dtype represents). */
  uploadWeight(target: WeightTarget, source: WeightSource): Promise<void> {
    const per = rowElements(maxShape(target.decl.shape));
    return uploadChunks(target, source, (chunk, part, row) => {
      const values = chunk.dtype === "i32" ? chunk.data : chunkToF32(chunk, scratchF32(chunk.rows * per, 3));
      this.write({ buffer: part.view.buffer, offset: part.view.offset + 4 * row * per }, values);
    });
  }

  alloc(bytes: number): BufferHandle {
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const id = this.#nextId++;
    this.#buffers.set(id, new ArrayBuffer(bytes));
    return { backend: this.name, id, bytes };
  }

  free(buffer: BufferHandle): void {
    this.#buffers.delete(buffer.id);
  }

  write(view: TensorView, data: ArrayBufferView): void {
    this.#bytes(view, data.byteLength, "write").set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  read(view: TensorView, bytes: number): Promise<Uint8Array> {
    try {
      return Promise.resolve(this.#bytes(view, bytes, "read").slice());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  copy(src: TensorView, dst: TensorView, bytes: number): void {
    this.#bytes(dst, bytes, "copy").set(this.#bytes(src, bytes, "copy"));
  }

  fill(view: TensorView, bytes: number, value: number): void {
    this.#bytes(view, bytes, "fill").fill(value);
  }

  prepare(segment: Segment): Promise<Prepared> {
    const table = tensorTable(segment.graph);
    const byId = new Map(segment.graph.nodes.map((n) => [n.id, n]));
    const nodes = segment.nodes.map((id) => {
      const n = byId.get(id);
      if (!n) throw new Error(`segment node ${id} is not in the graph`);
      if (!this.supports(n, n.inputs.map((i) => table[i]))) {
        throw new Error(`reference: cannot run ${n.op} "${n.name}"`);
      }
      return n;
    });
    const prepared: ReferencePrepared = { segment, nodes, table };
    return Promise.resolve(prepared);
  }

  run(prepared: Prepared, bindings: Bindings, vars: Vars, _host: HostInputs): void {
    const { segment, nodes, table } = prepared as ReferencePrepared;
    for (const id of [...segment.inputs, ...segment.outputs]) {
      if (!bindings.has(id)) throw new Error(`run: tensor ${id} "${table[id].name}" is not bound`);
    }
    const live = new Map<number, RefTensor>();
    const get = (id: number): RefTensor => {
      const t = live.get(id) ?? this.#view(table[id], bindings.get(id), vars, false);
      live.set(id, t);
      return t;
    };
    for (const node of nodes) {
      const inputs = node.inputs.map(get);
      const out = this.#view(table[node.id], bindings.get(node.id), vars, true);
      try {
        REGISTRY.get(node.op)!.reference(inputs, out, node.attrs);
      } catch (e) {
        throw new Error(`reference: ${node.op} #${node.id} "${node.name}" failed: ${(e as Error).message}`);
      }
      live.set(node.id, out);
    }
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  dispose(): void {
    this.#buffers.clear();
  }

  #memory(buffer: BufferHandle): ArrayBuffer {
    const mem = buffer.backend === this.name ? this.#buffers.get(buffer.id) : undefined;
    if (!mem) throw new Error(`buffer ${buffer.backend}:${buffer.id} is not a live reference buffer`);
    return mem;
  }

  /** `bytes` bytes at `view`, checked against its buffer. */
  #bytes(view: TensorView, bytes: number, what: string): Uint8Array {
    const mem = this.#memory(view.buffer);
    if (!(view.offset >= 0 && bytes >= 0 && view.offset + bytes <= mem.byteLength)) {
      throw new RangeError(`${what} of ${bytes} B at ${view.offset} overflows buffer of ${mem.byteLength} B`);
    }
    return new Uint8Array(mem, view.offset, bytes);
  }

  /** A typed view on the bound memory of `t`, or (unbound: an intermediate) fresh scratch. */
  #view(t: TensorInfo, bound: TensorView | SplitView | undefined, vars: Vars, zero: boolean): RefTensor {
    if (bound && isSplit(bound)) throw new Error(`reference: ${t.name} is bound split, which it never asks for`);
    const view = bound;
    const shape = resolveShape(t.shape, vars);
    const n = numel(shape);
    const isInt = storageDType(CAPS, t.dtype) === "i32";
    if (!view) {
      if (!zero) throw new Error(`tensor ${t.id} "${t.name}" is read before it is computed or bound`);
      return { data: isInt ? new Int32Array(n) : new Float32Array(n), shape, dtype: t.dtype };
    }
    const mem = this.#memory(view.buffer);
    if (view.offset % 4 !== 0 || view.offset + 4 * n > mem.byteLength) {
      throw new RangeError(`tensor ${t.id} "${t.name}" (${4 * n} B at ${view.offset}) does not fit its buffer`);
    }
    const data: RefData = isInt ? new Int32Array(mem, view.offset, n) : new Float32Array(mem, view.offset, n);
    if (zero) data.fill(0);
    return { data, shape, dtype: t.dtype };
  }
}

/** Factory of the `reference` backend: always available, lowest preference. */
export const referenceBackend: BackendFactory = {
  name: "reference",
  probe: () => Promise.resolve(1),
  create: (options: BackendOptions = {}) => Promise.resolve(new ReferenceBackend(options)),
};
