/**
 * Runs a {@link Plan}: allocates each backend's arenas once, streams weights where the plan puts them (each from a
 * {@link WeightSource}, chunk by chunk, through `uploadWeight`), keeps state (KV caches) resident across runs,
 * prepares every segment once, and on each run uploads the inputs, executes the segments in order with the copies
 * between them (`transfer` where a backend has a direct path, else read then write), and reads the outputs back.
 * Each backend's `run` gets host copies of the run's integer inputs. Runs with different symbol values
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
import {
  type Graph,
  maxShape,
  type Node,
  numel,
  resolveShape,
  type TensorInfo,
  tensorTable,
  type Vars,
  type WeightDecl,
} from "../graph/ir.ts";
import {
  alignUp,
  type Backend,
  type BufferHandle,
  type HostInputs,
  isSplit,
  OutOfMemoryError,
  type Prepared,
  type SplitView,
  tensorBytes,
  tensorDType,
  type TensorView,
  weightBytes,
  type WeightPart,
  type WeightSource,
} from "./backend.ts";
import type { Location, Plan, PlanCopy } from "./schedule/plan.ts";
import { bytesToF32, f32ToBytes, type FloatDType } from "../weights/codecs.ts";
import { codeBytes } from "../weights/chunks.ts";
import { memorySource } from "../weights/memory_source.ts";

/** Host data for one tensor (Float32Array for float tensors on f32 storage, Int32Array for ids). */
export type HostArray = Float32Array | Int32Array | Uint8Array | Uint16Array;

/**
 * Where weights come from: a source per weight (called once per weight and backend holding it, so each upload
 * reads its own stream), or a map by canonical name of sources or of plain element arrays in the declared dtype
 * (a Float32Array of values is also accepted for any float dtype and converted: tests and small graphs).
 */
export type WeightSources =
  | ((decl: WeightDecl) => WeightSource | Promise<WeightSource>)
  | ReadonlyMap<string, WeightSource | ArrayBufferView>;

/** Options of {@link PlanExecutor.create}. */
export type PlanExecutorOptions = {
  weights: WeightSources;
  /** Weights and state shared with other executors (other buckets of the same model); owned by the caller. */
  residency?: Residency;
  /**
   * One set of arenas for every executor given the same `key` (through the same residency), for executors that
   * never run at the same time (the vision encoder's stages): `bytes` per backend, each arena at least what the
   * plan asks (`sharedArenaBytes` of all their plans).
   */
  sharedArenas?: { key: string; bytes: Readonly<Record<string, readonly number[]>> };
};

/**
 * Arena sizes that serve each of `plans` (per backend, each arena the largest any plan asks): for executors sharing
 * arenas (`PlanExecutorOptions.sharedArenas`).
 */
export function sharedArenaBytes(plans: readonly Plan[]): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const p of plans) {
    for (const [name, m] of Object.entries(p.memory.perBackend)) {
      const sizes = out[name] ??= [];
      m.arenas.forEach((b, i) => sizes[i] = Math.max(sizes[i] ?? 0, b));
    }
  }
  return out;
}

/**
 * One run: per-run inputs by name, symbol values (symbols left out are solved from input lengths), and the outputs
 * to read back (default every graph output). Outputs left out are still computed but never leave the backend: a
 * step that samples on the backend reads its ids, not the logits. The integer inputs are handed to the backends as
 * they are (their host copies): do not change them until `run` resolves.
 */
export type RunOptions = { inputs: Record<string, ArrayBufferView>; vars?: Vars; outputs?: readonly string[] };

/**
 * Weight and state buffers by backend and name, shared by the executors given it: a prefill and a decode plan of
 * one model then hold one copy of the weights and one KV cache. Disposing it frees them.
 */
export class Residency {
  #held = new Map<string, { backend: Backend; buffers: BufferHandle[]; sizes: string }>();

  /**
   * The buffers of `name` (a weight, state, or shared arenas) on `backend`, one per size in `sizes` (a split weight has several),
   * allocating them and running `init` the first time. If `init` fails they are freed and the error rethrown.
   */
  async acquire(
    kind: "weight" | "state" | "arena",
    backend: Backend,
    name: string,
    sizes: readonly number[],
    init: (buffers: BufferHandle[]) => void | Promise<void>,
  ): Promise<BufferHandle[]> {
    const key = `${kind}\u0000${backend.name}\u0000${name}`, sig = sizes.join(",");
    const held = this.#held.get(key);
    if (held) {
      if (held.sizes !== sig) {
        throw new Error(`${kind} ${name} on ${backend.name}: [${sig}] B here, [${held.sizes}] B held`);
      }
      return held.buffers;
    }
    const buffers: BufferHandle[] = [];
    try {
      for (const bytes of sizes) buffers.push(backend.alloc(alignUp(Math.max(bytes, 1), backend.caps.alignment)));
      await init(buffers);
    } catch (e) {
      for (const b of buffers) backend.free(b);
      throw e instanceof OutOfMemoryError && !e.tensor ? e.forTensor(`${kind} ${name}`) : e;
    }
    this.#held.set(key, { backend, buffers, sizes: sig });
    return buffers;
  }

  /** Frees every buffer held. */
  dispose(): void {
    for (const { backend, buffers } of this.#held.values()) for (const b of buffers) backend.free(b);
    this.#held.clear();
  }
}

type Step = {
  copies: PreparedCopy[];
  backend: Backend;
  prepared: Prepared;
  bindings: Map<number, TensorView | SplitView>;
};
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
  #arenas = new Map<string, BufferHandle[]>();
  #buffers = new Map<string, BufferHandle>(); // "residence/backend/tensor" → buffer of its own
  #weights = new Map<string, SplitView>(); // "backend/tensor" → the weight's part(s)
  #steps: Step[] = [];
  #hostIds: { name: string; tensor: number }[];

  private constructor(graph: Graph, plan: Plan, backends: Map<string, Backend>, residency: Residency | undefined) {
    this.graph = graph;
    this.plan = plan;
    this.#backends = backends;
    this.#table = tensorTable(graph);
    this.#ownsResidency = !residency;
    this.#residency = residency ?? new Residency();
    this.#hostIds = plan.inputs.filter((i) => this.#table[i.tensor].dtype === "i32");
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
      await ex.#allocate(weights, options.sharedArenas);
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
        const bytes = tensorBytes(backend.caps, t, vars);
        if (data.byteLength !== bytes) {
          const shape = JSON.stringify(resolveShape(t.shape, vars));
          throw new Error(`input ${input.name}: ${data.byteLength} B given, ${bytes} B expected for shape ${shape}`);
        }
        backend.write({ buffer: this.#buffer("input", name, input.tensor), offset: 0 }, data);
      }
    }
    const host = this.#hostInputs(options.inputs);
    for (const step of this.#steps) {
      for (const copy of step.copies) await this.#copy(copy, vars);
      step.backend.run(step.prepared, step.bindings, vars, host);
    }
    // A backend an output is read from needs no sync: `read` comes after all its queued work, so a GPU step is one
    // submit and one read-back. The others are synced, so their errors surface here.
    const reads = new Set(this.plan.outputs.filter((o) => !wanted || wanted.includes(o.name)).map((o) => o.backend));
    await Promise.all(this.plan.backends.filter((b) => !reads.has(b)).map((b) => this.#backends.get(b)!.sync()));
    const out: Record<string, HostArray> = {};
    for (const o of this.plan.outputs) {
      if (wanted && !wanted.includes(o.name)) continue;
      const view = this.#view(o.backend, o.tensor, { in: o.in, offset: 0 });
      out[o.name] = await this.#read(o.backend, view, this.#table[o.tensor], vars);
    }
    return out;
  }

  /** Overwrites a state tensor (e.g. restores a cache), from byte `offset`. */
  writeState(name: string, data: ArrayBufferView, offset = 0): void {
    const s = this.#state(name);
    this.#backends.get(s.backend)!.write({ buffer: this.#buffer("state", s.backend, s.tensor), offset }, data);
  }

  /** Reads a whole state tensor back. */
  readState(name: string): Promise<HostArray> {
    const s = this.#state(name);
    const view = { buffer: this.#buffer("state", s.backend, s.tensor), offset: 0 };
    return this.#read(s.backend, view, this.#table[s.tensor], {});
  }

  /** Frees what this executor allocated (and the weights and state, unless a shared residency was given). */
  dispose(): void {
    for (const { backend, buffer } of this.#owned) backend.free(buffer);
    this.#owned = [];
    this.#arenas.clear();
    this.#buffers.clear();
    this.#weights.clear();
    this.#steps = [];
    if (this.#ownsResidency) this.#residency.dispose();
  }

  async #allocate(weights: WeightSources, shared?: PlanExecutorOptions["sharedArenas"]): Promise<void> {
    const own = (backend: Backend, bytes: number, what: string) => {
      let buffer;
      try {
        buffer = backend.alloc(alignUp(Math.max(bytes, 1), backend.caps.alignment));
      } catch (e) {
        throw e instanceof OutOfMemoryError && !e.tensor ? e.forTensor(what) : e;
      }
      this.#owned.push({ backend, buffer });
      return buffer;
    };
    for (const name of this.plan.backends) {
      const sizes = this.plan.memory.perBackend[name].arenas, backend = this.#backends.get(name)!;
      if (!shared) {
        this.#arenas.set(name, sizes.map((bytes, i) => own(backend, bytes, `arena ${i}`)));
        continue;
      }
      const bytes = shared.bytes[name] ?? [];
      if (sizes.some((b, i) => !(bytes[i] >= b))) {
        throw new Error(`shared arenas ${shared.key} on ${name}: [${bytes}] B, smaller than the plan's [${sizes}] B`);
      }
      this.#arenas.set(name, await this.#residency.acquire("arena", backend, shared.key, bytes, () => {}));
    }
    const consumers = new Map<number, Node[]>();
    for (const n of this.graph.nodes) {
      for (const i of n.inputs) if (this.#table[i].kind === "weight") consumers.set(i, [...consumers.get(i) ?? [], n]);
    }
    for (const w of this.plan.weights) {
      const decl = this.graph.weights.find((d) => d.id === w.tensor)!;
      for (const name of w.backends) {
        const backend = this.#backends.get(name)!;
        const rows = maxShape(decl.shape)[0] ?? 1;
        const parts = w.parts?.[name] ?? [{ row0: 0, rows, bytes: weightBytes(backend, decl.shape, decl.dtype) }];
        const buffers = await this.#residency.acquire(
          "weight",
          backend,
          decl.name,
          parts.map((p) => p.bytes),
          async (buffers) => {
            const target = {
              decl,
              storage: tensorDType(backend.caps, { kind: "weight", dtype: decl.dtype }),
              parts: parts.map((p, i) => ({ view: { buffer: buffers[i], offset: 0 }, row0: p.row0, rows: p.rows })),
            };
            try {
              await backend.uploadWeight(target, await weightSource(weights, decl), consumers.get(decl.id) ?? []);
            } catch (e) {
              if (e instanceof OutOfMemoryError && !e.tensor) throw e.forTensor(`weight ${decl.name}`);
              throw e;
            }
          },
        );
        this.#weights.set(`${name}/${w.tensor}`, {
          parts: parts.map((p, i): WeightPart => ({
            view: { buffer: buffers[i], offset: 0 },
            row0: p.row0,
            rows: p.rows,
          })),
        });
      }
    }
    for (const s of this.plan.state) {
      const backend = this.#backends.get(s.backend)!, t = this.#table[s.tensor];
      const bytes = tensorBytes(backend.caps, t);
      const [buffer] = await this.#residency.acquire("state", backend, s.name, [bytes], ([b]) => {
        backend.fill({ buffer: b, offset: 0 }, bytes, 0);
      });
      this.#buffers.set(`state/${s.backend}/${s.tensor}`, buffer);
    }
    for (const i of this.plan.inputs) {
      for (const name of i.backends) {
        const backend = this.#backends.get(name)!, t = this.#table[i.tensor];
        this.#buffers.set(`input/${name}/${i.tensor}`, own(backend, tensorBytes(backend.caps, t), `input ${i.name}`));
      }
    }
    for (const o of this.plan.outputs) {
      const key = `output/${o.backend}/${o.tensor}`;
      if (o.in !== "output" || this.#buffers.has(key)) continue;
      const backend = this.#backends.get(o.backend)!, t = this.#table[o.tensor];
      this.#buffers.set(key, own(backend, tensorBytes(backend.caps, t), `output ${o.name}`));
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
      const bindings = new Map(
        s.bindings.map((b) => [
          b.tensor,
          b.in === "weight" ? this.#weight(s.backend, b.tensor) : this.#view(s.backend, b.tensor, b),
        ]),
      );
      this.#steps.push({ copies: copies[i], backend, prepared: await backend.prepare(segment), bindings });
    }
  }

  /** Host copies of the run's i32 inputs, by tensor id (views of the caller's arrays: no copy). */
  #hostInputs(inputs: Record<string, ArrayBufferView>): HostInputs {
    const host = new Map<number, Int32Array>();
    for (const { name, tensor } of this.#hostIds) {
      const d = inputs[name];
      host.set(
        tensor,
        d instanceof Int32Array ? d : new Int32Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength)),
      );
    }
    return host;
  }

  async #copy(c: PreparedCopy, vars: Vars): Promise<void> {
    const t = this.#table[c.tensor];
    const bytes = tensorBytes(c.source.caps, t, vars);
    if (c.fromDType === c.toDType && await c.source.transfer?.(c.srcView, c.target, c.dstView, bytes)) return;
    let data = await c.source.read(c.srcView, bytes);
    if (c.fromDType !== c.toDType) {
      data = f32ToBytes(bytesToF32(data, c.fromDType as FloatDType), c.toDType as FloatDType);
    }
    c.target.write(c.dstView, data);
  }

  #view(backend: string, tensor: number, where: Location): TensorView {
    if (where.in === "arena") {
      const buffer = this.#arenas.get(backend)?.[where.arena ?? 0];
      if (!buffer) throw new Error(`plan: tensor ${tensor} in arena ${where.arena ?? 0} of ${backend}, which it lacks`);
      return { buffer, offset: where.offset };
    }
    if (where.in === "weight") {
      const w = this.#weight(backend, tensor);
      if (isSplit(w)) throw new Error(`plan: weight ${tensor} on ${backend} is split, not one view`);
      return w;
    }
    return { buffer: this.#buffer(where.in, backend, tensor), offset: 0 };
  }

  /** A weight's binding: one part, or its row ranges when the plan split it. */
  #weight(backend: string, tensor: number): TensorView | SplitView {
    const w = this.#weights.get(`${backend}/${tensor}`);
    if (!w) throw new Error(`plan: no weight buffer for tensor ${tensor} on ${backend}`);
    return w.parts.length === 1 && w.parts[0].row0 === 0 ? w.parts[0].view : w;
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

  async #read(backend: string, view: TensorView, t: TensorInfo, vars: Vars): Promise<HostArray> {
    const b = this.#backends.get(backend)!;
    const raw = await b.read(view, tensorBytes(b.caps, t, vars));
    return toHostArray(raw, tensorDType(b.caps, t), numel(resolveShape(t.shape, vars)));
  }
}

/**
 * Typed host view of `n` elements stored as `stored`, on the bytes of `raw` (a backend's `read`: its own buffer,
 * so no copy is made unless it is misaligned).
 */
export function toHostArray(raw: Uint8Array, stored: DType, n: number): HostArray {
  const own = raw.byteOffset % 4 === 0 ? raw : raw.slice();
  if (stored === "f32") return new Float32Array(own.buffer, own.byteOffset, n);
  if (stored === "i32") return new Int32Array(own.buffer, own.byteOffset, n);
  if (stored === "bf16" || stored === "f16") return new Uint16Array(own.buffer, own.byteOffset, n);
  return own;
}

/** The source of `decl` from `weights` (a plain array is wrapped: elements of the declared dtype, or f32 values). */
async function weightSource(weights: WeightSources, decl: WeightDecl): Promise<WeightSource> {
  if (typeof weights === "function") return await weights(decl);
  const w = weights.get(decl.name)!;
  if (!ArrayBuffer.isView(w)) return w;
  const shape = maxShape(decl.shape), n = numel(shape);
  const data = new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  const dtype: DType = w instanceof Float32Array && w.length === n ? "f32" : decl.dtype;
  const expected = codeBytes(dtype, n, shape[shape.length - 1] ?? 1);
  if (data.byteLength !== expected) {
    throw new Error(`weight ${decl.name}: ${data.byteLength} B given, ${expected} B expected for [${shape}] ${dtype}`);
  }
  return memorySource({ name: decl.name, shape, dtype, data }, decl.dtype);
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
