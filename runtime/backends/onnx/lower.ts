/**
 * Lowers a segment's nodes to one ONNX graph. Every tensor the segment reads (weights included) is a graph input
 * fed at run time from the backend's host buffers, so the model holds no weight bytes: one copy of each weight
 * serves every session (every segment and every plan), and a session is cheap to build.
 *
 * - `matmul` (`x · Wᵀ`): f32 weights through `Gemm` with `transB` (W stays `[N, K]`, as the other backends and the
 *   checkpoints store it); q8 weights, when the backend keeps them (`q8MatMulNBits`), through com.microsoft
 *   `MatMulNBits` (bits 8, block 32: our q8 codes with the sign bit flipped, which is its default zero point 128,
 *   and our f32 block scales, unchanged).
 * - `rms_norm`: the composition `x · 1/√(mean(x²) + ε) · w` (ReduceMean over the last axis).
 * - `swiglu`: `Split` into gate ‖ up, `gate · σ(gate) · up`.
 * - `embedding`: `Gather` of the table's rows (i32 ids).
 *
 * @module
 */

import type { DType } from "../../../graph/dtype.ts";
import type { Dim, Node, TensorInfo } from "../../../graph/ir.ts";
import { Q8_BLOCK } from "../../../weights/codecs.ts";
import { type ElemType, i64Tensor, type NodeDef, type TensorValue, type ValueInfo } from "./proto.ts";

/** The ops lowered to ONNX graphs (`moe_experts` runs as per-expert sessions instead: moe.ts). */
export const ONNX_OPS: readonly string[] = ["matmul", "rms_norm", "swiglu", "embedding"];

/** True when a weight of `shape` stored as `stored` can be a MatMul's `[N, K]` (q8: K a multiple of 32). */
function matrixOk(shape: readonly unknown[], stored: DType): boolean {
  const k = shape[shape.length - 1];
  return stored === "f32" || (stored === "q8" && typeof k === "number" && k % Q8_BLOCK === 0);
}

/**
 * True when `node` lowers, given its inputs' stored dtypes (`stored[i]` for `inputs[i]`): f32 activations, f32
 * or q8 matmul and expert weights (q8 with K a multiple of 32), f32 norm weights and embedding tables, i32 ids.
 */
export function lowers(node: Node, inputs: readonly TensorInfo[], stored: readonly DType[]): boolean {
  if (node.dtype !== "f32") return false;
  switch (node.op) {
    case "matmul":
      return stored[0] === "f32" && matrixOk(inputs[1].shape, stored[1]);
    case "moe_experts":
      return stored[0] === "f32" && stored[1] === "i32" && stored[2] === "f32" &&
        matrixOk(inputs[3].shape, stored[3]) && matrixOk(inputs[4].shape, stored[4]);
    case "rms_norm":
      return stored[0] === "f32" && stored[1] === "f32";
    case "swiglu":
      return stored[0] === "f32";
    case "embedding":
      return stored[0] === "i32" && stored[1] === "f32";
    default:
      return false;
  }
}

const ELEM: Partial<Record<DType, ElemType>> = { f32: "float32", i32: "int32" };

/** The ONNX dims of a graph shape: symbols become `dim_param`s bound per run. */
export function onnxDims(shape: readonly Dim[]): (number | string)[] {
  return shape.map((d) => typeof d === "number" ? d : d.sym);
}

/** The graph input name of tensor `id` (a q8 weight is two inputs: codes and scales). */
export const inputName = (id: number, part: "" | "q" | "s" = ""): string => `t${id}${part ? `_${part}` : ""}`;

/** A weight as the `[rows, K]` matrix of its last dim (experts' rows stacked). */
export function matrixDims(shape: readonly number[]): [number, number] {
  const k = shape[shape.length - 1];
  return [shape.reduce((a, b) => a * b, 1) / k, k];
}

/** The graph inputs one segment input becomes, given its stored dtype. */
export function inputInfos(t: TensorInfo, stored: DType): ValueInfo[] {
  if (stored === "q8") {
    const [n, k] = matrixDims(t.shape as number[]);
    return [
      { name: inputName(t.id, "q"), elemType: "uint8", dims: [n, k / Q8_BLOCK, Q8_BLOCK] },
      { name: inputName(t.id, "s"), elemType: "float32", dims: [n * (k / Q8_BLOCK)] },
    ];
  }
  const elemType = ELEM[stored];
  if (!elemType) throw new Error(`onnx: tensor ${t.name} is stored as ${stored}, which no lowered op reads`);
  return [{ name: inputName(t.id), elemType, dims: onnxDims(t.shape) }];
}

/** The ONNX nodes and constants of a segment, built node by node. */
export class Lowering {
  readonly nodes: NodeDef[] = [];
  readonly constants: TensorValue[] = [];
  #next = 0;

  constructor(readonly table: readonly TensorInfo[], readonly stored: (id: number) => DType) {}

  #fresh(what: string): string {
    return `_${what}${this.#next++}`;
  }

  #emit(op: string, inputs: string[], outputs: string[], node: Node, extra: Partial<NodeDef> = {}): void {
    this.nodes.push({ op, inputs, outputs, name: `${node.name}#${node.id}/${this.nodes.length}`, ...extra });
  }

  #i64(values: number[]): string {
    const name = this.#fresh("c");
    this.constants.push(i64Tensor([values.length], values, name));
    return name;
  }

  /** Appends the ONNX nodes computing `node` (its result named `inputName(node.id)`). */
  lower(node: Node): void {
    const out = inputName(node.id);
    const [a, b] = node.inputs;
    switch (node.op) {
      case "matmul": {
        const w = this.table[b];
        const [n, k] = w.shape as number[];
        const x = this.table[a];
        if (this.stored(b) === "q8") {
          this.#emit("MatMulNBits", [inputName(a), inputName(b, "q"), inputName(b, "s")], [out], node, {
            domain: "com.microsoft",
            attrs: { K: { int: k }, N: { int: n }, bits: { int: 8 }, block_size: { int: Q8_BLOCK } },
          });
        } else if (x.shape.length === 2) {
          this.#emit("Gemm", [inputName(a), inputName(b)], [out], node, { attrs: { transB: { int: 1 } } });
        } else {
          // Gemm is 2-D: rows of x, then back to x's leading dims with N last.
          const flat = this.#fresh("x"), y = this.#fresh("y"), shape = this.#fresh("s"), lead = this.#fresh("l");
          const full = this.#fresh("o");
          this.#emit("Reshape", [inputName(a), this.#i64([-1, k])], [flat], node);
          this.#emit("Gemm", [flat, inputName(b)], [y], node, { attrs: { transB: { int: 1 } } });
          this.#emit("Shape", [inputName(a)], [shape], node);
          this.#emit("Slice", [shape, this.#i64([0]), this.#i64([-1])], [lead], node);
          this.#emit("Concat", [lead, this.#i64([n])], [full], node, { attrs: { axis: { int: 0 } } });
          this.#emit("Reshape", [y, full], [out], node);
        }
        return;
      }
      case "rms_norm": {
        const eps = node.attrs.eps as number;
        const sq = this.#fresh("sq"), ms = this.#fresh("ms"), add = this.#fresh("a"), rt = this.#fresh("r");
        const inv = this.#fresh("i"), xn = this.#fresh("n"), e = this.#fresh("eps");
        this.constants.push({
          name: e,
          elemType: "float32",
          dims: [],
          data: new Uint8Array(Float32Array.of(eps).buffer),
        });
        this.#emit("Mul", [inputName(a), inputName(a)], [sq], node);
        this.#emit("ReduceMean", [sq, this.#i64([-1])], [ms], node, { attrs: { keepdims: { int: 1 } } });
        this.#emit("Add", [ms, e], [add], node);
        this.#emit("Sqrt", [add], [rt], node);
        this.#emit("Reciprocal", [rt], [inv], node);
        this.#emit("Mul", [inputName(a), inv], [xn], node);
        this.#emit("Mul", [xn, inputName(b)], [out], node);
        return;
      }
      case "swiglu": {
        const g = this.#fresh("g"), u = this.#fresh("u"), s = this.#fresh("sg"), gs = this.#fresh("gs");
        this.#emit("Split", [inputName(a)], [g, u], node, { attrs: { axis: { int: -1 }, num_outputs: { int: 2 } } });
        this.#emit("Sigmoid", [g], [s], node);
        this.#emit("Mul", [g, s], [gs], node);
        this.#emit("Mul", [gs, u], [out], node);
        return;
      }
      case "embedding":
        this.#emit("Gather", [inputName(b), inputName(a)], [out], node, { attrs: { axis: { int: 0 } } });
        return;
      default:
        throw new Error(`onnx: ${node.op} "${node.name}" does not lower to ONNX`);
    }
  }
}
