/**
 * The graph IR: plain, JSON-serialisable data. A graph declares its inputs, its weights (by canonical name and
 * stored dtype) and its nodes in topological order. Every tensor — input, weight or node result — has a unique
 * integer id drawn from one counter, so `Node.inputs` can refer to any of them.
 *
 * Shapes are row-major (PyTorch order). A dimension is a number or a symbol bound per run (`T` tokens in the
 * step, `S` sequences, `R` sampled rows…), so one graph and one plan serve every step of a shape bucket.
 *
 * @example
 * ```ts
 * import { resolveShape, sym } from "./ir.ts";
 * const T = sym("T", 4096);
 * resolveShape([T, 64], { T: 7 }); // [7, 64]
 * ```
 *
 * @module
 */

import type { DType } from "./dtype.ts";

export type { DType } from "./dtype.ts";

/** A symbolic dimension: bound per run through `vars`, never above `max` (buffers are sized by `max`). */
export type SymDim = { sym: string; max: number };

/** A dimension: concrete, or symbolic (see {@link SymDim}). */
export type Dim = number | SymDim;

/** A row-major shape. */
export type Shape = Dim[];

/** Values of run-time symbols, e.g. `{ T: 7, S: 2 }`. */
export type Vars = Record<string, number>;

/** An attribute value: JSON only, so graphs round-trip through `JSON.stringify`. */
export type AttrValue = number | string | boolean | null | AttrValue[] | { [key: string]: AttrValue };

/** Node attributes (op-specific; each op file documents its own). */
export type Attrs = Record<string, AttrValue>;

/** Shape and element type of a tensor. */
export type TensorType = { shape: Shape; dtype: DType };

/**
 * A graph input. `state: true` marks a persistent tensor (e.g. a layer's KV cache): the executor keeps it alive
 * across runs and ops may write it in place (see `OpDef.writesInputs`). State shapes must be concrete.
 */
export type InputDecl = { id: number; name: string; shape: Shape; dtype: DType; state: boolean };

/** A weight, by canonical name. `dtype` is the stored dtype (f32, bf16, f8e4m3, nvfp4, q8…). */
export type WeightDecl = { id: number; name: string; shape: Shape; dtype: DType };

/** One op application; the node id is also the id of its (single) result tensor. */
export type Node = {
  id: number;
  op: string;
  inputs: number[];
  attrs: Attrs;
  shape: Shape;
  dtype: DType;
  name: string;
  /** Decoder layer the node belongs to (omitted for nodes outside layers). */
  layer?: number;
};

/** A named graph result. */
export type OutputDecl = { name: string; id: number };

/** A whole graph. Nodes are in topological order (the builder guarantees it). */
export type Graph = {
  inputs: InputDecl[];
  weights: WeightDecl[];
  nodes: Node[];
  outputs: OutputDecl[];
};

/** What kind of declaration a tensor id refers to. */
export type TensorKind = "input" | "state" | "weight" | "node";

/** Any tensor of a graph, by id (see {@link tensorTable}). */
export type TensorInfo = { id: number; kind: TensorKind; name: string; shape: Shape; dtype: DType; layer?: number };

/** A symbolic dimension. */
export function sym(name: string, max: number): SymDim {
  if (!Number.isInteger(max) || max < 1) throw new Error(`symbol ${name}: max must be a positive integer, got ${max}`);
  return { sym: name, max };
}

/** True when `d` is symbolic. */
export function isSym(d: Dim): d is SymDim {
  return typeof d === "object";
}

/** Two dims are equal when both are the same number or both the same symbol. */
export function dimEquals(a: Dim, b: Dim): boolean {
  if (typeof a === "number" || typeof b === "number") return a === b;
  return a.sym === b.sym;
}

/** True when two shapes have the same rank and equal dims. */
export function shapeEquals(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => dimEquals(d, b[i]));
}

/** `T` or `64`. */
export function formatDim(d: Dim): string {
  return typeof d === "number" ? String(d) : d.sym;
}

/** `[T, 32, 128]`. */
export function formatShape(s: Shape): string {
  return `[${s.map(formatDim).join(", ")}]`;
}

/** The value of `d` under `vars`; throws when a symbol is unbound or above its max. */
export function resolveDim(d: Dim, vars: Vars = {}): number {
  if (typeof d === "number") return d;
  const v = vars[d.sym];
  if (v === undefined) throw new Error(`symbol ${d.sym} is not bound (vars: ${JSON.stringify(vars)})`);
  if (!Number.isInteger(v) || v < 0 || v > d.max) throw new Error(`symbol ${d.sym} = ${v} outside 0..${d.max}`);
  return v;
}

/** A concrete shape under `vars`. */
export function resolveShape(s: Shape, vars: Vars = {}): number[] {
  return s.map((d) => resolveDim(d, vars));
}

/** The largest shape `s` can take (every symbol at its max): what a buffer must hold. */
export function maxShape(s: Shape): number[] {
  return s.map((d) => typeof d === "number" ? d : d.max);
}

/** Product of concrete dims. */
export function numel(s: readonly number[]): number {
  let n = 1;
  for (const d of s) n *= d;
  return n;
}

/** Every tensor of `graph`, indexed by id. */
export function tensorTable(graph: Graph): TensorInfo[] {
  const table: TensorInfo[] = [];
  for (const i of graph.inputs) {
    table[i.id] = { id: i.id, kind: i.state ? "state" : "input", name: i.name, shape: i.shape, dtype: i.dtype };
  }
  for (const w of graph.weights) {
    table[w.id] = { id: w.id, kind: "weight", name: w.name, shape: w.shape, dtype: w.dtype };
  }
  for (const n of graph.nodes) {
    const t: TensorInfo = { id: n.id, kind: "node", name: n.name, shape: n.shape, dtype: n.dtype };
    if (n.layer !== undefined) t.layer = n.layer;
    table[n.id] = t;
  }
  return table;
}

/** Every symbol used by `graph`, with its max. */
export function graphSymbols(graph: Graph): Record<string, number> {
  const out: Record<string, number> = {};
  const visit = (s: Shape) => {
    for (const d of s) if (typeof d === "object") out[d.sym] = Math.max(out[d.sym] ?? 0, d.max);
  };
  for (const t of [...graph.inputs, ...graph.weights, ...graph.nodes]) visit(t.shape);
  return out;
}
