/**
 * A small ONNX model encoder: the few protobuf messages an inference graph needs (ModelProto, GraphProto,
 * NodeProto, AttributeProto, TensorProto, ValueInfoProto with symbolic dims, opset imports), written field by field.
 * Our own rather than a protobuf package: the backend needs a dozen fields, and byte payloads (initializers) go in
 * as one copy of their bytes, never through arrays of numbers.
 *
 * Field numbers follow onnx/onnx.proto (ONNX IR version 8).
 *
 * @example
 * ```ts
 * import { encodeModel } from "./proto.ts";
 * const bytes = encodeModel({
 *   opsets: [{ domain: "", version: 17 }],
 *   graph: {
 *     name: "g",
 *     nodes: [{ op: "Relu", inputs: ["x"], outputs: ["y"] }],
 *     inputs: [{ name: "x", elemType: "float32", dims: ["T", 4] }],
 *     outputs: [{ name: "y", elemType: "float32", dims: ["T", 4] }],
 *   },
 * });
 * ```
 *
 * @module
 */

/** ONNX element types the backend uses, by the names onnxruntime's `Tensor` takes. */
export type ElemType = "float32" | "uint8" | "int8" | "int32" | "int64" | "bfloat16" | "float16";

/** TensorProto.DataType codes. */
export const ELEM_CODES: Readonly<Record<ElemType, number>> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  float16: 10,
  bfloat16: 16,
};

/** A dimension: a size, or a symbol (`dim_param`) bound when the session runs. */
export type OnnxDim = number | string;

/** A graph input or output: name, element type, shape. */
export type ValueInfo = { name: string; elemType: ElemType; dims: readonly OnnxDim[] };

/** A constant tensor (an initializer, or a `Constant`'s value). `data` holds its raw little-endian bytes. */
export type TensorValue = { name?: string; elemType: ElemType; dims: readonly number[]; data: Uint8Array };

/** An attribute value: typed by the field it goes in. */
export type AttrValue =
  | { int: number }
  | { float: number }
  | { string: string }
  | { ints: readonly number[] }
  | { floats: readonly number[] }
  | { tensor: TensorValue };

/** One node. `domain` is "" (the default ai.onnx) unless given, e.g. "com.microsoft". */
export type NodeDef = {
  op: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  domain?: string;
  attrs?: Readonly<Record<string, AttrValue>>;
};

/** A graph. */
export type GraphDef = {
  name: string;
  nodes: readonly NodeDef[];
  inputs: readonly ValueInfo[];
  outputs: readonly ValueInfo[];
  initializers?: readonly TensorValue[];
};

/** An operator set import. */
export type Opset = { domain: string; version: number };

/** A model. */
export type ModelDef = { graph: GraphDef; opsets: readonly Opset[]; irVersion?: number; producer?: string };

const WIRE_VARINT = 0, WIRE_FIXED32 = 5, WIRE_BYTES = 2;

/** Appends protobuf fields to a list of byte parts; `bytes()` joins them once. */
export class ProtoWriter {
  #parts: Uint8Array[] = [];
  #scratch: number[] = [];
  #length = 0;

  /** Bytes written so far. */
  get length(): number {
    return this.#length + this.#scratch.length;
  }

  #flush(): void {
    if (this.#scratch.length === 0) return;
    this.#push(Uint8Array.from(this.#scratch));
    this.#scratch = [];
  }

  #push(part: Uint8Array): void {
    this.#parts.push(part);
    this.#length += part.length;
  }

  #varint(n: number | bigint): void {
    // Negative int64s are two's complement on 64 bits (10 bytes), as protobuf writes them.
    let v = BigInt.asUintN(64, BigInt(n));
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) b |= 0x80;
      this.#scratch.push(b);
    } while (v > 0n);
  }

  #tag(field: number, wire: number): void {
    this.#varint((field << 3) | wire);
  }

  /** An int64/int32/enum field. */
  int(field: number, n: number): this {
    if (!Number.isSafeInteger(n)) throw new RangeError(`proto field ${field}: ${n} is not an integer`);
    this.#tag(field, WIRE_VARINT);
    this.#varint(n);
    return this;
  }

  /** A float field (fixed32). */
  float(field: number, x: number): this {
    this.#tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, x, true);
    for (const v of b) this.#scratch.push(v);
    return this;
  }

  /** A bytes field; large payloads are kept as they are (one copy at `bytes()`). */
  raw(field: number, data: Uint8Array): this {
    this.#tag(field, WIRE_BYTES);
    this.#varint(data.length);
    if (data.length < 64) {
      for (const v of data) this.#scratch.push(v);
    } else {
      this.#flush();
      this.#push(data);
    }
    return this;
  }

  /** A string field (UTF-8). */
  string(field: number, s: string): this {
    return this.raw(field, new TextEncoder().encode(s));
  }

  /** An embedded message written by `body`. */
  message(field: number, body: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    body(inner);
    inner.#flush();
    this.#tag(field, WIRE_BYTES);
    this.#varint(inner.length);
    this.#flush();
    for (const p of inner.#parts) this.#push(p);
    return this;
  }

  /** The message's bytes. */
  bytes(): Uint8Array {
    this.#flush();
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.#parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

function writeTensor(w: ProtoWriter, t: TensorValue): void {
  for (const d of t.dims) w.int(1, d);
  w.int(2, ELEM_CODES[t.elemType]);
  if (t.name !== undefined) w.string(8, t.name);
  w.raw(9, t.data);
}

function writeValueInfo(w: ProtoWriter, v: ValueInfo): void {
  w.string(1, v.name);
  // TypeProto { tensor_type (1): { elem_type (1), shape (2): { dim (1): { dim_value (1) | dim_param (2) } } } }
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, ELEM_CODES[v.elemType]);
      tensor.message(2, (shape) => {
        for (const d of v.dims) {
          shape.message(1, (dim) => typeof d === "number" ? dim.int(1, d) : dim.string(2, d));
        }
      });
    }));
}

// AttributeProto.AttributeType codes.
const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_TENSOR = 4, ATTR_FLOATS = 6, ATTR_INTS = 7;

function writeAttr(w: ProtoWriter, name: string, a: AttrValue): void {
  w.string(1, name);
  if ("int" in a) w.int(3, a.int).int(20, ATTR_INT);
  else if ("float" in a) w.float(2, a.float).int(20, ATTR_FLOAT);
  else if ("string" in a) w.string(4, a.string).int(20, ATTR_STRING);
  else if ("ints" in a) {
    for (const i of a.ints) w.int(8, i);
    w.int(20, ATTR_INTS);
  } else if ("floats" in a) {
    for (const f of a.floats) w.float(7, f);
    w.int(20, ATTR_FLOATS);
  } else {
    const t = a.tensor;
    w.message(5, (m) => writeTensor(m, t)).int(20, ATTR_TENSOR);
  }
}

function writeNode(w: ProtoWriter, n: NodeDef): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name !== undefined) w.string(3, n.name);
  w.string(4, n.op);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.message(5, (a) => writeAttr(a, k, v));
  if (n.domain) w.string(7, n.domain);
}

function writeGraph(w: ProtoWriter, g: GraphDef): void {
  for (const n of g.nodes) w.message(1, (m) => writeNode(m, n));
  w.string(2, g.name);
  for (const t of g.initializers ?? []) w.message(5, (m) => writeTensor(m, t));
  for (const v of g.inputs) w.message(11, (m) => writeValueInfo(m, v));
  for (const v of g.outputs) w.message(12, (m) => writeValueInfo(m, v));
}

/** The serialised ModelProto of `model`. */
export function encodeModel(model: ModelDef): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, model.irVersion ?? 8);
  w.string(2, model.producer ?? "tramontane");
  w.message(7, (g) => writeGraph(g, model.graph));
  for (const o of model.opsets) w.message(8, (m) => m.string(1, o.domain).int(2, o.version));
  return w.bytes();
}

/** A tensor value of f32 `values` (for attributes and small constants). */
export function f32Tensor(
  dims: readonly number[],
  values: readonly number[] | Float32Array,
  name?: string,
): TensorValue {
  const data = Float32Array.from(values);
  return { name, elemType: "float32", dims, data: new Uint8Array(data.buffer) };
}

/** A tensor value of int64 `values` (shapes, axes). */
export function i64Tensor(dims: readonly number[], values: readonly number[], name?: string): TensorValue {
  const data = BigInt64Array.from(values, (v) => BigInt(v));
  return { name, elemType: "int64", dims, data: new Uint8Array(data.buffer) };
}
