/**
 * The `null` backend: computes nothing and records every call, so scheduler and executor tests can check what
 * would happen (placement, copies, allocations, run order) without a device. Its `supports` and `caps` are
 * configurable to impersonate a real backend. `probe()` is 0: never chosen automatically.
 *
 * @example
 * ```ts
 * import { createNullBackend } from "./null.ts";
 * const gpu = createNullBackend({ name: "fake-gpu", ops: ["matmul", "rms_norm"] });
 * gpu.alloc(1024);
 * gpu.calls; // [{ method: "alloc", bytes: 1024, buffer: 1 }]
 * ```
 *
 * @module
 */

import { BITS_PER_ELEMENT } from "../../graph/dtype.ts";
import { type Node, numel, type TensorInfo, type Vars } from "../../graph/ir.ts";
import {
  type Backend,
  type BackendCaps,
  type BackendFactory,
  type Bindings,
  type BufferHandle,
  type HostInputs,
  OutOfMemoryError,
  type Prepared,
  type Segment,
  type SplitView,
  type TensorView,
} from "../backend.ts";

/** One recorded call (views as buffer id + offset). */
export type NullCall =
  | { method: "alloc"; bytes: number; buffer: number }
  | { method: "free"; buffer: number }
  | { method: "write"; buffer: number; offset: number; bytes: number }
  | { method: "read"; buffer: number; offset: number; bytes: number }
  | { method: "copy"; src: [number, number]; dst: [number, number]; bytes: number }
  | { method: "fill"; buffer: number; offset: number; bytes: number; value: number }
  | { method: "transfer"; src: [number, number]; to: string; dst: [number, number]; bytes: number }
  | {
    method: "uploadWeight";
    weight: string;
    /** Each part: buffer id, offset, first row, rows. */
    parts: [number, number, number, number][];
    consumers: number[];
    /** Chunks read from the source, and bytes of chunk data. */
    chunks: number;
    bytes: number;
  }
  | { method: "prepare"; nodes: number[] }
  | { method: "run"; nodes: number[]; bindings: [number, TensorView | SplitView][]; vars: Vars; host: number[] }
  | { method: "sync" }
  | { method: "dispose" };

/** How the null backend presents itself. */
export type NullBackendOptions = {
  name?: string;
  /** Ops it claims to support (all when omitted). */
  ops?: string[];
  /** Finer control than `ops`. */
  supports?: (node: Node, inputs: readonly TensorInfo[]) => boolean;
  caps?: Partial<BackendCaps>;
  /** Offer `transfer` (recorded, copies nothing) to backends whose name is listed. */
  transfersTo?: string[];
  /** `alloc` throws an `OutOfMemoryError` past this many bytes in use (a device that runs out). */
  oomAfterBytes?: number;
};

/** A null backend with its call log. */
export type NullBackend = Backend & { readonly calls: NullCall[] };

/** Creates a null backend. */
export function createNullBackend(options: NullBackendOptions = {}): NullBackend {
  const name = options.name ?? "null";
  const caps: BackendCaps = {
    alignment: 256,
    dtypes: ["f32", "bf16", "f16", "f8e4m3", "nvfp4", "q8", "q4", "i32", "u8"],
    promote: {},
    memoryBytes: Infinity,
    maxBindingBytes: Infinity,
    activationDType: "f32",
    ...options.caps,
  };
  const calls: NullCall[] = [];
  const sizes = new Map<number, number>();
  let next = 1;
  const live = (b: BufferHandle): number => {
    const size = b.backend === name ? sizes.get(b.id) : undefined;
    if (size === undefined) throw new Error(`${name}: buffer ${b.backend}:${b.id} is not live`);
    return size;
  };
  let used = 0;
  const at = (v: TensorView): [number, number] => [v.buffer.id, v.offset];
  const transfer = options.transfersTo
    ? (src: TensorView, to: Backend, dst: TensorView, bytes: number) => {
      if (!options.transfersTo!.includes(to.name)) return Promise.resolve(false);
      calls.push({ method: "transfer", src: at(src), to: to.name, dst: at(dst), bytes });
      return Promise.resolve(true);
    }
    : undefined;
  return {
    name,
    caps,
    calls,
    supports(node, inputs) {
      if (options.supports) return options.supports(node, inputs);
      return options.ops ? options.ops.includes(node.op) : true;
    },
    alloc(bytes) {
      if (used + bytes > caps.memoryBytes) throw new Error(`${name}: out of memory allocating ${bytes} B`);
      if (options.oomAfterBytes !== undefined && used + bytes > options.oomAfterBytes) {
        throw new OutOfMemoryError({ backend: name, requested: bytes, missing: used + bytes - options.oomAfterBytes });
      }
      const id = next++;
      sizes.set(id, bytes);
      used += bytes;
      calls.push({ method: "alloc", bytes, buffer: id });
      return { backend: name, id, bytes };
    },
    free(buffer) {
      used -= live(buffer);
      sizes.delete(buffer.id);
      calls.push({ method: "free", buffer: buffer.id });
    },
    weightBytes(shape, storage) {
      return Math.ceil((numel(shape) * BITS_PER_ELEMENT[storage]) / 8);
    },
    async uploadWeight(target, source, consumers) {
      for (const p of target.parts) {
        if (
          p.view.offset + this.weightBytes([p.rows, ...source.shape.slice(1)], target.storage) > live(p.view.buffer)
        ) {
          throw new RangeError(`${name}: weight ${target.decl.name} overflows its buffer`);
        }
      }
      let chunks = 0, bytes = 0;
      for (const p of target.parts) {
        const c = await source.read(p.row0, p.rows);
        chunks++;
        bytes += c.data.byteLength;
      }
      calls.push({
        method: "uploadWeight",
        weight: target.decl.name,
        parts: target.parts.map((p) => [p.view.buffer.id, p.view.offset, p.row0, p.rows]),
        consumers: consumers.map((n) => n.id),
        chunks,
        bytes,
      });
    },
    write(view, data) {
      if (view.offset + data.byteLength > live(view.buffer)) throw new RangeError(`${name}: write overflows buffer`);
      calls.push({ method: "write", buffer: view.buffer.id, offset: view.offset, bytes: data.byteLength });
    },
    read(view, bytes) {
      if (view.offset + bytes > live(view.buffer)) {
        return Promise.reject(new RangeError(`${name}: read overflows buffer`));
      }
      calls.push({ method: "read", buffer: view.buffer.id, offset: view.offset, bytes });
      return Promise.resolve(new Uint8Array(bytes));
    },
    copy(src, dst, bytes) {
      if (src.offset + bytes > live(src.buffer) || dst.offset + bytes > live(dst.buffer)) {
        throw new RangeError(`${name}: copy overflows a buffer`);
      }
      calls.push({ method: "copy", src: at(src), dst: at(dst), bytes });
    },
    fill(view, bytes, value) {
      if (view.offset + bytes > live(view.buffer)) throw new RangeError(`${name}: fill overflows buffer`);
      calls.push({ method: "fill", buffer: view.buffer.id, offset: view.offset, bytes, value });
    },
    transfer,
    prepare(segment: Segment) {
      calls.push({ method: "prepare", nodes: [...segment.nodes] });
      const prepared: Prepared = { segment };
      return Promise.resolve(prepared);
    },
    run(prepared: Prepared, bindings: Bindings, vars: Vars, host: HostInputs) {
      const { segment } = prepared;
      for (const id of [...segment.inputs, ...segment.outputs]) {
        if (!bindings.has(id)) throw new Error(`${name}: run with tensor ${id} unbound`);
      }
      calls.push({
        method: "run",
        nodes: [...segment.nodes],
        bindings: [...bindings],
        vars: { ...vars },
        host: [...host.keys()],
      });
    },
    sync() {
      calls.push({ method: "sync" });
      return Promise.resolve();
    },
    dispose() {
      sizes.clear();
      used = 0;
      calls.push({ method: "dispose" });
    },
  };
}

/** Factory of the default null backend (probe 0: only used when asked for by name). */
export const nullBackend: BackendFactory = {
  name: "null",
  probe: () => Promise.resolve(0),
  create: () => Promise.resolve(createNullBackend()),
};
