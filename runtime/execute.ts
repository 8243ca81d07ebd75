/**
 * The simplest executor: the whole graph as one segment on one backend, until the scheduler exists. Weights are
 * uploaded once; every input and output gets a buffer sized for its largest shape, reused across runs; state
 * tensors (KV caches) live on the backend between runs, so prefill then decode share one cache.
 *
 * @example
 * ```ts
 * import { Executor, runGraph } from "./execute.ts";
 * import { referenceBackend } from "./backends/reference.ts";
 * // one-shot:
 * // const backend = await referenceBackend.create();
 * // const { logits } = await runGraph(graph, backend, { weights, inputs: { ids }, vars: { T: 3 } });
 * // stateful:
 * // const ex = await Executor.create(graph, backend, { weights });
 * // await ex.run({ inputs: prefillInputs });  await ex.run({ inputs: decodeInputs });
 * ```
 *
 * @module
 */

import { type Graph, type InputDecl, numel, resolveShape, type Shape, tensorTable, type Vars } from "../graph/ir.ts";
import {
  alignUp,
  type Backend,
  type BufferHandle,
  makeSegment,
  type Prepared,
  storageBytes,
  storageDType,
  type TensorView,
} from "./backend.ts";

/** Host data for one tensor (Float32Array for float tensors on f32 storage, Int32Array for ids). */
export type HostArray = Float32Array | Int32Array | Uint8Array | Uint16Array;

/** Weights by canonical name, in the backend's storage format (dequantised f32 for `reference`). */
export type WeightMap = ReadonlyMap<string, ArrayBufferView>;

/** Options of {@link Executor.create}. */
export type ExecutorOptions = { weights: WeightMap };

/** One run: per-run inputs by name and symbol values (symbols left out are solved from input lengths). */
export type RunOptions = { inputs: Record<string, ArrayBufferView>; vars?: Vars };

/** Runs one graph on one backend, keeping weights and state resident. */
export class Executor {
  /** The graph this executor runs. */
  readonly graph: Graph;
  /** Where it runs. */
  readonly backend: Backend;
  #prepared: Prepared;
  #views = new Map<number, TensorView>();
  #buffers: BufferHandle[] = [];

  private constructor(graph: Graph, backend: Backend, prepared: Prepared) {
    this.graph = graph;
    this.backend = backend;
    this.#prepared = prepared;
  }

  /** Uploads weights, allocates zeroed state and I/O buffers, and prepares the graph. */
  static async create(graph: Graph, backend: Backend, options: ExecutorOptions): Promise<Executor> {
    const ex = new Executor(graph, backend, await backend.prepare(makeSegment(graph, graph.nodes.map((n) => n.id))));
    try {
      const missing = graph.weights.filter((w) => !options.weights.has(w.name)).map((w) => w.name);
      if (missing.length) throw new Error(`missing weights: ${missing.join(", ")}`);
      for (const w of graph.weights) {
        const data = options.weights.get(w.name)!;
        const bytes = storageBytes(backend.caps, w.shape, w.dtype);
        if (data.byteLength !== bytes) {
          throw new Error(`weight ${w.name}: ${data.byteLength} B given, ${bytes} B expected on ${backend.name}`);
        }
        backend.write(ex.#bind(w.id, bytes), 0, data);
      }
      for (const i of graph.inputs) {
        const bytes = storageBytes(backend.caps, i.shape, i.dtype);
        const buffer = ex.#bind(i.id, bytes);
        if (i.state) zeroFill(backend, buffer, bytes);
      }
      const table = tensorTable(graph);
      for (const o of graph.outputs) {
        if (!ex.#views.has(o.id)) ex.#bind(o.id, storageBytes(backend.caps, table[o.id].shape, table[o.id].dtype));
      }
    } catch (e) {
      ex.dispose();
      throw e;
    }
    return ex;
  }

  /** Runs the graph once; returns every graph output by name. */
  async run(options: RunOptions): Promise<Record<string, HostArray>> {
    const { graph, backend } = this;
    const vars = solveVars(graph, options.inputs, options.vars ?? {});
    for (const i of graph.inputs) {
      if (i.state) {
        if (i.name in options.inputs) throw new Error(`${i.name} is state: use writeState()`);
        continue;
      }
      const data = options.inputs[i.name];
      if (!data) throw new Error(`missing input ${i.name}`);
      const bytes = storageBytes(backend.caps, i.shape, i.dtype, vars);
      if (data.byteLength !== bytes) {
        throw new Error(
          `input ${i.name}: ${data.byteLength} B given, ${bytes} B expected for shape ${
            JSON.stringify(resolveShape(i.shape, vars))
          }`,
        );
      }
      backend.write(this.#views.get(i.id)!.buffer, 0, data);
    }
    backend.run(this.#prepared, this.#views, vars);
    await backend.sync();
    const table = tensorTable(graph);
    const out: Record<string, HostArray> = {};
    for (const o of graph.outputs) {
      out[o.name] = await this.#read(o.id, table[o.id].shape, table[o.id].dtype, vars);
    }
    return out;
  }

  /** Overwrites a state tensor (e.g. restores a cache), from byte `offset`. */
  writeState(name: string, data: ArrayBufferView, offset = 0): void {
    this.backend.write(this.#views.get(this.#state(name).id)!.buffer, offset, data);
  }

  /** Reads a whole state tensor back. */
  readState(name: string): Promise<HostArray> {
    const s = this.#state(name);
    return this.#read(s.id, s.shape, s.dtype, {});
  }

  /** Frees every buffer this executor allocated. */
  dispose(): void {
    for (const b of this.#buffers) this.backend.free(b);
    this.#buffers = [];
    this.#views.clear();
  }

  #bind(id: number, bytes: number): BufferHandle {
    const buffer = this.backend.alloc(alignUp(Math.max(bytes, 1), this.backend.caps.alignment));
    this.#buffers.push(buffer);
    this.#views.set(id, { buffer, offset: 0 });
    return buffer;
  }

  #state(name: string): InputDecl {
    const s = this.graph.inputs.find((i) => i.name === name && i.state);
    if (!s) throw new Error(`no state tensor named ${name}`);
    return s;
  }

  async #read(id: number, shape: Shape, dtype: Parameters<typeof storageDType>[1], vars: Vars): Promise<HostArray> {
    const stored = storageDType(this.backend.caps, dtype);
    const bytes = storageBytes(this.backend.caps, shape, dtype, vars);
    const raw = await this.backend.read(this.#views.get(id)!.buffer, 0, bytes);
    const n = numel(resolveShape(shape, vars));
    const copy = raw.slice(); // own, aligned memory
    if (stored === "f32") return new Float32Array(copy.buffer, 0, n);
    if (stored === "i32") return new Int32Array(copy.buffer, 0, n);
    if (stored === "bf16" || stored === "f16") return new Uint16Array(copy.buffer, 0, n);
    return copy;
  }
}

/** Options of {@link runGraph}: `state` arrays are uploaded before the run and overwritten with the result. */
export type RunGraphOptions = ExecutorOptions & RunOptions & { state?: Record<string, HostArray> };

/**
 * Runs `graph` once on `backend` and returns its outputs by name. State tensors passed in `state` are copied in
 * and written back, so a caller can carry a cache from call to call; for many steps prefer {@link Executor}.
 */
export async function runGraph(
  graph: Graph,
  backend: Backend,
  options: RunGraphOptions,
): Promise<Record<string, HostArray>> {
  const ex = await Executor.create(graph, backend, options);
  try {
    for (const [name, data] of Object.entries(options.state ?? {})) ex.writeState(name, data);
    const out = await ex.run(options);
    for (const [name, data] of Object.entries(options.state ?? {})) data.set((await ex.readState(name)) as never);
    return out;
  } finally {
    ex.dispose();
  }
}

/** Binds symbols not given in `vars` from the lengths of inputs that have exactly one unknown symbol. */
export function solveVars(graph: Graph, inputs: Record<string, ArrayBufferView>, vars: Vars): Vars {
  const out = { ...vars };
  for (let changed = true; changed;) {
    changed = false;
    for (const i of graph.inputs) {
      const data = inputs[i.name];
      if (i.state || !data || !("length" in data)) continue;
      const unknown = i.shape.filter((d) => typeof d === "object" && out[d.sym] === undefined);
      const syms = new Set(unknown.map((d) => (d as { sym: string }).sym));
      if (syms.size !== 1 || unknown.length !== 1) continue;
      const known = numel(i.shape.map((d) => typeof d === "number" ? d : out[d.sym] ?? 1));
      const length = (data as unknown as ArrayLike<number>).length;
      if (known === 0 || length % known !== 0) continue;
      out[[...syms][0]] = length / known;
      changed = true;
    }
  }
  return out;
}

function zeroFill(backend: Backend, buffer: BufferHandle, bytes: number): void {
  const chunk = new Uint8Array(Math.min(bytes, 1 << 20));
  for (let o = 0; o < bytes; o += chunk.length) {
    backend.write(buffer, o, chunk.subarray(0, Math.min(chunk.length, bytes - o)));
  }
}
