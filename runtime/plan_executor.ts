/**
 * Runs a {@link Plan}: allocates each backend's arena once, uploads weights where the plan puts them, keeps state
 * (KV caches) resident across runs, prepares every segment once, and on each run uploads the inputs, executes the
 * segments in order with the copies between them, and reads the outputs back. Runs with different symbol values
 * (`T`, `S`, `R`…) within the plan's bucket reuse everything: nothing is prepared or allocated per step.
 *
 * Executors of several buckets of one model (prefill and decode plans) can share weights and state through one
 * {@link Residency}.
 *
 * @example
 * ```ts
 * import { PlanExecutor, Residency } from "./plan_executor.ts";
 * import { schedule } from "./schedule.ts";
 * // const residency = new Residency();
 * // const prefill = await PlanExecutor.create(prefillGraph, schedule(prefillGraph, backends), backends,
 * //   { weights, residency });
 * // const decode = await PlanExecutor.create(decodeGraph, schedule(decodeGraph, backends), backends,
 * //   { weights, residency });   // same weight and cache buffers
 * // await prefill.run({ inputs: { ids, pos, ... } });
 * // for (;;) await decode.run({ inputs: { ids: next, ... } });
 * ```
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { type Graph, numel, resolveShape, type Shape, type TensorInfo, tensorTable, type Vars } from "../graph/ir.ts";
import type { WeightDecl } from "../graph/ir.ts";
import {
  alignUp,
  type Backend,
  type BufferHandle,
  type Prepared,
  storageBytes,
  storageDType,
  type TensorView,
  weightBytes,
} from "./backend.ts";
import type { Location, Plan, PlanCopy } from "./schedule/plan.ts";
import { bytesToF32, f32ToBytes, type FloatDType } from "../weights/codecs.ts";

/** Host data for one tensor (Float32Array for float tensors on f32 storage, Int32Array for ids). */
export type HostArray = Float32Array | Int32Array | Uint8Array | Uint16Array;

/** Weights by canonical name, already in the storage format of every backend holding them. */
export type WeightMap = ReadonlyMap<string, ArrayBufferView>;

/**
 * Weights on demand, in the format `backend` stores `weight.dtype` as (`storage`: e.g. f32 on the reference for a
 * bf16 weight, see `caps.promote`; through `caps.weightLayout.encode` when the backend has one). Called once per
 * weight and backend holding it.
 */
export type WeightLoader = (
  weight: WeightDecl,
  storage: DType,
  backend: Backend,
) => ArrayBufferView | Promise<ArrayBufferView>;

/** Options of {@link PlanExecutor.create}. */
export type PlanExecutorOptions = {
  weights: WeightMap | WeightLoader;
  /** Weights and state shared with other executors (other buckets of the same model); owned by the caller. */
  residency?: Residency;
};

/**
 * One run: per-run inputs by name, symbol values (symbols left out are solved from input lengths), and the outputs
 * to read back (default every graph output). Outputs left out are still computed but never leave the backend: a
 * step that samples on the backend reads its ids, not the logits.
 */
export type RunOptions = { inputs: Record<string, ArrayBufferView>; vars?: Vars; outputs?: readonly string[] };

/**
 * Weight and state buffers by backend and name, shared by the executors given it: a prefill and a decode plan of
 * one model then hold one copy of the weights and one KV cache. Disposing it frees them.
 */
export class Residency {
  #buffers = new Map<string, { backend: Backend; buffer: BufferHandle; bytes: number }>();

  /** The buffer of `name` (a weight or state) on `backend`, allocating it with `init` the first time. */
  async acquire(
    kind: "weight" | "state",
    backend: Backend,
    name: string,
    bytes: number,
    init: (buffer: BufferHandle) => void | Promise<void>,
  ): Promise<BufferHandle> {
    const key = `${kind}\u0000${backend.name}\u0000${name}`;
    const held = this.#buffers.get(key);
    if (held) {
      if (held.bytes !== bytes) {
        throw new Error(`${kind} ${name} on ${backend.name}: ${bytes} B here, ${held.bytes} B held`);
      }
      return held.buffer;
    }
    const buffer = backend.alloc(alignUp(Math.max(bytes, 1), backend.caps.alignment));
    this.#buffers.set(key, { backend, buffer, bytes });
    await init(buffer);
    return buffer;
  }

  /** Frees every buffer held. */
  dispose(): void {
    for (const { backend, buffer } of this.#buffers.values()) backend.free(buffer);
    this.#buffers.clear();
  }
}

type Step = { copies: PreparedCopy[]; backend: Backend; prepared: Prepared; bindings: Map<number, TensorView> };
type PreparedCopy = PlanCopy & { source: Backend; target: Backend; srcView: TensorView; dstView: TensorView };

/** Runs one plan of one graph, keeping weights, state and prepared segments across runs. */
export class PlanExecutor {
  /** The graph the plan was made for. */
  readonly graph: Graph;
  /** The plan being run. */
  readonly plan: Plan;
  #backends: Map<string, Backend>;
  #table: TensorInfo[];
  #residency: Residency;
  #ownsResidency: boolean;
  #owned: { backend: Backend; buffer: BufferHandle }[] = [];
  #arenas = new Map<string, BufferHandle>();
  #buffers = new Map<string, BufferHandle>(); // "residence/backend/tensor" → buffer of its own
  #steps: Step[] = [];

  private constructor(graph: Graph, plan: Plan, backends: Map<string, Backend>, residency: Residency | undefined) {
    this.graph = graph;
    this.plan = plan;
    this.#backends = backends;
    this.#table = tensorTable(graph);
    this.#ownsResidency = !residency;
    this.#residency = residency ?? new Residency();
  }

  /** Allocates, uploads weights, zeroes new state and prepares every segment; `backends` must include the plan's. */
  static async create(
    graph: Graph,
    plan: Plan,
    backends: readonly Backend[],
    options: PlanExecutorOptions,
  ): Promise<PlanExecutor> {
    const byName = new Map(backends.map((b) => [b.name, b]));
    const absent = plan.backends.filter((b) => !byName.has(b));
    if (absent.length) throw new Error(`plan needs backends ${absent.join(", ")}, not given`);
    const { weights } = options;
    if (typeof weights !== "function") {
      const missing = graph.weights.filter((w) => !weights.has(w.name)).map((w) => w.name);
      if (missing.length) throw new Error(`missing weights: ${missing.join(", ")}`);
    }
    const ex = new PlanExecutor(graph, plan, byName, options.residency);
    try {
      await ex.#allocate(weights);
      await ex.#prepare();
    } catch (e) {
      ex.dispose();
      throw e;
    }
    return ex;
  }

  /** Runs the plan once; returns the graph outputs asked for (default all) by name. */
  async run(options: RunOptions): Promise<Record<string, HostArray>> {
    const wanted = options.outputs;
    for (const name of wanted ?? []) {
      if (!this.plan.outputs.some((o) => o.name === name)) throw new Error(`no graph output ${name}`);
    }
    const vars = solveVars(this.graph, options.inputs, options.vars ?? {});
    for (const i of this.graph.inputs) {
      if (i.state && i.name in options.inputs) throw new Error(`${i.name} is state: use writeState()`);
    }
    for (const input of this.plan.inputs) {
      const data = options.inputs[input.name];
      if (!data) throw new Error(`missing input ${input.name}`);
      const t = this.#table[input.tensor];
      for (const name of input.backends) {
        const backend = this.#backends.get(name)!;
        const bytes = storageBytes(backend.caps, t.shape, t.dtype, vars);
        if (data.byteLength !== bytes) {
          const shape = JSON.stringify(resolveShape(t.shape, vars));
          throw new Error(`input ${input.name}: ${data.byteLength} B given, ${bytes} B expected for shape ${shape}`);
        }
        backend.write(this.#buffer("input", name, input.tensor), 0, data);
      }
    }
    for (const step of this.#steps) {
      for (const copy of step.copies) await this.#copy(copy, vars);
      step.backend.run(step.prepared, step.bindings, vars);
    }
    await Promise.all(this.plan.backends.map((b) => this.#backends.get(b)!.sync()));
    const out: Record<string, HostArray> = {};
    for (const o of this.plan.outputs) {
      if (wanted && !wanted.includes(o.name)) continue;
      const view = this.#view(o.backend, o.tensor, { in: o.in, offset: 0 });
      out[o.name] = await this.#read(o.backend, view, this.#table[o.tensor].shape, this.#table[o.tensor].dtype, vars);
    }
    return out;
  }

  /** Overwrites a state tensor (e.g. restores a cache), from byte `offset`. */
  writeState(name: string, data: ArrayBufferView, offset = 0): void {
    const s = this.#state(name);
    this.#backends.get(s.backend)!.write(this.#buffer("state", s.backend, s.tensor), offset, data);
  }

  /** Reads a whole state tensor back. */
  readState(name: string): Promise<HostArray> {
    const s = this.#state(name), t = this.#table[s.tensor];
    return this.#read(
      s.backend,
      { buffer: this.#buffer("state", s.backend, s.tensor), offset: 0 },
      t.shape,
      t.dtype,
      {},
    );
  }

  /** Frees what this executor allocated (and the weights and state, unless a shared residency was given). */
  dispose(): void {
    for (const { backend, buffer } of this.#owned) backend.free(buffer);
    this.#owned = [];
    this.#arenas.clear();
    this.#buffers.clear();
    this.#steps = [];
    if (this.#ownsResidency) this.#residency.dispose();
  }

  async #allocate(weights: WeightMap | WeightLoader): Promise<void> {
    const own = (backend: Backend, bytes: number) => {
      const buffer = backend.alloc(alignUp(Math.max(bytes, 1), backend.caps.alignment));
      this.#owned.push({ backend, buffer });
      return buffer;
    };
    for (const name of this.plan.backends) {
      const bytes = this.plan.memory.perBackend[name].arenaBytes;
      if (bytes > 0) this.#arenas.set(name, own(this.#backends.get(name)!, bytes));
    }
    for (const w of this.plan.weights) {
      const decl = this.graph.weights.find((d) => d.id === w.tensor)!;
      for (const name of w.backends) {
        const backend = this.#backends.get(name)!;
        const bytes = weightBytes(backend.caps, decl.shape, decl.dtype);
        const buffer = await this.#residency.acquire("weight", backend, decl.name, bytes, async (buffer) => {
          const storage = storageDType(backend.caps, decl.dtype);
          const data = typeof weights === "function" ? await weights(decl, storage, backend) : weights.get(decl.name)!;
          if (data.byteLength !== bytes) {
            throw new Error(
              `weight ${decl.name}: ${data.byteLength} B given, ${bytes} B expected as ${storage} on ${name}`,
            );
          }
          backend.write(buffer, 0, data);
        });
        this.#buffers.set(`weight/${name}/${w.tensor}`, buffer);
      }
    }
    for (const s of this.plan.state) {
      const backend = this.#backends.get(s.backend)!, t = this.#table[s.tensor];
      const bytes = storageBytes(backend.caps, t.shape, t.dtype);
      const buffer = await this.#residency.acquire("state", backend, s.name, bytes, (b) => zeroFill(backend, b, bytes));
      this.#buffers.set(`state/${s.backend}/${s.tensor}`, buffer);
    }
    for (const i of this.plan.inputs) {
      for (const name of i.backends) {
        const backend = this.#backends.get(name)!, t = this.#table[i.tensor];
        this.#buffers.set(`input/${name}/${i.tensor}`, own(backend, storageBytes(backend.caps, t.shape, t.dtype)));
      }
    }
    for (const o of this.plan.outputs) {
      const key = `output/${o.backend}/${o.tensor}`;
      if (o.in !== "output" || this.#buffers.has(key)) continue;
      const backend = this.#backends.get(o.backend)!, t = this.#table[o.tensor];
      this.#buffers.set(key, own(backend, storageBytes(backend.caps, t.shape, t.dtype)));
    }
  }

  /** Prepares each segment once and resolves its bindings and copies to views: runs only look them up. */
  async #prepare(): Promise<void> {
    const copies = this.plan.segments.map(() => [] as PreparedCopy[]);
    for (const c of this.plan.copies) {
      copies[c.before].push({
        ...c,
        source: this.#backends.get(c.from)!,
        target: this.#backends.get(c.to)!,
        srcView: this.#view(c.from, c.tensor, c.src),
        dstView: this.#view(c.to, c.tensor, c.dst),
      });
    }
    for (const [i, s] of this.plan.segments.entries()) {
      const backend = this.#backends.get(s.backend)!;
      const segment = { graph: this.graph, nodes: s.nodes, inputs: s.inputs, outputs: s.outputs };
      const bindings = new Map(s.bindings.map((b) => [b.tensor, this.#view(s.backend, b.tensor, b)]));
      this.#steps.push({ copies: copies[i], backend, prepared: await backend.prepare(segment), bindings });
    }
  }

  async #copy(c: PreparedCopy, vars: Vars): Promise<void> {
    const t = this.#table[c.tensor];
    const bytes = storageBytes(c.source.caps, t.shape, t.dtype, vars);
    let data = await c.source.read(c.srcView.buffer, c.srcView.offset, bytes);
    if (c.fromDType !== c.toDType) {
      data = f32ToBytes(bytesToF32(data, c.fromDType as FloatDType), c.toDType as FloatDType);
    }
    c.target.write(c.dstView.buffer, c.dstView.offset, data);
  }

  #view(backend: string, tensor: number, where: Location): TensorView {
    if (where.in === "arena") {
      const buffer = this.#arenas.get(backend);
      if (!buffer) throw new Error(`plan: tensor ${tensor} in the arena of ${backend}, which has none`);
      return { buffer, offset: where.offset };
    }
    return { buffer: this.#buffer(where.in, backend, tensor), offset: 0 };
  }

  #buffer(residence: string, backend: string, tensor: number): BufferHandle {
    const buffer = this.#buffers.get(`${residence}/${backend}/${tensor}`);
    if (!buffer) throw new Error(`plan: no ${residence} buffer for tensor ${tensor} on ${backend}`);
    return buffer;
  }

  #state(name: string): { tensor: number; backend: string } {
    const s = this.plan.state.find((s) => s.name === name);
    if (!s) throw new Error(`no state tensor named ${name}`);
    return s;
  }

  async #read(backend: string, view: TensorView, shape: Shape, dtype: DType, vars: Vars): Promise<HostArray> {
    const b = this.#backends.get(backend)!;
    const raw = await b.read(view.buffer, view.offset, storageBytes(b.caps, shape, dtype, vars));
    return toHostArray(raw, storageDType(b.caps, dtype), numel(resolveShape(shape, vars)));
  }
}

/** Typed host view of `n` elements stored as `stored` (own, aligned memory). */
export function toHostArray(raw: Uint8Array, stored: DType, n: number): HostArray {
  const copy = raw.slice();
  if (stored === "f32") return new Float32Array(copy.buffer, 0, n);
  if (stored === "i32") return new Int32Array(copy.buffer, 0, n);
  if (stored === "bf16" || stored === "f16") return new Uint16Array(copy.buffer, 0, n);
  return copy;
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
