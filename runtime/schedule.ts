/**
 * The scheduler: compiles a graph for an ordered list of backends into a {@link Plan} — plain JSON data saying
 * which backend runs which nodes, where every tensor lives, which tensors are copied between backends, which ops
 * fell back from the backend asked for, and how much memory each backend needs. One plan serves every step of a
 * shape bucket (buffers are sized at the largest value of every symbol); nothing is rebuilt per token.
 *
 * The passes, in order, one function each:
 * 1. place weights (`placeWeights`) — 2. place ops (`placeOps`) — 3. fall back (`fallBack`) — 4. split into
 * segments and insert copies (`splitSegments`; weights over a backend's binding limit split into row ranges) —
 * 5. fuse (`fuse`, a hook) — 6. liveness and memory plan (`planMemory`; arenas split under the binding limit) —
 * 7. emit (`emit`).
 *
 * @example
 * ```ts
 * import { formatPlan, schedule } from "./schedule.ts";
 * import { createNullBackend } from "./backends/null.ts";
 * // const plan = schedule(graph, [createNullBackend({ name: "gpu", ops: ["matmul"] }), cpu], { strict: false });
 * // console.log(formatPlan(plan, graph));  // segments, copies, fallbacks, memory per backend
 * ```
 *
 * @module
 */

import { type Graph, graphSymbols } from "../graph/ir.ts";
import { type Backend, tensorDType } from "./backend.ts";
import { type Context, makeContext, type ScheduleOptions } from "./schedule/context.ts";
import { planMemory } from "./schedule/memory.ts";
import { fallBack, placeOps, placeWeights } from "./schedule/place.ts";
import type { BackendMemory, Fallback, Location, Plan } from "./schedule/plan.ts";
import { type Split, splitSegments } from "./schedule/split.ts";

export type { ScheduleOptions } from "./schedule/context.ts";
export { formatPlan } from "./schedule/format.ts";
export * from "./schedule/plan.ts";

/**
 * Compiles `graph` for `backends` (in preference order: the first is the one asked for). Throws a
 * `ScheduleError` when an op runs nowhere, when `strict` and any op would fall back, or when a backend lacks the
 * memory the plan needs.
 */
export function schedule(graph: Graph, backends: readonly Backend[], options: ScheduleOptions = {}): Plan {
  const ctx = makeContext(graph, backends, options);
  const weightHomes = placeWeights(ctx); // 1
  const places = placeOps(ctx, weightHomes); // 2
  const { placement, fallbacks } = fallBack(ctx, places, weightHomes); // 3
  const split = fuse(ctx, splitSegments(ctx, placement, weightHomes)); // 4, 5
  const memory = planMemory(ctx, split); // 6
  return emit(ctx, split, fallbacks, memory); // 7
}

/**
 * Pass 5: fusion. Deliberately empty for now: the ops are already coarse (rms_norm, mla_attention, moe_experts)
 * and no backend advertises fused kernels yet. This is where patterns such as rms_norm → matmul would be rewritten
 * into one node of a segment, before liveness, so fused intermediates never get arena space.
 */
function fuse(_ctx: Context, split: Split): Split {
  return split;
}

/** Pass 7: the plain-data plan. */
function emit(
  ctx: Context,
  split: Split,
  fallbacks: Fallback[],
  memory: Record<string, BackendMemory>,
): Plan {
  const { table } = ctx;
  const loc = (slot: number): Location => {
    const s = split.slots[slot];
    return s.in === "arena" ? { in: s.in, offset: s.offset, arena: s.arena } : { in: s.in, offset: s.offset };
  };
  return {
    version: 1,
    backends: ctx.backends.map((b) => b.name),
    symbols: graphSymbols(ctx.graph),
    weights: ctx.graph.weights.map((w) => {
      const parts = split.weightParts.get(w.id);
      return { tensor: w.id, name: w.name, backends: split.weights.get(w.id)!, ...(parts ? { parts } : {}) };
    }),
    inputs: ctx.graph.inputs.filter((i) => !i.state).map((i) => ({
      tensor: i.id,
      name: i.name,
      backends: split.inputs.get(i.id) ?? [],
    })),
    state: ctx.graph.inputs.filter((i) => i.state).map((s) => ({
      tensor: s.id,
      name: s.name,
      backend: split.state.get(s.id)!,
    })),
    outputs: ctx.graph.outputs.map((o) => {
      const slot = split.slots[split.outputs.get(o.name)!];
      return { tensor: o.id, name: o.name, backend: slot.backend, in: slot.in };
    }),
    segments: split.segments.map((s) => ({
      backend: s.backend,
      activationDType: ctx.byName.get(s.backend)!.caps.activationDType,
      nodes: s.nodes,
      inputs: s.inputs,
      outputs: s.outputs,
      bindings: [...s.bindings].map(([tensor, slot]) => ({ tensor, ...loc(slot) })),
    })),
    copies: split.copies.map((c) => {
      const from = ctx.byName.get(c.from)!.caps, to = ctx.byName.get(c.to)!.caps, t = table[c.tensor];
      return {
        tensor: c.tensor,
        name: t.name,
        from: c.from,
        to: c.to,
        before: c.before,
        bytes: split.slots[c.src].bytes,
        src: loc(c.src),
        dst: loc(c.dst),
        fromDType: tensorDType(from, t),
        toDType: tensorDType(to, t),
      };
    }),
    fallbacks,
    steps: split.steps,
    memory: { perBackend: memory },
  };
}
