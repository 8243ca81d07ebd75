/**
 * The `onnx` backend: plan segments lowered to ONNX graphs (lower.ts, encoded by proto.ts) and run by
 * onnxruntime-node on the CPU, whose MLAS GEMMs use the host's native AVX2/AVX-512/VNNI where WASM has 128-bit SIMD:
 * it pays where work is compute-bound (prefill matmuls), next to the `wasm` backend (`--backend onnx,wasm`).
 *
 * - Memory: every buffer is a host `ArrayBuffer`; a run feeds ORT tensors that view the bound buffers (inputs and
 *   weights: no copy) and hands it views of the bound outputs to write in place (no copy either). Weights are graph
 *   inputs, not initializers, so one copy serves every session. (ORT refuses tensors over a `SharedArrayBuffer`,
 *   so it cannot view the wasm memory: copies between the two backends are one memcpy each way.)
 * - Dtypes: activations f32, ids i32, weights f32: bf16, f16, f8e4m3, nvfp4, q4 and q8 weights are dequantised at
 *   upload, and counted so in the memory plan. `q8MatMulNBits` keeps q8 (codes, then f32 block scales) for
 *   com.microsoft `MatMulNBits` instead, which is slow with weights fed as inputs ({@link OnnxBackendOptions}).
 * - Execution: `prepare` builds one model per segment and one session per distinct model (shared by every plan
 *   that has the same segment); `run` queues `session.run` behind earlier work, and `write`/`copy`/`fill`/`read`
 *   queue behind runs, so the contract's ordering holds although ORT runs asynchronously. Sessions use
 *   `threads` intra-op threads without spinning when idle. A failing run names its segment's first node.
 * - onnxruntime-node is loaded only by `probe()` / `create()` (ort.ts), never by importing this module.
 *
 * @example
 * ```ts ignore
 * import { onnxBackend } from "./backend.ts";
 * if (await onnxBackend.probe().catch(() => 0) > 0) {
 *   const backend = await onnxBackend.create({ threads: 2 });
 *   backend.dispose();
 * }
 * ```
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import {
  maxShape,
  type Node,
  numel,
  resolveShape,
  type TensorInfo,
  tensorTable,
  type Vars,
} from "../../../graph/ir.ts";
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
  storageDType,
  type TensorView,
  type WeightSource,
  type WeightTarget,
} from "../../backend.ts";
import { uploadChunks } from "../../weight_upload.ts";
import { chunkBytes, chunkScaleCount, chunkToF32, scratchF32 } from "../../../weights/chunks.ts";
import { Q8_BLOCK } from "../../../weights/codecs.ts";
import { leadingRows, rowElements } from "../../../weights/source.ts";
import { inputInfos, inputName, Lowering, lowers, matrixDims } from "./lower.ts";
import { type ExpertDType, expertModel, type MoeShape, runMoe, type WeightAt } from "./moe.ts";
import { loadOrt, type OrtModule, type OrtSession, type OrtTensor, sessionOptions } from "./ort.ts";
import { encodeModel, type ModelDef } from "./proto.ts";

/** Caps: q8 held natively only for MatMulNBits (see {@link OnnxBackendOptions.q8MatMulNBits}), else as f32. */
function capsOf(q8Native: boolean): BackendCaps {
  return {
    alignment: 64,
    dtypes: q8Native ? ["f32", "i32", "q8"] : ["f32", "i32"],
    promote: {
      bf16: "f32",
      f16: "f32",
      f8e4m3: "f32",
      nvfp4: "f32",
      q4: "f32",
      ...(q8Native ? {} : { q8: "f32" as const }),
    },
    memoryBytes: Infinity,
    maxBindingBytes: Infinity,
    activationDType: "f32",
  };
}

/** Options of the `onnx` factory: the common ones, ORT's idle spinning, and the q8 path. */
export type OnnxBackendOptions = BackendOptions & {
  /** Let ORT's intra-op threads spin when idle (default false: they would take the cores from the wasm pool). */
  spinning?: boolean;
  /**
   * Keep q8 weights as q8 and run them through com.microsoft `MatMulNBits` (default false: dequantise them to f32
   * at upload). onnxruntime 1.30 accepts 8-bit blocks of 32, but with the weight fed as an input (one copy shared
   * by every session) its CPU kernel does not prepack and is slow: 2.6 s for the 131072×1024 head at one row (f32
   * `Gemm`: 65 ms), 2–5× f32 at 64–512 rows; as an initializer it prepacks (282 GFLOPS at 512 rows) but each
   * session would hold its own copy.
   */
  q8MatMulNBits?: boolean;
};

type Feed = { name: string; id: number; part: "" | "q" | "s" };

/** A model computing a run of lowered nodes; `outputs` are the tensors it writes (graph outputs of their names). */
type GraphPart = { kind: "graph"; session: OrtSession; feeds: Feed[]; outputs: number[] };
/** One `moe_experts` node, run expert by expert (moe.ts). */
type MoePart = { kind: "moe"; node: Node; shape: MoeShape; session: OrtSession };
type Part = GraphPart | MoePart;

type OnnxPrepared = Prepared & {
  table: TensorInfo[];
  /** In node order. */
  parts: Part[];
  /** Tensors passed between parts that the plan did not bind, by id. */
  scratch: Map<number, ArrayBuffer>;
  /** What errors call the segment: its first node and size. */
  label: string;
};

class OnnxBackend implements Backend {
  readonly name = "onnx";
  readonly caps: BackendCaps;
  readonly #ort: OrtModule;
  readonly #options: Record<string, unknown>;
  readonly #refuse: ReadonlySet<string>;
  #buffers = new Map<number, ArrayBuffer>();
  #nextId = 1;
  /** Sessions by model bytes: plans with the same segment share one. */
  #sessions = new Map<string, Promise<OrtSession>>();
  /** Work queued behind the runs in flight (undefined when idle). */
  #queue: Promise<void> | undefined;
  #failure: Error | undefined;

  constructor(ort: OrtModule, options: OnnxBackendOptions) {
    this.#ort = ort;
    this.#refuse = refusedOps(options, "onnx");
    this.caps = capsOf(options.q8MatMulNBits ?? false);
    const threads = options.threads ?? navigator.hardwareConcurrency ?? 1;
    this.#options = sessionOptions(threads, options.spinning ?? false);
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    if (this.#refuse.has(node.op)) return false;
    if (!canStore(this.caps, node.dtype) || !inputs.every((t) => canStore(this.caps, t.dtype))) return false;
    const stored = inputs.map((t) => this.#stored(t));
    return lowers(node, inputs, stored);
  }

  weightBytes(shape: readonly number[], storage: DType): number {
    // q8: the codes, then one f32 scale per 32 codes (the chunks' own layout).
    if (storage === "q8") return chunkBytes(shape, "q8", leadingRows(shape));
    if (storage !== "f32" && storage !== "i32") throw new RangeError(`onnx: weights are not stored as ${storage}`);
    return 4 * numel(shape);
  }

  /** f32 and i32 as they come; q8 codes with the sign bit flipped (MatMulNBits' zero point 128) and their scales. */
  uploadWeight(target: WeightTarget, source: WeightSource): Promise<void> {
    const shape = maxShape(target.decl.shape), per = rowElements(shape);
    const scalesPerRow = chunkScaleCount("q8", per, shape[shape.length - 1]);
    return uploadChunks(target, source, (chunk, part, row) => {
      const { buffer, offset } = part.view;
      if (target.storage === "q8") {
        if (!chunk.scales) throw new Error(`onnx: q8 chunk of ${target.decl.name} has no scales`);
        const codes = this.#bytes({ buffer, offset: offset + row * per }, chunk.data.length, "upload");
        for (let i = 0; i < codes.length; i++) codes[i] = chunk.data[i] ^ 0x80;
        const at = offset + part.rows * per + 4 * row * scalesPerRow;
        this.#now({ buffer, offset: at }, chunk.scales);
        return;
      }
      const values = chunk.dtype === "i32" ? chunk.data : chunkToF32(chunk, scratchF32(chunk.rows * per, 3));
      this.#now({ buffer, offset: offset + 4 * row * per }, values);
    });
  }

  alloc(bytes: number): BufferHandle {
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const id = this.#nextId++;
    this.#buffers.set(id, new ArrayBuffer(bytes));
    return { backend: this.name, id, bytes };
  }

  free(buffer: BufferHandle): void {
    if (buffer.backend === this.name) this.#buffers.delete(buffer.id);
  }

  write(view: TensorView, data: ArrayBufferView): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.#bytes(view, bytes.length, "write"); // bounds now, so a bad write throws here
    if (!this.#queue) return this.#now(view, bytes);
    const copy = bytes.slice(); // the caller may reuse `data` at once
    this.#then(() => this.#now(view, copy));
  }

  async read(view: TensorView, bytes: number): Promise<Uint8Array> {
    await this.sync();
    return this.#bytes(view, bytes, "read").slice();
  }

  copy(src: TensorView, dst: TensorView, bytes: number): void {
    this.#bytes(src, bytes, "copy");
    this.#bytes(dst, bytes, "copy");
    this.#then(() => this.#bytes(dst, bytes, "copy").set(this.#bytes(src, bytes, "copy")));
  }

  fill(view: TensorView, bytes: number, value: number): void {
    this.#bytes(view, bytes, "fill");
    this.#then(() => void this.#bytes(view, bytes, "fill").fill(value));
  }

  /** To any backend: after queued work, one `write` there straight from this buffer (no intermediate copy). */
  async transfer(src: TensorView, to: Backend, dst: TensorView, bytes: number): Promise<boolean> {
    await this.sync();
    to.write(dst, this.#bytes(src, bytes, "transfer"));
    return true;
  }

  async prepare(segment: Segment): Promise<Prepared> {
    const table = tensorTable(segment.graph);
    const byId = new Map(segment.graph.nodes.map((n) => [n.id, n]));
    const nodes = segment.nodes.map((id) => {
      const n = byId.get(id);
      if (!n) throw new Error(`onnx: segment node ${id} is not in the graph`);
      if (!this.supports(n, n.inputs.map((i) => table[i]))) throw new Error(`onnx: cannot run ${n.op} "${n.name}"`);
      return n;
    });
    // Runs of lowered nodes become one model each; every moe_experts node is a part of its own.
    const groups: Node[][] = [];
    for (const n of nodes) {
      const last = groups[groups.length - 1];
      if (n.op !== "moe_experts" && last && last[0].op !== "moe_experts") last.push(n);
      else groups.push([n]);
    }
    // A tensor crossing parts that the plan left unbound lives in scratch of this segment's own.
    const needed = new Set(segment.outputs);
    const scratch = new Map<number, ArrayBuffer>();
    const producedIn = new Map<number, number>();
    groups.forEach((g, i) => g.forEach((n) => producedIn.set(n.id, i)));
    groups.forEach((g, i) =>
      g.forEach((n) =>
        n.inputs.forEach((id) => {
          const from = producedIn.get(id);
          if (from !== undefined && from !== i) {
            needed.add(id);
            scratch.set(id, new ArrayBuffer(4 * numel(maxShape(table[id].shape))));
          }
        })
      )
    );
    const first = nodes[0];
    const label = `segment of ${nodes.length} node(s) from ${first.op} "${first.name}" (#${first.id})`;
    const parts: Part[] = [];
    for (const g of groups) {
      if (g[0].op === "moe_experts") parts.push(await this.#moePart(g[0], table, label));
      else parts.push(await this.#graphPart(g, table, needed, label));
    }
    const prepared: OnnxPrepared = { segment, table, parts, scratch, label };
    return prepared;
  }

  /** One model computing `nodes`; its outputs are those of `needed` it produces. */
  async #graphPart(nodes: Node[], table: TensorInfo[], needed: ReadonlySet<number>, label: string): Promise<Part> {
    const stored = (id: number) => this.#stored(table[id]);
    const lowering = new Lowering(table, stored);
    const inside = new Set(nodes.map((n) => n.id));
    const reads = new Set<number>();
    for (const n of nodes) {
      lowering.lower(n);
      for (const i of n.inputs) if (!inside.has(i)) reads.add(i);
    }
    const feeds: Feed[] = [];
    const inputs = [...reads].flatMap((id) => {
      const infos = inputInfos(table[id], stored(id));
      for (const v of infos) {
        feeds.push({ name: v.name, id, part: v.name.endsWith("_q") ? "q" : v.name.endsWith("_s") ? "s" : "" });
      }
      return infos;
    });
    const outputs = nodes.filter((n) => needed.has(n.id)).map((n) => n.id);
    const model: ModelDef = {
      opsets: [{ domain: "", version: 18 }, { domain: "com.microsoft", version: 1 }],
      graph: {
        name: `seg${nodes[0].id}`,
        nodes: lowering.nodes,
        inputs,
        outputs: outputs.flatMap((id) => inputInfos(table[id], "f32")),
        initializers: lowering.constants,
      },
    };
    return { kind: "graph", session: await this.#session(model, label), feeds, outputs };
  }

  /** A `moe_experts` node: the per-expert session of its shapes (shared by every layer alike). */
  async #moePart(node: Node, table: TensorInfo[], label: string): Promise<Part> {
    const [, ids, , gateUp, down] = node.inputs.map((i) => table[i]);
    const [experts, twoF, d] = gateUp.shape as number[];
    const shape: MoeShape = {
      d,
      f: twoF / 2,
      experts,
      k: ids.shape[1] as number,
      gateUp: this.#stored(gateUp) as ExpertDType,
      down: this.#stored(down) as ExpertDType,
    };
    return { kind: "moe", node, shape, session: await this.#session(expertModel(shape), label) };
  }

  /** The session of `model`, created once for every plan and segment that encode to the same bytes. */
  async #session(model: ModelDef, label: string): Promise<OrtSession> {
    const bytes = encodeModel(model);
    const key = new TextDecoder("latin1").decode(bytes);
    let session = this.#sessions.get(key);
    if (!session) {
      session = this.#ort.InferenceSession.create(bytes, this.#options);
      this.#sessions.set(key, session);
    }
    try {
      return await session;
    } catch (e) {
      this.#sessions.delete(key);
      throw new Error(`onnx: the ${label} does not load in onnxruntime: ${(e as Error).message}`);
    }
  }

  run(prepared: Prepared, bindings: Bindings, vars: Vars, _host: HostInputs): void {
    const p = prepared as OnnxPrepared;
    for (const id of [...p.segment.inputs, ...p.segment.outputs]) {
      if (!bindings.has(id)) throw new Error(`onnx: ${p.label}: tensor ${id} "${p.table[id].name}" is not bound`);
    }
    // Nothing to compute for an empty step (ORT would still run every node).
    if (p.segment.outputs.every((id) => numel(resolveShape(p.table[id].shape, vars)) === 0)) return;
    this.#then(async () => {
      for (const part of p.parts) {
        try {
          if (part.kind === "graph") await this.#runGraph(p, part, bindings, vars);
          else await this.#runMoe(p, part, bindings, vars);
        } catch (e) {
          const where = part.kind === "moe" ? `, at moe_experts "${part.node.name}" (#${part.node.id}),` : "";
          throw new Error(`onnx: the ${p.label}${where} failed: ${(e as Error).message}`);
        }
      }
    });
  }

  async #runGraph(p: OnnxPrepared, part: GraphPart, bindings: Bindings, vars: Vars): Promise<void> {
    const feeds: Record<string, OrtTensor> = {}, fetches: Record<string, OrtTensor> = {};
    for (const f of part.feeds) feeds[f.name] = this.#tensor(p, f, bindings, vars);
    for (const id of part.outputs) fetches[inputName(id)] = this.#tensor(p, { name: "", id, part: "" }, bindings, vars);
    await part.session.run(feeds, fetches);
  }

  async #runMoe(p: OnnxPrepared, part: MoePart, bindings: Bindings, vars: Vars): Promise<void> {
    const [x, ids, weights, gateUp, down] = part.node.inputs;
    const at = (id: number): WeightAt => {
      const v = this.#bound(p, id, bindings);
      return { mem: v.mem, offset: v.offset };
    };
    const f32 = (id: number) => this.#tensor(p, { name: "", id, part: "" }, bindings, vars).data as Float32Array;
    await runMoe(this.#ort, part.session, part.shape, {
      x: f32(x),
      ids: this.#tensor(p, { name: "", id: ids, part: "" }, bindings, vars).data as Int32Array,
      weights: f32(weights),
      gateUp: at(gateUp),
      down: at(down),
      out: f32(part.node.id),
      tokens: resolveShape(p.table[x].shape, vars)[0],
    });
  }

  async sync(): Promise<void> {
    while (this.#queue) await this.#queue;
    const failure = this.#failure;
    this.#failure = undefined;
    if (failure) throw failure;
  }

  dispose(): void {
    for (const s of this.#sessions.values()) s.then((x) => x.release()).catch(() => {});
    this.#sessions.clear();
    this.#buffers.clear();
  }

  /** Queues `work` behind what is queued; the first failure is kept for `sync`, and later work is dropped. */
  #then(work: () => void | Promise<void>): void {
    const run = async () => {
      if (this.#failure) return;
      try {
        await work();
      } catch (e) {
        this.#failure = e as Error;
      }
    };
    const next: Promise<void> = (this.#queue ?? Promise.resolve()).then(run).then(() => {
      if (this.#queue === next) this.#queue = undefined;
    });
    this.#queue = next;
  }

  #now(view: TensorView, data: ArrayBufferView): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.#bytes(view, bytes.length, "write").set(bytes);
  }

  #memory(buffer: BufferHandle): ArrayBuffer {
    const mem = buffer.backend === this.name ? this.#buffers.get(buffer.id) : undefined;
    if (!mem) throw new Error(`buffer ${buffer.backend}:${buffer.id} is not a live onnx buffer`);
    return mem;
  }

  #bytes(view: TensorView, bytes: number, what: string): Uint8Array {
    const mem = this.#memory(view.buffer);
    if (!(view.offset >= 0 && bytes >= 0 && view.offset + bytes <= mem.byteLength)) {
      throw new RangeError(`${what} of ${bytes} B at ${view.offset} overflows buffer of ${mem.byteLength} B`);
    }
    return new Uint8Array(mem, view.offset, bytes);
  }

  /** How a tensor is held here: weights by the caps, activations f32, ids i32. */
  #stored(t: Pick<TensorInfo, "dtype" | "kind">): DType {
    return t.kind !== "weight" && t.dtype === "i32" ? "i32" : storageDType(this.caps, t.dtype);
  }

  /** The memory holding tensor `id` for this run: its binding, or the segment's scratch. */
  #bound(p: OnnxPrepared, id: number, bindings: Bindings): { mem: ArrayBuffer; offset: number } {
    const bound = bindings.get(id);
    if (!bound) {
      const mem = p.scratch.get(id);
      if (!mem) throw new Error(`tensor ${id} "${p.table[id].name}" is not bound`);
      return { mem, offset: 0 };
    }
    if (isSplit(bound)) throw new Error(`${p.table[id].name} is bound split, which onnx never asks for`);
    return { mem: this.#memory(bound.buffer), offset: bound.offset };
  }

  /** An ORT tensor viewing the memory of one feed or output. */
  #tensor(p: OnnxPrepared, f: Feed, bindings: Bindings, vars: Vars): OrtTensor {
    const t = p.table[f.id], { mem, offset } = this.#bound(p, f.id, bindings);
    if (f.part !== "") {
      const [n, k] = matrixDims(t.shape as number[]), blocks = k / Q8_BLOCK;
      if (f.part === "q") {
        return new this.#ort.Tensor("uint8", new Uint8Array(mem, offset, n * k), [n, blocks, Q8_BLOCK]);
      }
      return new this.#ort.Tensor("float32", new Float32Array(mem, offset + n * k, n * blocks), [n * blocks]);
    }
    const shape = resolveShape(t.shape, vars), count = numel(shape);
    if (offset + 4 * count > mem.byteLength) {
      throw new RangeError(`tensor ${t.id} "${t.name}" (${4 * count} B at ${offset}) does not fit its buffer`);
    }
    return this.#stored(t) === "i32"
      ? new this.#ort.Tensor("int32", new Int32Array(mem, offset, count), shape)
      : new this.#ort.Tensor("float32", new Float32Array(mem, offset, count), shape);
  }
}

/**
 * Factory of the `onnx` backend. `probe()` loads onnxruntime-node and scores 5 (below `wasm`'s 10, so `auto` stays
 * wasm; it is chosen by name, `--backend onnx,wasm`), and throws the reason when it does not load.
 * `create({ threads, spinning })`: ORT intra-op threads (default `navigator.hardwareConcurrency`).
 */
export const onnxBackend: BackendFactory = {
  name: "onnx",
  async probe(): Promise<number> {
    await loadOrt();
    return 5;
  },
  async create(options: OnnxBackendOptions = {}): Promise<Backend> {
    return new OnnxBackend(await loadOrt(), options);
  },
};
