/**
 * What every scheduler pass reads: the graph, its tensor table, the backends in preference order, the options,
 * and who consumes what. Built once per `schedule()` call; passes add their results alongside, not into it.
 *
 * @module
 */

import type { Graph, Node, TensorInfo, WeightDecl } from "../../graph/ir.ts";
import { tensorTable } from "../../graph/ir.ts";
import type { Backend } from "../backend.ts";
import { ScheduleError } from "./plan.ts";

/** Options of `schedule()`. */
export type ScheduleOptions = {
  /** Any fallback is an error naming the nodes (for `--backend X --strict`: all of X or nothing). */
  strict?: boolean;
  /**
   * Pins weights to a backend by name, e.g. MoE experts on the CPU and the rest on the GPU:
   * `(w) => w.name.includes(".experts.") ? "wasm" : undefined`. `undefined` leaves the weight to pass 1.
   */
  weightPlacement?: (weight: WeightDecl, consumers: readonly Node[]) => string | undefined;
  /**
   * Bytes of each backend pass 1 keeps free of weights, for its state, arena and I/O (set when a model is split
   * over several instances of one backend, so each instance keeps room for its layers' caches).
   */
  reserveBytes?: number;
  /**
   * Bytes other plans already hold on a backend, by name (the step plan's, when the vision plan is made beside it):
   * weights are placed and the plan checked against what is left.
   */
  usedBytes?: Readonly<Record<string, number>>;
  /** Plan as if every backend had unlimited memory (sizing: how much a plan would need). */
  sizing?: boolean;
  /**
   * Where state tensors this plan shares with others already live, by name (the image store of the step and
   * vision plans; the vision encoder's hidden state between its stage plans): the plan keeps them there, and runs
   * there the ops without weights that read or write them, so every plan finds one buffer.
   */
  stateHomes?: Readonly<Record<string, string>>;
  /**
   * Where weights this plan shares with others already live, by name (the target's embedding and head an EAGLE
   * draft declares under the same names): the plan keeps them there (one buffer) and does not count them again
   * (`usedBytes` holds them); the ops reading them run there, and a copy of activations goes where they are needed.
   */
  weightHomes?: Readonly<Record<string, string>>;
};

/** Shared, read-only inputs of the passes. */
export type Context = {
  graph: Graph;
  table: TensorInfo[];
  backends: readonly Backend[];
  byName: ReadonlyMap<string, Backend>;
  options: ScheduleOptions;
  /** Tensor id → nodes reading it, in topological order. */
  consumers: ReadonlyMap<number, Node[]>;
  /** Cached `backend.supports(node, inputs)`: passes ask the same question several times. */
  supports(backend: Backend, node: Node): boolean;
};

/** Checks the backend list and indexes the graph. */
export function makeContext(graph: Graph, backends: readonly Backend[], options: ScheduleOptions): Context {
  if (backends.length === 0) throw new ScheduleError("schedule: no backends given");
  const byName = new Map<string, Backend>();
  for (const b of backends) {
    if (byName.has(b.name)) throw new ScheduleError(`schedule: backend ${b.name} given twice`);
    byName.set(b.name, b);
  }
  const table = tensorTable(graph);
  const consumers = new Map<number, Node[]>();
  for (const n of graph.nodes) {
    for (const i of new Set(n.inputs)) {
      const list = consumers.get(i);
      if (list) list.push(n);
      else consumers.set(i, [n]);
    }
  }
  const cache = new Map<string, boolean>();
  const supports = (backend: Backend, node: Node): boolean => {
    const key = `${backend.name}\u0000${node.id}`;
    let ok = cache.get(key);
    if (ok === undefined) {
      ok = backend.supports(node, node.inputs.map((i) => table[i]));
      cache.set(key, ok);
    }
    return ok;
  };
  return { graph, table, backends, byName, options, consumers, supports };
}

/** `rms_norm "final_norm" (#12)`: how messages name a node. */
export function describeNode(node: Node): string {
  return `${node.op} "${node.name}" (#${node.id}${node.layer !== undefined ? `, layer ${node.layer}` : ""})`;
}
