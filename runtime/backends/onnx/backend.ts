/**
 * The `onnx` backend: plan segments lowered to ONNX graphs (lower.ts, encoded by proto.ts) and run by
 * onnxruntime-node on the CPU, whose MLAS GEMMs use the host's native AVX2/AVX-512/VNNI where WASM has 128-bit SIMD:
 * it pays where work is compute-bound (prefill matmuls), next to the `wasm` backend (`--backend onnx,wasm`).
 *
 * - Memory: every buffer is a host `ArrayBuffer`; a run feeds ORT tensors that view the bound buffers (inputs and
 *   weights: no copy) and hands it views of the bound outputs to write in place (no copy either). Weights are graph
 *   inputs, not initializers, so one copy serves every session. (ORT refuses tensors over a `SharedArrayBuffer`,
 *   so it cannot view the wasm memory: copies between the two backends are one memcpy each way.)
 * - Dtypes: activations f32, ids i32, weights f32 or q8 (for `MatMulNBits`: codes then f32 block scales); bf16,
 *   f16, f8e4m3 and nvfp4 weights are dequantised to f32 at upload, and counted so in the memory plan.
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
import { chunkToF32, scratchF32 } from "../../../weights/chunks.ts";
import { rowElements } from "../../../weights/source.ts";
import { inputInfos, inputName, Lowering, lowers, Q8_BLOCK } from "./lower.ts";
import { loadOrt, type OrtModule, type OrtSession, type OrtTensor, sessionOptions } from "./ort.ts";
import { encodeModel } from "./proto.ts";

const CAPS: BackendCaps = {
  alignment: 64,
  dtypes: ["f32", "i32", "q8"],
  promote: { bf16: "f32", f16: "f32", f8e4m3: "f32", nvfp4: "f32" },
  memoryBytes: Infinity,
  maxBindingBytes: Infinity,
  activationDType: "f32",
};

/** Options of the `onnx` factory: the common ones, and ORT's idle spinning (off by default). */
export type OnnxBackendOptions = BackendOptions & { spinning?: boolean };

type Feed = { name: string; id: number; part: "" | "q" | "s" };

type OnnxPrepared = Prepared & {
  session: OrtSession;
  table: TensorInfo[];
  feeds: Feed[];
  /** Segment outputs, by id (each a graph output of the same name). */
  outputs: number[];
  /** What errors call the segment: its first node and size. */
  label: string;
};

/** Bytes of a q8 weight here: the codes, then one f32 scale per 32 codes. */
function q8Bytes(shape: readonly number[]): number {
  const n = numel(shape), k = shape[shape.length - 1];
  return n + 4 * (n / k) * Math.ceil(k / Q8_BLOCK);
}

class OnnxBackend implements Backend {
  readonly name = "onnx";
  readonly caps = CAPS;
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
    const threads = options.threads ?? navigator.hardwareConcurrency ?? 1;
    this.#options = sessionOptions(threads, options.spinning ?? false);
  }

  supports(node: Node, inputs: readonly TensorInfo[]): boolean {
    if (this.#refuse.has(node.op)) return false;
    if (!canStore(CAPS, node.dtype) || !inputs.every((t) => canStore(CAPS, t.dtype))) return false;
    const stored = inputs.map((t) => t.kind === "weight" ? storageDType(CAPS, t.dtype) : storedDType(t));
    return lowers(node, inputs, stored);
  }

  weightBytes(shape: readonly number[], storage: DType): number {
    if (storage === "q8") return q8Bytes(shape);
    if (storage !== "f32" && storage !== "i32") throw new RangeError(`onnx: weights are not stored as ${storage}`);
    return 4 * numel(shape);
  }

  /** f32 and i32 as they come; q8 codes with the sign bit flipped (MatMulNBits' zero point 128) and their scales. */
  uploadWeight(target: WeightTarget, source: WeightSource): Promise<void> {
    const shape = maxShape(target.decl.shape), per = rowElements(shape);
    const k = shape[shape.length - 1], scalesPerRow = (per / k) * Math.ceil(k / Q8_BLOCK);
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
    const stored = (id: number) =>
      table[id].kind === "weight" ? storageDType(CAPS, table[id].dtype) : storedDType(table[id]);
    const lowering = new Lowering(table, stored);
    for (const id of segment.nodes) {
      const n = byId.get(id);
      if (!n) throw new Error(`onnx: segment node ${id} is not in the graph`);
      if (!this.supports(n, n.inputs.map((i) => table[i]))) throw new Error(`onnx: cannot run ${n.op} "${n.name}"`);
      lowering.lower(n);
    }
    const feeds: Feed[] = [];
    const inputs = segment.inputs.flatMap((id) => {
      const infos = inputInfos(table[id], stored(id));
      for (const v of infos) {
        feeds.push({ name: v.name, id, part: v.name.endsWith("_q") ? "q" : v.name.endsWith("_s") ? "s" : "" });
      }
      return infos;
    });
    const outputs = segment.outputs.flatMap((id) => inputInfos(table[id], "f32"));
    const first = byId.get(segment.nodes[0])!;
    const label = `segment of ${segment.nodes.length} node(s) from ${first.op} "${first.name}" (#${first.id})`;
    const model = encodeModel({
      opsets: [{ domain: "", version: 18 }, { domain: "com.microsoft", version: 1 }],
      graph: { name: `seg${first.id}`, nodes: lowering.nodes, inputs, outputs, initializers: lowering.constants },
    });
    const key = new TextDecoder("latin1").decode(model);
    let session = this.#sessions.get(key);
    if (!session) {
      session = this.#ort.InferenceSession.create(model, this.#options);
      this.#sessions.set(key, session);
    }
    try {
      const prepared: OnnxPrepared = { segment, session: await session, table, feeds, outputs: segment.outputs, label };
      return prepared;
    } catch (e) {
      this.#sessions.delete(key);
      throw new Error(`onnx: the ${label} does not load in onnxruntime: ${(e as Error).message}`);
    }
  }

  run(prepared: Prepared, bindings: Bindings, vars: Vars, _host: HostInputs): void {
    const p = prepared as OnnxPrepared;
    const feeds: Record<string, OrtTensor> = {}, fetches: Record<string, OrtTensor> = {};
    try {
      for (const f of p.feeds) feeds[f.name] = this.#tensor(p, f, bindings, vars);
      for (const id of p.outputs) {
        fetches[inputName(id)] = this.#tensor(p, { name: inputName(id), id, part: "" }, bindings, vars);
      }
    } catch (e) {
      throw new Error(`onnx: ${p.label}: ${(e as Error).message}`);
    }
    // Nothing to compute for an empty step (ORT would still run every node).
    if (Object.values(fetches).every((t) => t.dims.includes(0))) return;
    this.#then(async () => {
      try {
        await p.session.run(feeds, fetches);
      } catch (e) {
        throw new Error(`onnx: the ${p.label} failed: ${(e as Error).message}`);
      }
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

  /** An ORT tensor viewing the bound memory of one feed or output. */
  #tensor(p: OnnxPrepared, f: Feed, bindings: Bindings, vars: Vars): OrtTensor {
    const t = p.table[f.id], bound = bindings.get(f.id);
    if (!bound) throw new Error(`tensor ${f.id} "${t.name}" is not bound`);
    if (isSplit(bound)) throw new Error(`${t.name} is bound split, which onnx never asks for`);
    const mem = this.#memory(bound.buffer);
    if (f.part !== "") {
      const [n, k] = t.shape as number[], blocks = k / Q8_BLOCK;
      if (f.part === "q") {
        return new this.#ort.Tensor("uint8", new Uint8Array(mem, bound.offset, n * k), [n, blocks, Q8_BLOCK]);
      }
      return new this.#ort.Tensor("float32", new Float32Array(mem, bound.offset + n * k, n * blocks), [n * blocks]);
    }
    const shape = resolveShape(t.shape, vars), count = numel(shape);
    if (bound.offset + 4 * count > mem.byteLength) {
      throw new RangeError(`tensor ${t.id} "${t.name}" (${4 * count} B at ${bound.offset}) does not fit its buffer`);
    }
    return storedDType(t) === "i32"
      ? new this.#ort.Tensor("int32", new Int32Array(mem, bound.offset, count), shape)
      : new this.#ort.Tensor("float32", new Float32Array(mem, bound.offset, count), shape);
  }
}

/** How a non-weight tensor is held here: activations f32, ids i32. */
function storedDType(t: Pick<TensorInfo, "dtype" | "kind">): DType {
  return t.kind === "weight" ? storageDType(CAPS, t.dtype) : t.dtype === "i32" ? "i32" : storageDType(CAPS, t.dtype);
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
