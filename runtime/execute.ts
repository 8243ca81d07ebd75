/**
 * The one-backend executor: the graph scheduled on a single backend (one segment, intermediates in one arena) and
 * run by the plan executor. Weights are uploaded once; inputs and outputs get buffers sized for their largest
 * shape, reused across runs; state tensors (KV caches) live on the backend between runs, so prefill then decode
 * share one cache. For several backends, use `schedule` and `PlanExecutor` directly.
 *
 * @example
 * ```ts
 * import { Executor, runGraph } from "./execute.ts";
 * import { referenceBackend } from "./backends/reference.ts";
 * // one-shot:
 * // const backend = await referenceBackend.create();
 * // const { logits } = await runGraph(graph, backend, { weights, inputs: { ids }, vars: { T: 3 } });
 * // stateful:
 * // const ex = await Executor.create(graph, backend, { weights });
 * // await ex.run({ inputs: prefillInputs });  await ex.run({ inputs: decodeInputs });
 * ```
 *
 * @module
 */

import type { Graph } from "../graph/ir.ts";
import type { Backend } from "./backend.ts";
import { type HostArray, PlanExecutor, type RunOptions, type WeightSources } from "./plan_executor.ts";
import { type Plan, schedule } from "./schedule.ts";

export { solveVars } from "./plan_executor.ts";
export type { HostArray, RunOptions, WeightSources } from "./plan_executor.ts";

/** Options of {@link Executor.create}: where the weights come from (see {@link WeightSources}). */
export type ExecutorOptions = { weights: WeightSources };

/** Runs one graph on one backend, keeping weights and state resident: a one-backend plan and its executor. */
export class Executor {
  /** The graph this executor runs. */
  readonly graph: Graph;
  /** Where it runs. */
  readonly backend: Backend;
  #plan: PlanExecutor;

  private constructor(graph: Graph, backend: Backend, plan: PlanExecutor) {
    this.graph = graph;
    this.backend = backend;
    this.#plan = plan;
  }

  /** Schedules the graph on `backend` alone (any unsupported op is an error), uploads weights, zeroes state. */
  static async create(graph: Graph, backend: Backend, options: ExecutorOptions): Promise<Executor> {
    const plan = schedule(graph, [backend], { strict: true });
    return new Executor(graph, backend, await PlanExecutor.create(graph, plan, [backend], options));
  }

  /** The plan being run (segments, memory per backend). */
  get plan(): Plan {
    return this.#plan.plan;
  }

  /** Runs the graph once; returns the graph outputs asked for (default all) by name. */
  run(options: RunOptions): Promise<Record<string, HostArray>> {
    return this.#plan.run(options);
  }

  /** Overwrites a state tensor (e.g. restores a cache), from byte `offset`. */
  writeState(name: string, data: ArrayBufferView, offset = 0): void {
    this.#plan.writeState(name, data, offset);
  }

  /** Reads a whole state tensor back. */
  readState(name: string): Promise<HostArray> {
    return this.#plan.readState(name);
  }

  /** Frees every buffer this executor allocated. */
  dispose(): void {
    this.#plan.dispose();
  }
}

/** Options of {@link runGraph}: `state` arrays are uploaded before the run and overwritten with the result. */
export type RunGraphOptions = ExecutorOptions & RunOptions & { state?: Record<string, HostArray> };

/**
 * Runs `graph` once on `backend` and returns its outputs by name. State tensors passed in `state` are copied in
 * and written back, so a caller can carry a cache from call to call; for many steps prefer {@link Executor}.
 */
export async function runGraph(
  graph: Graph,
  backend: Backend,
  options: RunGraphOptions,
): Promise<Record<string, HostArray>> {
  const ex = await Executor.create(graph, backend, options);
  try {
    for (const [name, data] of Object.entries(options.state ?? {})) ex.writeState(name, data);
    const out = await ex.run(options);
    for (const [name, data] of Object.entries(options.state ?? {})) data.set((await ex.readState(name)) as never);
    return out;
  } finally {
    ex.dispose();
  }
}
