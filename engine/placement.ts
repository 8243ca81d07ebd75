/**
 * Backends for a model's graphs (the step graph, and the vision graph beside it): each scheduled over the preference
 * list, the later ones within the memory the earlier leave, and a `wasm` backend that cannot hold them all grown into
 * what can: the memory64 build (up to 16 GiB in one instance) or several instances (`wasm:0`, `wasm:1`…, each its own
 * memory and threads) over which the scheduler splits the model by layer, the residual stream crossing between them
 * by one memcpy. A per-instance `memoryBytes` (tests, small hosts) splits earlier.
 *
 * @module
 */

import { type Graph, tensorTable } from "../graph/ir.ts";
import { alignUp, type Backend, type BackendOptions, tensorBytes } from "../runtime/backend.ts";
import { MAX_BYTES_32, MAX_BYTES_64 } from "../runtime/backends/wasm/module.ts";
import { createBackends } from "../runtime/registry.ts";
import { type Plan, schedule, ScheduleError } from "../runtime/schedule.ts";
import { sharedArenaBytes } from "../runtime/plan_executor.ts";

/** Most wasm instances one model is split over (each has its own threads). */
const MAX_INSTANCES = 64;

/** Options of {@link planBackends}. */
export interface PlanBackendsOptions {
  /** Every op on the first backend, or an error. */
  strict?: boolean;
  /** Handed to every factory (threads, tuning, refused ops, a per-instance `memoryBytes`…). */
  backendOptions: BackendOptions & Record<string, unknown>;
  /** Where a line about the instance split goes. */
  log: (line: string) => void;
  /**
   * Per graph, the key of the arenas its executor shares with others (`PlanExecutorOptions.sharedArenas`; the
   * vision encoder's stages), or undefined: shared arenas count once, at the largest each plan asks.
   */
  arenaGroups?: readonly (string | undefined)[];
}

/** How the plans' memory is counted: graphs (for state sizes) and arena groups, aligned with the plans. */
type Sharing = {
  graphs: readonly Graph[];
  backends: readonly Backend[];
  arenaGroups?: readonly (string | undefined)[];
};

/**
 * What `plans` hold on each backend together (weights, state, arena, I/O), each buffer once: a state several plans
 * declare (the image store; the vision encoder's state between its stages) is one buffer, and arenas shared by a
 * group of executors are one set.
 */
function usedBy(plans: readonly Plan[], sharing: Sharing): Record<string, number> {
  const used: Record<string, number> = {};
  for (const p of plans) {
    for (const [name, m] of Object.entries(p.memory.perBackend)) {
      used[name] = (used[name] ?? 0) + m.weightBytes + m.stateBytes + m.arenaBytes + m.ioBytes;
    }
  }
  for (const [name, bytes] of Object.entries(countedTwice(plans, sharing))) used[name] -= bytes;
  return used;
}

/** Per backend, the bytes that summing `plans` counts more than once (shared state, shared arenas). */
function countedTwice(plans: readonly Plan[], { graphs, backends, arenaGroups }: Sharing): Record<string, number> {
  const seen = new Set<string>(), extra: Record<string, number> = {};
  const add = (backend: string, bytes: number) => extra[backend] = (extra[backend] ?? 0) + bytes;
  plans.forEach((p, i) => {
    const table = tensorTable(graphs[i]);
    for (const s of p.state) {
      const key = `${s.backend}\u0000${s.name}`, b = backends.find((b) => b.name === s.backend);
      if (!seen.has(key)) seen.add(key);
      else if (b) add(s.backend, alignUp(tensorBytes(b.caps, table[s.tensor]), b.caps.alignment));
    }
  });
  for (const key of new Set(arenaGroups?.filter((g) => g !== undefined))) {
    const group = plans.filter((_, i) => arenaGroups![i] === key);
    for (const p of group) for (const [name, m] of Object.entries(p.memory.perBackend)) add(name, m.arenaBytes);
    for (const [name, sizes] of Object.entries(sharedArenaBytes(group))) add(name, -sizes.reduce((a, b) => a + b, 0));
  }
  return extra;
}

/**
 * Schedules `graphs` in order over `backends`, each within the memory the ones before it leave, and keeping a state
 * an earlier plan placed (the image store, the encoder's state between stages) where it is.
 */
function scheduleAll(
  graphs: readonly Graph[],
  backends: readonly Backend[],
  o: { strict?: boolean; reserveBytes?: number; sizing?: boolean; arenaGroups?: readonly (string | undefined)[] },
): Plan[] {
  const plans: Plan[] = [], stateHomes: Record<string, string> = {};
  const { arenaGroups, ...options } = o, sharing = { graphs, backends, arenaGroups };
  for (const g of graphs) {
    const plan = schedule(g, backends, { ...options, usedBytes: usedBy(plans, sharing), stateHomes });
    for (const s of plan.state) stateHomes[s.name] ??= s.backend; // later plans keep a shared state there
    plans.push(plan);
  }
  return plans;
}

/**
 * Schedules `graphs` over `backends` (a preference list), and when the plans lack memory on `wasm`, replaces it by a
 * memory64 instance or by as many instances as the weights need. On failure every backend is disposed.
 */
export async function planBackends(
  graphs: readonly Graph[],
  backends: Backend[],
  o: PlanBackendsOptions,
): Promise<{ backends: Backend[]; plans: Plan[] }> {
  try {
    return { backends, plans: scheduleAll(graphs, backends, { strict: o.strict, arenaGroups: o.arenaGroups }) };
  } catch (e) {
    const at = backends.findIndex((b) => b.name === "wasm");
    if (!(e instanceof ScheduleError && e.memory) || at < 0) {
      for (const b of backends) b.dispose();
      throw e;
    }
    return await growWasm(graphs, backends, at, o);
  }
}

/** Replaces `backends[at]` (`wasm`) by instances that hold the plans; disposes everything if it gives up. */
async function growWasm(
  graphs: readonly Graph[],
  backends: Backend[],
  at: number,
  o: PlanBackendsOptions,
): Promise<{ backends: Backend[]; plans: Plan[] }> {
  const wasm = backends[at], others = backends.filter((_, i) => i !== at);
  // What the model needs on wasm: its plans with no memory limit.
  const sizing = scheduleAll(graphs, backends, { strict: o.strict, sizing: true, arenaGroups: o.arenaGroups });
  const perKind = sizing.map((p) => p.memory.perBackend[wasm.name]);
  const weights = perKind.reduce((n, m) => n + m.weightBytes, 0);
  // The most any instance needs besides its weights (a state several plans share counted once).
  const reserve = perKind.reduce((n, m) => n + m.stateBytes + m.arenaBytes + m.ioBytes, 0) -
    (countedTwice(sizing, { graphs, backends, arenaGroups: o.arenaGroups })[wasm.name] ?? 0);
  const perInstance = Math.min(MAX_BYTES_64, o.backendOptions.memoryBytes ?? MAX_BYTES_64);
  // What an instance of that size offers the plans (the backend keeps some for kernel scratch, stack and statics).
  const usable = perInstance - Math.min(256 * 2 ** 20, perInstance / 8) - 4 * 2 ** 20;
  const one = o.backendOptions.memoryBytes === undefined && weights + reserve <= usable;
  wasm.dispose();
  if (!one && usable - reserve < weights / MAX_INSTANCES) {
    for (const b of others) b.dispose();
    throw new ScheduleError(
      `the model does not fit wasm instances of ${perInstance} B: each needs room for ${reserve} B of cache, arena ` +
        `and I/O besides its share of ${weights} B of weights: larger instances, a smaller --dtype, or fewer or ` +
        `shorter sequences`,
      [],
      true,
    );
  }
  let n = one ? 1 : Math.max(2, Math.ceil(weights / (usable - reserve)));
  for (let tries = 0; tries < 4; tries++, n++) {
    const instances: Backend[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const options = {
          ...o.backendOptions,
          memoryBytes: perInstance,
          memory64: perInstance > MAX_BYTES_32,
          instance: n === 1 ? undefined : i,
        } as BackendOptions;
        instances.push(...await createBackends(["wasm"], options));
      }
      const list = [...others.slice(0, at), ...instances, ...others.slice(at)];
      const plans = scheduleAll(graphs, list, {
        strict: o.strict,
        reserveBytes: n === 1 ? 0 : reserve,
        arenaGroups: o.arenaGroups,
      });
      const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
      o.log(
        n === 1
          ? `wasm: ${gib(weights + reserve)} planned, over the wasm32 memory: the memory64 build`
          : `wasm: ${gib(weights + reserve)} planned: split by layer over ${n} instances of ${gib(perInstance)}`,
      );
      return { backends: list, plans };
    } catch (e) {
      for (const b of instances) b.dispose();
      if (!(e instanceof ScheduleError && e.memory)) {
        for (const b of others) b.dispose();
        throw e;
      }
      // Short of memory still (the per-instance reserve was not enough): one more instance.
    }
  }
  for (const b of others) b.dispose();
  throw new ScheduleError(
    `the model does not fit ${n} wasm instances of ${perInstance} B (${weights} B of weights, ${reserve} B of ` +
      `cache, arena and I/O): a smaller --dtype, or fewer or shorter sequences`,
    [],
    true,
  );
}
