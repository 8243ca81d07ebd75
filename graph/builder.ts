/**
 * The graph builder: declare inputs and weights, apply ops through the typed helpers in `ops/`, name
 * intermediates, mark outputs, then `build()` the plain-data {@link Graph}. Shapes are inferred as each node is
 * added, so a wrong shape throws at the line that built it, naming the node.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./builder.ts";
 * import { sym } from "./ir.ts";
 * import { matmul } from "../ops/matmul.ts";
 *
 * const g = new GraphBuilder();
 * const x = g.input("x", [sym("T", 128), 64], "f32");
 * const w = g.weight("proj.weight", [32, 64], "bf16");
 * g.output("y", g.name(matmul(g, x, w), "proj"));
 * const graph = g.build(); // nodes[0].shape is [T, 32]
 * ```
 *
 * @module
 */

import type { DType } from "./dtype.ts";
import {
  type Attrs,
  formatShape,
  type Graph,
  type InputDecl,
  type Node,
  type Shape,
  type SymDim,
  type TensorType,
} from "./ir.ts";

/**
 * What the builder needs of an op: its name, arity and shape inference. `ops/op.ts`'s `OpDef` is one; the builder
 * takes the definition itself (not a name looked up in a registry), so graph/ never imports ops/.
 */
export interface OpSignature {
  /** Op name as it appears in `Node.op`. */
  name: string;
  /** Input names, for messages; the arity unless `variadic`. */
  inputNames: string[];
  /** Accepts one or more inputs (all named `inputNames[0]`). */
  variadic?: boolean;
  /** Output shape and dtype; throws an `Error` saying what is wrong. */
  // deno-lint-ignore no-explicit-any
  inferShape(inputs: TensorType[], attrs: any): TensorType;
}

/** A handle on a tensor of the graph being built. */
export type Tensor = { readonly id: number; readonly shape: Shape; readonly dtype: DType };

/** Per-node options every op helper accepts next to its attributes. */
export type NodeOptions = { name?: string; layer?: number };

/** Builds one {@link Graph}. Not reusable after `build()` is fine: `build()` returns a copy. */
export class GraphBuilder {
  /** Layer stamped on new nodes when a helper does not pass one (set it while building a decoder layer). */
  layer: number | undefined = undefined;

  #tensors: Tensor[] = [];
  #inputs: InputDecl[] = [];
  #weights = new Map<string, { id: number; name: string; shape: Shape; dtype: DType }>();
  #nodes: Node[] = [];
  #nodeById = new Map<number, Node>();
  #outputs = new Map<string, number>();
  #symbols = new Map<string, number>();
  #names = new Set<string>();

  /** Declares a per-run input (token ids, positions, block tables…). */
  input(name: string, shape: Shape, dtype: DType): Tensor {
    return this.#declareInput(name, shape, dtype, false);
  }

  /**
   * Declares a persistent input (a KV cache): it survives across runs and ops may write it in place.
   * Its shape must be concrete.
   */
  state(name: string, shape: Shape, dtype: DType): Tensor {
    for (const d of shape) {
      if (typeof d !== "number") throw new Error(`state ${name}: shape ${formatShape(shape)} must be concrete`);
    }
    return this.#declareInput(name, shape, dtype, true);
  }

  /**
   * Declares a weight by canonical name at its stored dtype. Declaring the same name again returns the same
   * tensor (shape and dtype must agree).
   */
  weight(name: string, shape: Shape, dtype: DType): Tensor {
    const prev = this.#weights.get(name);
    if (prev) {
      if (formatShape(prev.shape) !== formatShape(shape) || prev.dtype !== dtype) {
        throw new Error(
          `weight ${name} redeclared as ${formatShape(shape)} ${dtype}, was ${formatShape(prev.shape)} ${prev.dtype}`,
        );
      }
      return this.#tensors[prev.id];
    }
    this.#checkSymbols(`weight ${name}`, shape);
    const t = this.#newTensor(shape, dtype);
    this.#weights.set(name, { id: t.id, name, shape: [...shape], dtype });
    return t;
  }

  /**
   * Adds a node applying the op `def` (an `OpDef` of `ops/`). Prefer the typed helper of each op file; they call
   * this. Throws with the node's op, id, name and input shapes when shape inference fails.
   */
  op(def: OpSignature, inputs: Tensor[], attrs: Attrs = {}, options: NodeOptions = {}): Tensor {
    const id = this.#tensors.length;
    const layer = options.layer ?? this.layer;
    const label = `${def.name} #${id}${options.name ? ` "${options.name}"` : ""}${
      layer !== undefined ? ` (layer ${layer})` : ""
    }`;
    for (const t of inputs) {
      if (this.#tensors[t?.id] !== t) throw new Error(`${label}: an input does not belong to this graph builder`);
    }
    const arityOk = def.variadic ? inputs.length >= 1 : inputs.length === def.inputNames.length;
    if (!arityOk) {
      throw new Error(`${label}: expects inputs (${def.inputNames.join(", ")}), got ${inputs.length}`);
    }
    let out;
    try {
      out = def.inferShape(inputs.map((t) => ({ shape: t.shape, dtype: t.dtype })), attrs);
      this.#checkSymbols("output", out.shape);
    } catch (e) {
      const shapes = inputs.map((t, i) => {
        const n = def.variadic ? `${def.inputNames[0]}${i}` : def.inputNames[i];
        return `${n}=${formatShape(t.shape)} ${t.dtype}`;
      });
      throw new Error(`${label}: ${(e as Error).message} (inputs: ${shapes.join(", ")})`);
    }
    const t = this.#newTensor(out.shape, out.dtype);
    const node: Node = {
      id,
      op: def.name,
      inputs: inputs.map((i) => i.id),
      attrs: structuredClone(attrs),
      shape: [...out.shape],
      dtype: out.dtype,
      name: options.name ?? `${def.name}.${id}`,
    };
    if (layer !== undefined) node.layer = layer;
    this.#nodes.push(node);
    this.#nodeById.set(id, node);
    return t;
  }

  /** Names the node producing `t` (and sets its layer when given); returns `t` for chaining. */
  name(t: Tensor, label: string, layer?: number): Tensor {
    const node = this.#nodeById.get(t?.id);
    if (!node || this.#tensors[t.id] !== t) throw new Error(`name("${label}"): only op results can be named`);
    node.name = label;
    if (layer !== undefined) node.layer = layer;
    return t;
  }

  /** Marks `t` as a named graph output. */
  output(name: string, t: Tensor): void {
    if (this.#outputs.has(name)) throw new Error(`output ${name} declared twice`);
    if (this.#tensors[t?.id] !== t) throw new Error(`output ${name}: tensor does not belong to this graph builder`);
    this.#outputs.set(name, t.id);
  }

  /** The finished graph (a deep copy: the builder may keep growing). */
  build(): Graph {
    if (this.#outputs.size === 0) throw new Error("graph has no outputs");
    return structuredClone({
      inputs: this.#inputs,
      weights: [...this.#weights.values()],
      nodes: this.#nodes,
      outputs: [...this.#outputs].map(([name, id]) => ({ name, id })),
    });
  }

  #declareInput(name: string, shape: Shape, dtype: DType, state: boolean): Tensor {
    if (this.#names.has(name)) throw new Error(`input ${name} declared twice`);
    this.#checkSymbols(`input ${name}`, shape);
    this.#names.add(name);
    const t = this.#newTensor(shape, dtype);
    this.#inputs.push({ id: t.id, name, shape: [...shape], dtype, state });
    return t;
  }

  #newTensor(shape: Shape, dtype: DType): Tensor {
    const t: Tensor = Object.freeze({ id: this.#tensors.length, shape: Object.freeze([...shape]) as Shape, dtype });
    this.#tensors.push(t);
    return t;
  }

  /** One symbol, one max: a `T` of 128 here and 256 there is a bug in the caller. */
  #checkSymbols(what: string, shape: Shape): void {
    for (const d of shape) {
      if (typeof d === "number") {
        if (!Number.isInteger(d) || d < 0) throw new Error(`${what}: bad dimension ${d}`);
        continue;
      }
      const s = d as SymDim;
      const max = this.#symbols.get(s.sym);
      if (max === undefined) this.#symbols.set(s.sym, s.max);
      else if (max !== s.max) throw new Error(`${what}: symbol ${s.sym} has max ${s.max}, elsewhere ${max}`);
    }
  }
}
