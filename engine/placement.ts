/**
 * Backends for a model's graphs (the step graph, and the vision graph beside it): each scheduled over the preference
 * list, the later ones within the memory the earlier leave, and a `wasm` backend that cannot hold them all grown into
 * what can: the memory64 build (up to 16 GiB in one instance) or several instances (`wasm:0`, `wasm:1`…, each its own
 * memory and threads) over which the scheduler splits the model by layer, the residual stream crossing between them
 * by one memcpy. A per-instance `memoryBytes` (tests, small hosts) splits earlier. Wasm memory is host memory, so a
 * plan the host cannot hold is refused before any weight loads. {@link previewPlacement} answers the same question
 * without creating anything (inspect).
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
  /** The host's memory (default: the system's total where `--allow-sys` permits reading it; else unchecked). */
  hostMemoryBytes?: number;
  /**
   * Per graph, the key of the arenas its executor shares with others (`PlanExecutorOptions.sharedArenas`; the
   * vision encoder's stages), or undefined: shared arenas count once, at the largest each plan asks.
   */
  arenaGroups?: readonly (string | undefined)[];
}

/** How `wasm` grows to hold the plans. */
export interface WasmGrowth {
  /** Instances (1: one memory64 instance). */
  instances: number;
  /** The memory of each instance. */
  instanceBytes: number;
  /** Whether the instances take the memory64 build. */
  memory64: boolean;
}

/** {@link previewPlacement}'s answer. */
export interface PlacementPreview {
  /** Whether the plans fit the backends (grown as `loadModel` would) and the host. */
  fits: boolean;
  /** The plans, when they fit. */
  plans?: Plan[];
  /** The backend names the plans use (`wasm:0`… once grown; the list given when they do not fit). */
  backends: string[];
  /** How `wasm` would grow; absent when it need not. */
  growth?: WasmGrowth;
  /** What the plans need on each backend of the list with no memory limit (weights, state, arena and I/O). */
  needBytes: Record<string, number>;
  /** The weights' part of `needBytes`. */
  needWeightBytes: Record<string, number>;
  /** What each backend of the list holds as created. */
  capacityBytes: Record<string, number>;
  /** The host's memory, where it could be read. */
  hostMemoryBytes?: number;
  /** Why the plans do not fit. */
  error?: string;
}

/** The host's total memory, or undefined where it cannot be read (no `--allow-sys`, a browser). */
export function hostMemoryBytes(): number | undefined {
  if (typeof Deno === "undefined") return undefined; // a browser: it does not say
  try {
    return Deno.systemMemoryInfo().total;
  } catch {
    return undefined;
  }
}

/** The host cannot hold what the wasm instances need (more instances would not help). */
class HostMemoryError extends ScheduleError {
  constructor(message: string) {
    super(message, [], true);
  }
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
 * an earlier plan placed (the image store, the encoder's state between stages) where it is, and a weight (the
 * target's embedding and head in an EAGLE draft's graph): one buffer, counted once.
 */
function scheduleAll(
  graphs: readonly Graph[],
  backends: readonly Backend[],
  o: { strict?: boolean; reserveBytes?: number; sizing?: boolean; arenaGroups?: readonly (string | undefined)[] },
): Plan[] {
  const plans: Plan[] = [], stateHomes: Record<string, string> = {}, weightHomes: Record<string, string> = {};
  const { arenaGroups, ...options } = o, sharing = { graphs, backends, arenaGroups };
  for (const g of graphs) {
    const plan = schedule(g, backends, { ...options, usedBytes: usedBy(plans, sharing), stateHomes, weightHomes });
    for (const s of plan.state) stateHomes[s.name] ??= s.backend; // later plans keep a shared state there
    for (const w of plan.weights) weightHomes[w.name] ??= w.backends[0]; // and a shared weight (counted once)
    plans.push(plan);
  }
  return plans;
}

/**
 * Schedules one more graph beside `plans` (of `graphs`, on `all`) over `backends`: within the memory those leave
 * (each counted once), with every state they share kept where they placed it (the latent cache of a second step
 * graph for small steps). Weights it places where the plans have them are the same buffers (one residency).
 */
export function scheduleBeside(
  graph: Graph,
  backends: readonly Backend[],
  beside: { graphs: readonly Graph[]; plans: readonly Plan[]; all: readonly Backend[] },
  o: { strict?: boolean },
): Plan {
  const stateHomes: Record<string, string> = {};
  for (const p of beside.plans) for (const s of p.state) stateHomes[s.name] ??= s.backend;
  const usedBytes = usedBy(beside.plans, { graphs: beside.graphs, backends: beside.all });
  return schedule(graph, backends, { strict: o.strict, usedBytes, stateHomes });
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
  const at = backends.findIndex((b) => b.name === "wasm");
  try {
    try {
      return { backends, plans: scheduleAll(graphs, backends, { strict: o.strict, arenaGroups: o.arenaGroups }) };
    } catch (e) {
      if (!(e instanceof ScheduleError && e.memory) || at < 0) throw e;
    }
    const growth = sizeWasm(graphs, backends, at, o);
    backends[at].dispose();
    backends = backends.filter((_, i) => i !== at);
    const grown = await growInto(graphs, backends, at, growth, o, (options) => createBackends(["wasm"], options));
    backends = grown.backends;
    return grown;
  } catch (e) {
    for (const b of backends) b.dispose();
    throw e;
  }
}

/**
 * What {@link planBackends} would do with `graphs` on `backends`, creating nothing: a wasm instance it would add is a
 * view of the `wasm` backend given (same kernels and capabilities, its own name and memory size). Never throws for
 * lack of memory: the answer says what is missing. The caller keeps and disposes `backends`.
 */
export async function previewPlacement(
  graphs: readonly Graph[],
  backends: readonly Backend[],
  o: PlanBackendsOptions,
): Promise<PlacementPreview> {
  const host = o.hostMemoryBytes ?? hostMemoryBytes();
  const sizing = scheduleAll(graphs, backends, { strict: o.strict, sizing: true, arenaGroups: o.arenaGroups });
  const needWeightBytes: Record<string, number> = {};
  for (const p of sizing) {
    for (const [name, m] of Object.entries(p.memory.perBackend)) {
      needWeightBytes[name] = (needWeightBytes[name] ?? 0) + m.weightBytes;
    }
  }
  const base = {
    backends: backends.map((b) => b.name),
    needBytes: usedBy(sizing, { graphs, backends, arenaGroups: o.arenaGroups }),
    needWeightBytes,
    capacityBytes: Object.fromEntries(backends.map((b) => [b.name, b.caps.memoryBytes])),
    hostMemoryBytes: host,
  };
  const failed = (e: unknown, growth?: WasmGrowth): PlacementPreview => {
    if (!(e instanceof ScheduleError && e.memory)) throw e;
    return { ...base, fits: false, growth, error: e.message };
  };
  const at = backends.findIndex((b) => b.name === "wasm");
  try {
    return {
      ...base,
      fits: true,
      plans: scheduleAll(graphs, backends, { strict: o.strict, arenaGroups: o.arenaGroups }),
    };
  } catch (e) {
    if (at < 0 || !(e instanceof ScheduleError && e.memory)) return failed(e);
  }
  let sized: Sizing | undefined;
  try {
    sized = sizeWasm(graphs, backends, at, o);
    const wasm = backends[at], others = backends.filter((_, i) => i !== at);
    const view = (options: BackendOptions) => Promise.resolve([instanceView(wasm, options)]);
    const grown = await growInto(graphs, others, at, sized, { ...o, hostMemoryBytes: host }, view);
    const names = grown.backends.map((b) => b.name);
    return { ...base, fits: true, growth: growthOf(sized), plans: grown.plans, backends: names };
  } catch (e) {
    return failed(e, sized && growthOf(sized));
  }
}

/** `wasm` as instance `options.instance` of `options.memoryBytes`, for planning only (its dispose does nothing). */
function instanceView(wasm: Backend, options: BackendOptions): Backend {
  const name = options.instance === undefined ? "wasm" : `wasm:${options.instance}`;
  const caps = { ...wasm.caps, memoryBytes: usableBytes(options.memoryBytes!) };
  return new Proxy(wasm, {
    get(target, key) {
      if (key === "name") return name;
      if (key === "caps") return caps;
      if (key === "dispose") return () => {};
      const v = Reflect.get(target, key, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** What an instance of `instanceBytes` offers the plans (the backend keeps some for kernel scratch, stack, statics). */
function usableBytes(instanceBytes: number): number {
  return instanceBytes - Math.min(256 * 2 ** 20, instanceBytes / 8) - 4 * 2 ** 20;
}

/** A growth with what sized it: the weights on wasm, and the cache, arena and I/O every instance reserves. */
type Sizing = WasmGrowth & { weights: number; reserve: number };

/** The {@link WasmGrowth} part of `s`. */
function growthOf(s: Sizing): WasmGrowth {
  return { instances: s.instances, instanceBytes: s.instanceBytes, memory64: s.memory64 };
}

/** What `wasm` (`backends[at]`) must grow into to hold the plans: one memory64 instance or several. */
function sizeWasm(
  graphs: readonly Graph[],
  backends: readonly Backend[],
  at: number,
  o: PlanBackendsOptions,
): Sizing {
  const wasm = backends[at];
  // What the model needs on wasm: its plans with no memory limit.
  const sizing = scheduleAll(graphs, backends, { strict: o.strict, sizing: true, arenaGroups: o.arenaGroups });
  const perKind = sizing.map((p) => p.memory.perBackend[wasm.name]);
  const weights = perKind.reduce((n, m) => n + m.weightBytes, 0);
  // The most any instance needs besides its weights (a state several plans share counted once).
  const reserve = perKind.reduce((n, m) => n + m.stateBytes + m.arenaBytes + m.ioBytes, 0) -
    (countedTwice(sizing, { graphs, backends, arenaGroups: o.arenaGroups })[wasm.name] ?? 0);
  const instanceBytes = Math.min(MAX_BYTES_64, o.backendOptions.memoryBytes ?? MAX_BYTES_64);
  const usable = usableBytes(instanceBytes);
  const one = o.backendOptions.memoryBytes === undefined && weights + reserve <= usable;
  if (!one && usable - reserve < weights / MAX_INSTANCES) {
    throw new ScheduleError(
      `the model does not fit wasm instances of ${instanceBytes} B: each needs room for ${reserve} B of cache, arena ` +
        `and I/O besides its share of ${weights} B of weights: larger instances, a smaller --dtype, or fewer or ` +
        `shorter sequences`,
      [],
      true,
    );
  }
  const instances = one ? 1 : Math.max(2, Math.ceil(weights / (usable - reserve)));
  return { instances, instanceBytes, memory64: instanceBytes > MAX_BYTES_32, weights, reserve };
}

/**
 * Plans `graphs` on `others` with `growth.instances` wasm instances (made by `make`) at index `at`, one more while the
 * per-instance reserve falls short (up to 4 tries); refuses a plan the host's memory cannot hold. On failure the
 * instances made are disposed, `others` are not.
 */
async function growInto(
  graphs: readonly Graph[],
  others: readonly Backend[],
  at: number,
  growth: Sizing,
  o: PlanBackendsOptions,
  make: (options: BackendOptions) => Promise<Backend[]>,
): Promise<{ backends: Backend[]; plans: Plan[] }> {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const host = o.hostMemoryBytes ?? hostMemoryBytes();
  for (let tries = 0; tries < 4; tries++, growth.instances++) {
    const n = growth.instances, instances: Backend[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const options = {
          ...o.backendOptions,
          memoryBytes: growth.instanceBytes,
          memory64: growth.memory64,
          instance: n === 1 ? undefined : i,
        } as BackendOptions;
        instances.push(...await make(options));
      }
      const list = [...others.slice(0, at), ...instances, ...others.slice(at)];
      const plans = scheduleAll(graphs, list, {
        strict: o.strict,
        reserveBytes: n === 1 ? 0 : growth.reserve,
        arenaGroups: o.arenaGroups,
      });
      const used = usedBy(plans, { graphs, backends: list, arenaGroups: o.arenaGroups }),
        onWasm = instances.reduce((s, b) => s + (used[b.name] ?? 0), 0);
      if (host !== undefined && onWasm > host) {
        throw new HostMemoryError(
          `the model needs ${gib(onWasm)} of wasm memory${n > 1 ? ` over ${n} instances` : ""} but this host has ` +
            `${gib(host)} of memory: a smaller --dtype, or a GPU backend`,
        );
      }
      o.log(
        n === 1
          ? `wasm: ${gib(growth.weights + growth.reserve)} planned, over the wasm32 memory: the memory64 build`
          : `wasm: ${gib(growth.weights + growth.reserve)} planned: split by layer over ${n} instances of ` +
            gib(growth.instanceBytes),
      );
      return { backends: list, plans };
    } catch (e) {
      for (const b of instances) b.dispose();
      // Short of memory still (the per-instance reserve was not enough): one more instance; the host is final.
      if (!(e instanceof ScheduleError && e.memory) || e instanceof HostMemoryError) throw e;
    }
  }
  throw new ScheduleError(
    `the model does not fit ${growth.instances - 1} wasm instances of ${growth.instanceBytes} B ` +
      `(${growth.weights} B of weights, ${growth.reserve} B of cache, arena and I/O): a smaller --dtype, or fewer or ` +
      `shorter sequences`,
    [],
    true,
  );
}
