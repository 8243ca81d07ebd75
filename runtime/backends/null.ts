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

import type { Node, TensorInfo, Vars } from "../../graph/ir.ts";
import type {
  Backend,
  BackendCaps,
  BackendFactory,
  Bindings,
  BufferHandle,
  Prepared,
  Segment,
  TensorView,
} from "../backend.ts";

/** One recorded call. */
export type NullCall =
  | { method: "alloc"; bytes: number; buffer: number }
  | { method: "free"; buffer: number }
  | { method: "write"; buffer: number; offset: number; bytes: number }
  | { method: "read"; buffer: number; offset: number; bytes: number }
  | { method: "prepare"; nodes: number[] }
  | { method: "run"; nodes: number[]; bindings: [number, TensorView][]; vars: Vars }
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
};

/** A null backend with its call log. */
export type NullBackend = Backend & { readonly calls: NullCall[] };

/** Creates a null backend. */
export function createNullBackend(options: NullBackendOptions = {}): NullBackend {
  const name = options.name ?? "null";
  const caps: BackendCaps = {
    alignment: 256,
    dtypes: ["f32", "bf16", "f16", "f8e4m3", "nvfp4", "q8", "i32", "u8"],
    promote: {},
    memoryBytes: Infinity,
    hostMemory: false,
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
    write(buffer, offset, data) {
      if (offset + data.byteLength > live(buffer)) throw new RangeError(`${name}: write overflows buffer`);
      calls.push({ method: "write", buffer: buffer.id, offset, bytes: data.byteLength });
    },
    read(buffer, offset, bytes) {
      if (offset + bytes > live(buffer)) return Promise.reject(new RangeError(`${name}: read overflows buffer`));
      calls.push({ method: "read", buffer: buffer.id, offset, bytes });
      return Promise.resolve(new Uint8Array(bytes));
    },
    prepare(segment: Segment) {
      calls.push({ method: "prepare", nodes: [...segment.nodes] });
      const prepared: Prepared = { segment };
      return Promise.resolve(prepared);
    },
    run(prepared: Prepared, bindings: Bindings, vars: Vars) {
      const { segment } = prepared;
      for (const id of [...segment.inputs, ...segment.outputs]) {
        if (!bindings.has(id)) throw new Error(`${name}: run with tensor ${id} unbound`);
      }
      calls.push({ method: "run", nodes: [...segment.nodes], bindings: [...bindings], vars: { ...vars } });
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
