/**
 * Pass 4: cut the placed graph into segments (maximal runs of consecutive nodes on one backend, in topological
 * order) and decide where every tensor each segment touches lives on that segment's backend — its own buffer, the
 * arena, or a copy from the backend that produced it. Also stamps each use with a step of one timeline, for the
 * liveness pass.
 *
 * Residence rules: per-run inputs are uploaded by the host to every backend reading them (cheaper than a device
 * copy); weights are resident where used (home, plus a replica where an op fell back), never copied per step;
 * state lives with the op that writes it in place; node results live on their node's backend and are copied to
 * other backends before the first segment there that reads them (state: again after each in-place write).
 *
 * @module
 */

import type { Node } from "../../graph/ir.ts";
import { maxShape } from "../../graph/ir.ts";
import {
  type Backend,
  canStore,
  makeSegment,
  storageDType,
  tensorBytes,
  tensorDType,
  weightBytes,
} from "../backend.ts";
import { REGISTRY } from "../../ops/mod.ts";
import { type Context, describeNode } from "./context.ts";
import type { WeightHome } from "./place.ts";
import { type PlanWeightPart, type Residence, ScheduleError } from "./plan.ts";

/** A tensor's place on one backend; arena slots get their offset in pass 6. */
export type Slot = {
  backend: string;
  tensor: number;
  in: Residence;
  bytes: number;
  /** First and last step (inclusive) at which the slot is written or read. */
  first: number;
  last: number;
  offset: number;
  /** Which of the backend's arenas (pass 6). */
  arena: number;
};

/** A segment with every touched tensor resolved to a slot. */
export type WorkSegment = {
  backend: string;
  nodes: number[];
  inputs: number[];
  outputs: number[];
  /** Tensor id → slot index. */
  bindings: Map<number, number>;
};

/** A per-step copy between backends, just before segment `before`. */
export type WorkCopy = { tensor: number; from: string; to: string; before: number; src: number; dst: number };

/** Everything pass 4 decides. */
export type Split = {
  segments: WorkSegment[];
  copies: WorkCopy[];
  slots: Slot[];
  /** Weight id → backends holding it, home first. */
  weights: Map<number, string[]>;
  /** Input id → backends the host uploads it to. */
  inputs: Map<number, string[]>;
  /** State id → its backend. */
  state: Map<number, string>;
  /** Output name → slot index it is read from. */
  outputs: Map<string, number>;
  /** Steps of the timeline. */
  steps: number;
  /** Weights split into row ranges on a backend (`caps.maxBindingBytes`), by weight id and backend name. */
  weightParts: Map<number, Record<string, PlanWeightPart[]>>;
};

/** Pass 4: segments, residence, copies and the timeline. */
export function splitSegments(
  ctx: Context,
  placement: ReadonlyMap<number, string>,
  weightHomes: ReadonlyMap<number, WeightHome>,
): Split {
  const { graph, table } = ctx;
  const stateHome = placeState(ctx, placement);
  const outputIds = new Set(graph.outputs.map((o) => o.id));
  const slots: Slot[] = [];
  const own = new Map<string, number>(); // "backend/tensor" → slot of a buffer of its own (or a node's home slot)
  const copied = new Map<string, { slot: number; version: number }>(); // "backend/tensor" → latest copy there
  const version = new Map<number, number>(); // state id → in-place writes so far
  const weights = new Map<number, string[]>([...weightHomes].map(([id, h]) => [id, [h.backend]]));
  const inputs = new Map<number, string[]>();
  const copies: WorkCopy[] = [];
  let step = 0;

  const weightParts = new Map<number, Record<string, PlanWeightPart[]>>();
  const newSlot = (backend: string, tensor: number, residence: Residence, first: number): number => {
    const t = table[tensor], b = ctx.byName.get(backend)!;
    let bytes: number;
    if (residence === "weight") {
      const parts = splitWeight(b, t.name, maxShape(t.shape), t.dtype);
      if (parts) weightParts.set(tensor, { ...weightParts.get(tensor), [backend]: parts });
      bytes = parts ? parts.reduce((n, p) => n + p.bytes, 0) : weightBytes(b, t.shape, t.dtype);
    } else bytes = tensorBytes(b.caps, t);
    slots.push({ backend, tensor, in: residence, bytes, first, last: first, offset: 0, arena: 0 });
    return slots.length - 1;
  };
  const ownSlot = (backend: string, tensor: number, residence: Residence): number => {
    const key = `${backend}/${tensor}`;
    let s = own.get(key);
    if (s === undefined) own.set(key, s = newSlot(backend, tensor, residence, 0));
    return s;
  };
  const use = (slot: number, at: number) => {
    const s = slots[slot];
    s.first = Math.min(s.first, at);
    s.last = Math.max(s.last, at);
  };

  // Cut into maximal runs of one backend.
  const runs: { backend: string; nodes: Node[] }[] = [];
  for (const node of graph.nodes) {
    const backend = placement.get(node.id)!;
    const last = runs[runs.length - 1];
    if (last?.backend === backend) last.nodes.push(node);
    else runs.push({ backend, nodes: [node] });
  }

  const segments: WorkSegment[] = [];
  for (const run of runs) {
    const index = segments.length, backend = run.backend, caps = ctx.byName.get(backend)!.caps;
    const seg = makeSegment(graph, run.nodes.map((n) => n.id));
    const bindings = new Map<number, number>();
    // Copies into this segment share one step before its first node: they are all live when it starts.
    let copyStep = -1;
    for (const id of seg.inputs) {
      const t = table[id];
      if (t.kind === "weight") {
        const where = weights.get(id)!;
        if (!where.includes(backend)) {
          if (!canStore(caps, t.dtype)) throw new ScheduleError(`weight ${t.name}: ${backend} cannot store ${t.dtype}`);
          where.push(backend);
        }
        bindings.set(id, ownSlot(backend, id, "weight"));
      } else if (t.kind === "input") {
        const where = inputs.get(id) ?? [];
        if (!where.includes(backend)) where.push(backend);
        inputs.set(id, where);
        bindings.set(id, ownSlot(backend, id, "input"));
      } else {
        const from = t.kind === "state" ? stateHome.get(id)! : placement.get(id)!;
        const home = t.kind === "state" ? ownSlot(from, id, "state") : own.get(`${from}/${id}`)!;
        if (from === backend) {
          bindings.set(id, home);
          continue;
        }
        const v = version.get(id) ?? 0, key = `${backend}/${id}`;
        let copy = copied.get(key);
        if (!copy || copy.version !== v) {
          if (copyStep < 0) copyStep = step++;
          copy = { slot: newSlot(backend, id, "arena", copyStep), version: v };
          copied.set(key, copy);
          copies.push({ tensor: id, from, to: backend, before: index, src: home, dst: copy.slot });
          use(home, copyStep);
          checkCopyDTypes(ctx, id, from, backend);
        }
        bindings.set(id, copy.slot);
      }
    }
    for (const node of run.nodes) {
      const at = step++;
      for (const i of new Set(node.inputs)) use(bindings.get(i)!, at);
      const residence = outputIds.has(node.id) ? "output" : "arena";
      const slot = newSlot(backend, node.id, residence, at);
      own.set(`${backend}/${node.id}`, slot);
      bindings.set(node.id, slot);
      for (const w of REGISTRY.get(node.op)?.writesInputs ?? []) {
        const target = node.inputs[w];
        if (table[target].kind !== "state") {
          throw new ScheduleError(`${describeNode(node)} writes ${table[target].name} in place; only state may be`);
        }
        version.set(target, (version.get(target) ?? 0) + 1);
      }
    }
    segments.push({ backend, nodes: seg.nodes, inputs: seg.inputs, outputs: seg.outputs, bindings });
  }

  const outputs = new Map<string, number>();
  for (const o of graph.outputs) {
    const t = table[o.id];
    const at = t.kind === "node"
      ? own.get(`${placement.get(o.id)}/${o.id}`)!
      : t.kind === "state"
      ? ownSlot(stateHome.get(o.id)!, o.id, "state")
      : t.kind === "weight"
      ? ownSlot(weights.get(o.id)![0], o.id, "weight")
      : ownSlot(inputs.get(o.id)?.[0] ?? addInput(inputs, o.id, ctx.backends[0].name), o.id, "input");
    outputs.set(o.name, at);
  }
  for (const [id, home] of stateHome) ownSlot(home, id, "state"); // unread state still gets its buffer
  for (const id of weights.keys()) for (const b of weights.get(id)!) ownSlot(b, id, "weight");
  return { segments, copies, slots, weights, inputs, state: stateHome, outputs, steps: step, weightParts };
}

/**
 * Row ranges of a weight's leading dimension, each at most `caps.maxBindingBytes` on `backend` (aligned), or null
 * when the whole weight fits one binding. The 131072 × 4096 head of the real model is 512 MiB in FP8: more than a
 * 128 MiB storage binding.
 */
export function splitWeight(
  backend: Backend,
  name: string,
  shape: readonly number[],
  dtype: string,
): PlanWeightPart[] | null {
  const { maxBindingBytes: max, alignment } = backend.caps, storage = storageDType(backend.caps, dtype as never);
  const total = backend.weightBytes(shape, storage);
  if (total <= max) return null;
  const rows = shape[0] ?? 1, rest = shape.slice(1);
  const bytes = (n: number) => Math.ceil(backend.weightBytes([n, ...rest], storage) / alignment) * alignment;
  if (shape.length < 2 || bytes(1) > max) {
    throw new ScheduleError(
      `weight ${name} [${shape}] cannot be split for ${backend.name}: one row of it is more than the ` +
        `${max} B one binding may hold`,
    );
  }
  let per = Math.max(1, Math.floor((rows * max) / total));
  while (per > 1 && bytes(per) > max) per--;
  const parts: PlanWeightPart[] = [];
  for (let r = 0; r < rows; r += per) {
    const n = Math.min(per, rows - r);
    parts.push({ row0: r, rows: n, bytes: bytes(n) });
  }
  return parts;
}

/**
 * State lives where `stateHomes` says (another plan shares it), else with the op writing it in place, else with its
 * first reader. Two writers on two backends, or a writer away from a shared state's home: error.
 */
function placeState(ctx: Context, placement: ReadonlyMap<number, string>): Map<number, string> {
  const home = new Map<number, string>();
  for (const s of ctx.graph.inputs) {
    if (!s.state) continue;
    const readers = ctx.consumers.get(s.id) ?? [];
    const writers = readers.filter((n) => (REGISTRY.get(n.op)?.writesInputs ?? []).some((w) => n.inputs[w] === s.id));
    const at = new Set(writers.map((n) => placement.get(n.id)!));
    if (at.size > 1) {
      throw new ScheduleError(
        `state ${s.name} is written in place on ${[...at].join(" and ")}: its writers must share a backend`,
        writers.map((n) => n.id),
      );
    }
    const shared = ctx.options.stateHomes?.[s.name];
    if (shared !== undefined && at.size > 0 && !at.has(shared)) {
      throw new ScheduleError(
        `state ${s.name} lives on ${shared} (another plan shares it) but is written in place on ${[...at][0]}`,
        writers.map((n) => n.id),
      );
    }
    home.set(s.id, shared ?? [...at][0] ?? (readers[0] ? placement.get(readers[0].id)! : ctx.backends[0].name));
  }
  return home;
}

/** A copy between backends storing the tensor differently must be an element-wise float conversion. */
function checkCopyDTypes(ctx: Context, id: number, from: string, to: string): void {
  const t = ctx.table[id];
  const a = tensorDType(ctx.byName.get(from)!.caps, t), b = tensorDType(ctx.byName.get(to)!.caps, t);
  const float = ["f32", "bf16", "f16", "f8e4m3"];
  if (a !== b && !(float.includes(a) && float.includes(b))) {
    throw new ScheduleError(`tensor ${t.name} cannot be copied from ${from} (${a}) to ${to} (${b})`);
  }
}

function addInput(inputs: Map<number, string[]>, id: number, backend: string): string {
  inputs.set(id, [backend]);
  return backend;
}
