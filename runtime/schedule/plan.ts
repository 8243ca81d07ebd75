/**
 * The `Plan` the scheduler emits: plain JSON data (no classes, no maps, no graph inside), so it can be cached,
 * snapshotted in tests, printed by `inspect` and handed to the plan executor together with its graph. Tensor ids
 * are the graph's; backends are referred to by name, in the preference order the plan was made for.
 *
 * @module
 */

/**
 * Where a tensor lives on one backend: in the backend's arena (intermediates and copies, shared by tensors whose
 * lifetimes do not overlap), or in a buffer of its own (per-run inputs, state, weights, graph outputs).
 */
export type Residence = "arena" | "input" | "state" | "weight" | "output";

/**
 * A place on one backend: `offset` is the byte offset inside the arena (0 for buffers of their own); `arena` which
 * of the backend's arenas (0 unless the plan split them under `caps.maxBindingBytes`).
 */
export type Location = { in: Residence; offset: number; arena?: number };

/** A tensor of a segment and where that segment finds it. */
export type PlanBinding = { tensor: number; in: Residence; offset: number; arena?: number };

/** Nodes run by one backend in one go, in topological order, with every tensor they touch bound. */
export type PlanSegment = {
  backend: string;
  /** How the backend stores float activations (`caps.activationDType`): arena slots are sized by it. */
  activationDType: string;
  nodes: number[];
  /** Tensors read but not produced here (inputs, state, weights, other segments' results). */
  inputs: number[];
  /** Results needed after the segment (by later segments, copies or as graph outputs). */
  outputs: number[];
  /** Every input and every node result of the segment. */
  bindings: PlanBinding[];
};

/** A tensor moved between backends, every run, just before segment `before`. */
export type PlanCopy = {
  tensor: number;
  name: string;
  from: string;
  to: string;
  before: number;
  /** Bytes at the largest shape, as stored on `from`. */
  bytes: number;
  src: Location;
  dst: Location;
  /** Storage dtypes on each side; they differ when one backend promotes (e.g. bf16 held as f32). */
  fromDType: string;
  toDType: string;
};

/** An op that runs on a later backend than the one it was meant for. */
export type Fallback = { node: number; name: string; op: string; from: string; to: string; reason: string };

/** Rows `[row0, row0 + rows)` of a split weight's leading dimension and their bytes on the backend. */
export type PlanWeightPart = { row0: number; rows: number; bytes: number };

/**
 * A weight and the backends holding it: its home first, then replicas for consumers placed elsewhere. `parts`
 * lists the row ranges of a weight split on a backend whose `caps.maxBindingBytes` it exceeds (by backend name).
 */
export type PlanWeight = {
  tensor: number;
  name: string;
  backends: string[];
  parts?: Record<string, PlanWeightPart[]>;
};

/** A per-run graph input and the backends the host uploads it to. */
export type PlanInput = { tensor: number; name: string; backends: string[] };

/** A state tensor (KV cache) and the backend it stays resident on. */
export type PlanState = { tensor: number; name: string; backend: string };

/** A graph output and where it is read from after a run. */
export type PlanOutput = { tensor: number; name: string; backend: string; in: Residence };

/** One tensor's bytes in an arena and the steps (inclusive) during which they are in use. */
export type ArenaAllocation = {
  tensor: number;
  arena: number;
  offset: number;
  bytes: number;
  first: number;
  last: number;
};

/** Bytes one backend needs for a plan. */
export type BackendMemory = {
  /** The arena: every intermediate and copy, overlapping where lifetimes allow (all arenas together). */
  arenaBytes: number;
  /** Each arena's bytes: one unless the backend's `maxBindingBytes` split them. */
  arenas: number[];
  /** What the arena would take with no sharing (sum of aligned sizes). */
  unsharedBytes: number;
  weightBytes: number;
  stateBytes: number;
  /** Per-run input and graph-output buffers. */
  ioBytes: number;
  allocations: ArenaAllocation[];
};

/** A compiled execution plan for one graph on an ordered list of backends, sized for one shape bucket. */
export type Plan = {
  version: 1;
  /** Backend names in preference order. */
  backends: string[];
  /** The bucket: the largest value of every symbol, which buffers are sized for. */
  symbols: Record<string, number>;
  weights: PlanWeight[];
  inputs: PlanInput[];
  state: PlanState[];
  outputs: PlanOutput[];
  segments: PlanSegment[];
  copies: PlanCopy[];
  fallbacks: Fallback[];
  /** Steps of the timeline live ranges refer to (copy phases and nodes). */
  steps: number;
  memory: { perBackend: Record<string, BackendMemory> };
};

/** A scheduling failure a user can cause (e.g. `strict` with an op the chosen backend lacks). */
export class ScheduleError extends Error {
  /** Node ids the error is about (empty when it is not about nodes). */
  readonly nodes: number[];
  /** True when the plan failed for lack of memory on some backend (more memory or instances would help). */
  readonly memory: boolean;

  /** `nodes`: the node ids concerned, for tools that highlight them; `memory`: a lack of memory. */
  constructor(message: string, nodes: number[] = [], memory = false) {
    super(message);
    this.name = "ScheduleError";
    this.nodes = nodes;
    this.memory = memory;
  }
}
