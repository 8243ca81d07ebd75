/**
 * The op contract and the small shape/cost helpers every op file shares.
 *
 * An {@link OpDef} gives an op's semantics three ways: `inferShape` (build time, symbolic shapes), `reference`
 * (pure TypeScript on concrete f32/i32 arrays: the ground truth every kernel is compared with) and `cost`
 * (flops and bytes moved, for concrete shapes, weights counted at their stored dtype).
 *
 * @example
 * ```ts
 * import { REGISTRY } from "./mod.ts";
 * const def = REGISTRY.get("matmul")!;
 * import type { ConcreteType } from "./op.ts";
 * const x: ConcreteType = { shape: [1, 64], dtype: "f32" }, w: ConcreteType = { shape: [32, 64], dtype: "bf16" };
 * def.cost([x, w], { shape: [1, 32], dtype: "f32" }, {}); // { flops: 4096, bytes: 4480 }
 * ```
 *
 * @module
 */

import { BITS_PER_ELEMENT, type DType } from "../graph/dtype.ts";
import { type Attrs, type Dim, dimEquals, formatShape, numel, type Shape, type TensorType } from "../graph/ir.ts";

/** Element storage of the reference: every float tensor is f32 (weights arrive dequantised), ids are i32. */
export type RefData = Float32Array | Int32Array;

/** A concrete tensor as the reference sees it. */
export type RefTensor = { data: RefData; shape: number[]; dtype: DType };

/** A concrete shape and dtype, for costs. */
export type ConcreteType = { shape: number[]; dtype: DType };

/** Work of one node: floating-point operations and bytes read + written (weights at their stored dtype). */
export type Cost = { flops: number; bytes: number };

/** Semantics of one op. `A` is the op's attribute type (a JSON object). */
export interface OpDef<A extends Attrs = Attrs> {
  /** Op name as it appears in `Node.op` (snake_case). */
  name: string;
  /** Input names, for messages and docs; the arity unless `variadic`. */
  inputNames: string[];
  /** Accepts one or more inputs (all named `inputNames[0]`), e.g. concat. */
  variadic?: boolean;
  /**
   * Indices of inputs the op writes in place (e.g. the KV cache of `mla_attention`). Schedulers must not reorder
   * readers of such a tensor across the node, nor let the memory plan alias it.
   */
  writesInputs?: number[];
  /** Output shape and dtype; throws an `Error` saying what is wrong (the builder adds which node). */
  inferShape(inputs: TensorType[], attrs: A): TensorType;
  /** Computes `out` (pre-zeroed, already sized) from `inputs`. */
  reference(inputs: RefTensor[], out: RefTensor, attrs: A): void;
  /** Cost for concrete shapes. */
  cost(inputs: ConcreteType[], out: ConcreteType, attrs: A): Cost;
}

/** Bytes of `n` elements stored as `dtype` (block-quantised types include their scales). */
export function bytesOf(n: number, dtype: DType): number {
  return Math.ceil((n * BITS_PER_ELEMENT[dtype]) / 8);
}

/** Bytes of a concrete tensor. */
export function tensorBytes(t: ConcreteType): number {
  return bytesOf(numel(t.shape), t.dtype);
}

/** Sum of the bytes of all inputs and the output: the default traffic estimate. */
export function ioBytes(inputs: ConcreteType[], out: ConcreteType): number {
  return inputs.reduce((s, t) => s + tensorBytes(t), 0) + tensorBytes(out);
}

/** True for float dtypes (anything that is not an id/byte type). */
export function isFloat(dtype: DType): boolean {
  return dtype !== "i32" && dtype !== "u8";
}

/** Throws unless `t` has the given rank. */
export function expectRank(what: string, t: TensorType, rank: number | number[]): void {
  const ok = typeof rank === "number" ? t.shape.length === rank : rank.includes(t.shape.length);
  if (!ok) throw new Error(`${what} must have rank ${rank}, got ${formatShape(t.shape)}`);
}

/** Throws unless `t` has dtype `dtype`. */
export function expectDType(what: string, t: TensorType, dtype: DType): void {
  if (t.dtype !== dtype) throw new Error(`${what} must be ${dtype}, got ${t.dtype}`);
}

/** Throws unless `t` is a float tensor. */
export function expectFloat(what: string, t: TensorType): void {
  if (!isFloat(t.dtype)) throw new Error(`${what} must be a float tensor, got ${t.dtype}`);
}

/** Throws unless two dims are equal. */
export function expectDim(what: string, a: Dim, b: Dim): void {
  if (!dimEquals(a, b)) throw new Error(`${what}: ${fmt(a)} ≠ ${fmt(b)}`);
}

/** Throws unless `d` is a concrete number; returns it. */
export function concreteDim(what: string, d: Dim): number {
  if (typeof d !== "number") throw new Error(`${what} must be a concrete dimension, got symbol ${d.sym}`);
  return d;
}

/** Throws unless `v` is a positive integer. */
export function expectPositiveInt(what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new Error(`${what} must be a positive integer`);
  return v;
}

/** The last dim of a shape. */
export function lastDim(s: Shape): Dim {
  return s[s.length - 1];
}

function fmt(d: Dim): string {
  return typeof d === "number" ? String(d) : d.sym;
}

/**
 * An elementwise binary op on two tensors of the same shape (no broadcasting: the model never needs it, and
 * kernels stay trivial). The output keeps `a`'s dtype.
 */
export function elementwiseBinary(name: string, f: (a: number, b: number) => number): OpDef<Record<string, never>> {
  return {
    name,
    inputNames: ["a", "b"],
    inferShape([a, b]) {
      expectFloat("a", a);
      expectFloat("b", b);
      if (a.shape.length !== b.shape.length || !a.shape.every((d, i) => dimEquals(d, b.shape[i]))) {
        throw new Error(`shapes must be equal: ${formatShape(a.shape)} vs ${formatShape(b.shape)}`);
      }
      return { shape: [...a.shape], dtype: a.dtype };
    },
    reference([a, b], out) {
      const n = out.data.length;
      for (let i = 0; i < n; i++) out.data[i] = f(a.data[i], b.data[i]);
    },
    cost(inputs, out) {
      return { flops: numel(out.shape), bytes: ioBytes(inputs, out) };
    },
  };
}

/**
 * Runs `def`'s reference on concrete tensors: infers the output shape, allocates it, computes. For tests and
 * for backends comparing against the oracle op by op.
 */
// deno-lint-ignore no-explicit-any
export function runReference(def: OpDef<any>, inputs: RefTensor[], attrs: Attrs = {}): RefTensor {
  const t = def.inferShape(inputs.map((x) => ({ shape: x.shape, dtype: x.dtype })), attrs);
  const shape = t.shape as number[];
  const n = numel(shape);
  const out: RefTensor = { data: t.dtype === "i32" ? new Int32Array(n) : new Float32Array(n), shape, dtype: t.dtype };
  def.reference(inputs, out, attrs);
  return out;
}

/** A concrete f32 tensor for tests and examples. */
export function f32(shape: number[], values: ArrayLike<number>): RefTensor {
  if (values.length !== numel(shape)) throw new Error(`f32: ${values.length} values for shape [${shape}]`);
  return { data: Float32Array.from(values), shape, dtype: "f32" };
}

/** A concrete i32 tensor for tests and examples. */
export function i32(shape: number[], values: ArrayLike<number>): RefTensor {
  if (values.length !== numel(shape)) throw new Error(`i32: ${values.length} values for shape [${shape}]`);
  return { data: Int32Array.from(values), shape, dtype: "i32" };
}
