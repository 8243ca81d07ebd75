/**
 * Backends for a step graph: the preference list created and scheduled, and a `wasm` backend that cannot hold the
 * model grown into what can: the memory64 build (up to 16 GiB in one instance) or several instances (`wasm:0`,
 * `wasm:1`…, each its own memory and threads) over which the scheduler splits the model by layer, the residual
 * stream crossing between them by one memcpy. A per-instance `memoryBytes` (tests, small hosts) splits earlier.
 *
 * @module
 */

import type { Graph } from "../graph/ir.ts";
import type { Backend, BackendOptions } from "../runtime/backend.ts";
import { createBackends } from "../runtime/registry.ts";
import { type Plan, schedule, ScheduleError } from "../runtime/schedule.ts";

/** The most one wasm instance holds (V8's limit for one memory64 `WebAssembly.Memory`). */
const INSTANCE_MAX = 2 ** 34;
/** The wasm32 build's limit: past it, instances take the memory64 build. */
const WASM32_MAX = 2 ** 32;
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
}

/**
 * Schedules `graph` over `backends` (a preference list), and when the plan lacks memory on `wasm`, replaces it by a
 * memory64 instance or by as many instances as the weights need. On failure every backend is disposed.
 */
export async function planBackends(
  graph: Graph,
  backends: Backend[],
  o: PlanBackendsOptions,
): Promise<{ backends: Backend[]; plan: Plan }> {
  try {
    try {
      return { backends, plan: schedule(graph, backends, { strict: o.strict }) };
    } catch (e) {
      const at = backends.findIndex((b) => b.name === "wasm");
      if (!(e instanceof ScheduleError && e.memory) || at < 0) throw e;
      const grown = await growWasm(graph, backends, at, o);
      backends = [];
      return grown;
    }
  } catch (e) {
    for (const b of backends) b.dispose();
    throw e;
  }
}

/** Replaces `backends[at]` (`wasm`) by instances that hold the plan; disposes what it replaces or gives up. */
async function growWasm(
  graph: Graph,
  backends: Backend[],
  at: number,
  o: PlanBackendsOptions,
): Promise<{ backends: Backend[]; plan: Plan }> {
  // What the model needs on wasm, from a plan on an unbounded view of it.
  const wasm = backends[at];
  const sizing = schedule(graph, backends.map((b, i) => i === at ? unbounded(b) : b), { strict: o.strict });
  const m = sizing.memory.perBackend[wasm.name];
  const reserve = m.stateBytes + m.arenaBytes + m.ioBytes; // the most any instance needs besides weights
  const perInstance = Math.min(INSTANCE_MAX, o.backendOptions.memoryBytes ?? INSTANCE_MAX);
  const usable = perInstance - Math.min(256 * 2 ** 20, perInstance / 8) - 4 * 2 ** 20; // scratch, stack, static
  const one = o.backendOptions.memoryBytes === undefined && m.weightBytes + reserve <= usable;
  const others = backends.filter((_, i) => i !== at);
  if (!one && usable - reserve < m.weightBytes / MAX_INSTANCES) {
    for (const b of backends) b.dispose();
    throw new ScheduleError(
      `the model does not fit wasm instances of ${perInstance} B: each needs room for ${reserve} B of cache, arena ` +
        `and I/O besides its share of ${m.weightBytes} B of weights: larger instances, a smaller --dtype, or fewer ` +
        `or shorter sequences`,
      [],
      true,
    );
  }
  let n = one ? 1 : Math.max(2, Math.ceil(m.weightBytes / (usable - reserve)));
  wasm.dispose();
  for (let tries = 0; tries < 4; tries++, n++) {
    const instances: Backend[] = [];
    try {
      for (let i = 0; i < n; i++) {
        instances.push(
          ...(await createBackends(["wasm"], {
            ...o.backendOptions,
            memoryBytes: perInstance,
            memory64: perInstance > WASM32_MAX,
            instance: n === 1 ? undefined : i,
          } as BackendOptions)),
        );
      }
      const list = [...others.slice(0, at), ...instances, ...others.slice(at)];
      const plan = schedule(graph, list, { strict: o.strict, reserveBytes: n === 1 ? 0 : reserve });
      const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
      o.log(
        n === 1
          ? `wasm: ${gib(m.weightBytes + reserve)} planned, over the wasm32 memory: the memory64 build`
          : `wasm: ${gib(m.weightBytes + reserve)} planned: split by layer over ${n} instances of ${gib(perInstance)}`,
      );
      return { backends: list, plan };
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
    `the model does not fit ${n} wasm instances of ${perInstance} B (${m.weightBytes} B of weights, ${reserve} B ` +
      `of cache, arena and I/O): a smaller --dtype, or fewer or shorter sequences`,
    [],
    true,
  );
}

/** `backend` with no memory limit, for sizing a plan (never allocated from). */
function unbounded(backend: Backend): Backend {
  return {
    name: backend.name,
    caps: { ...backend.caps, memoryBytes: Infinity },
    supports: (node, inputs) => backend.supports(node, inputs),
    weightBytes: (shape, storage) => backend.weightBytes(shape, storage),
    alloc: () => {
      throw new Error("sizing view: not for allocation");
    },
    free: () => {},
    uploadWeight: () => Promise.reject(new Error("sizing view")),
    write: () => {},
    read: () => Promise.reject(new Error("sizing view")),
    copy: () => {},
    fill: () => {},
    prepare: () => Promise.reject(new Error("sizing view")),
    run: () => {},
    sync: () => Promise.resolve(),
    dispose: () => {},
  };
}
