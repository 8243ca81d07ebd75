/**
 * Passes 1–3: where weights live, where each op runs by preference and weight location, and which ops fall back
 * to another backend than the one asked for (reported, or an error under `strict`).
 *
 * "Asked for" is the first backend of the list, or the backend a weight was pinned to by `weightPlacement`;
 * anything running elsewhere is a fallback, with the reason.
 *
 * @module
 */

import { BITS_PER_ELEMENT } from "../../graph/dtype.ts";
import { maxShape, type Node, numel, type WeightDecl } from "../../graph/ir.ts";
import { type Backend, canStore, kindOf, weightBytes } from "../backend.ts";
import { type Context, describeNode } from "./context.ts";
import { type Fallback, ScheduleError } from "./plan.ts";
import { REGISTRY } from "../../ops/mod.ts";

/** Where a weight lives: its home backend; `pinned` when `weightPlacement` chose it; `why` when not the first. */
export type WeightHome = { backend: string; pinned: boolean; why?: string };

/**
 * Pass 1: each weight goes to the first backend that can store its dtype, supports every op reading it and still
 * has room (`caps.memoryBytes` less `reserveBytes`, counting weights only: the arena is not known yet). Failing
 * that, the first that can store it and supports some consumer; then the first that can store it at all.
 * `weightPlacement` overrides. Instances of one kind (`wasm:0`, `wasm:1`…) fill in order: a weight never goes to
 * an instance before the last one used, so a model too big for one splits by layer, in graph order. A weight
 * `weightHomes` names stays on that backend (another plan's buffer) and takes none of the room.
 */
export function placeWeights(ctx: Context): Map<number, WeightHome> {
  const homes = new Map<number, WeightHome>();
  const used = new Map<string, number>(ctx.backends.map((b) => [b.name, ctx.options.usedBytes?.[b.name] ?? 0]));
  const reserve = ctx.options.reserveBytes ?? 0;
  const room = (b: Backend) => ctx.options.sizing ? Infinity : b.caps.memoryBytes;
  const fits = (b: Backend, w: WeightDecl) => used.get(b.name)! + weightBytes(b, w.shape, w.dtype) + reserve <= room(b);
  const floor = new Map<string, number>(); // kind → index in ctx.backends of the last instance used
  const open = (b: Backend) => !b.name.includes(":") || ctx.backends.indexOf(b) >= (floor.get(kindOf(b.name)) ?? 0);
  // A layer starts on the first open instance that holds all of it, so instances split between layers.
  const layerOf = (w: WeightDecl) => ctx.consumers.get(w.id)?.[0]?.layer;
  const started = new Set<number>();
  const startLayer = (layer: number) => {
    started.add(layer);
    const mine = ctx.graph.weights.filter((w) => layerOf(w) === layer);
    for (const b of ctx.backends) {
      if (!b.name.includes(":") || !open(b)) continue;
      const need = mine.reduce((n, w) => n + weightBytes(b, w.shape, w.dtype), 0);
      if (used.get(b.name)! + need + reserve <= room(b)) {
        floor.set(kindOf(b.name), ctx.backends.indexOf(b));
        return;
      }
    }
  };
  for (const w of ctx.graph.weights) {
    const consumers = ctx.consumers.get(w.id) ?? [], layer = layerOf(w);
    if (layer !== undefined && !started.has(layer) && ctx.backends.some((b) => b.name.includes(":"))) {
      startLayer(layer);
    }
    const storable = ctx.backends.filter((b) => canStore(b.caps, w.dtype) && open(b));
    const shared = ctx.options.weightHomes?.[w.name];
    if (shared !== undefined) {
      // Another plan's buffer: kept where it is, not counted again, and no instance floor moves for it.
      const b = ctx.byName.get(shared);
      if (!b) {
        throw new ScheduleError(
          `weight ${w.name} lives on ${shared} (another plan shares it), not one of ${names(ctx)}`,
        );
      }
      homes.set(w.id, { backend: b.name, pinned: true });
      continue;
    }
    const pinned = ctx.options.weightPlacement?.(w, consumers);
    let chosen: Backend | undefined;
    if (pinned !== undefined) {
      chosen = ctx.byName.get(pinned);
      if (!chosen) throw new ScheduleError(`weightPlacement put ${w.name} on ${pinned}, not one of ${names(ctx)}`);
      if (!canStore(chosen.caps, w.dtype)) {
        throw new ScheduleError(`weightPlacement put ${w.name} on ${pinned}, which cannot store ${w.dtype}`);
      }
    } else {
      chosen = storable.find((b) => fits(b, w) && consumers.every((n) => ctx.supports(b, n))) ??
        storable.find((b) => fits(b, w) && consumers.some((n) => ctx.supports(b, n))) ??
        storable.find((b) => fits(b, w));
    }
    if (!chosen) {
      const why = storable.length
        ? "none has room left; a smaller --dtype shrinks the weights (bf16: 2 B per value, q8 and f8e4m3: about 1 B)"
        : `none can store ${w.dtype}`;
      throw new ScheduleError(
        `weight ${w.name}: no backend can hold it (${names(ctx)}: ${why})`,
        [],
        storable.length > 0,
      );
    }
    const home: WeightHome = { backend: chosen.name, pinned: pinned !== undefined };
    const first = ctx.backends[0];
    if (!home.pinned && chosen !== first) {
      home.why = !canStore(first.caps, w.dtype)
        ? `${first.name} cannot store ${w.dtype}`
        : !fits(first, w)
        ? `${first.name} has no room left for it`
        : `${first.name} does not support every op reading it`;
    }
    homes.set(w.id, home);
    used.set(chosen.name, used.get(chosen.name)! + weightBytes(chosen, w.shape, w.dtype));
    if (chosen.name.includes(":")) floor.set(kindOf(chosen.name), ctx.backends.indexOf(chosen));
  }
  return homes;
}

/** An op's backend after pass 2, and the backend it was asked to run on. */
export type OpPlace = { backend: string; wanted: string; weight?: number };

/**
 * Pass 2: an op reading weights goes where its weights are (the largest, when they are spread), so weights never
 * move per step; any other op goes where a state it reads or writes lives when another plan placed that state
 * (`stateHomes`: the state it writes first), else to the first backend, or, when the first is one of several instances of a kind
 * (`wasm:0`…), to the latest instance that produced one of its inputs (the residual stream stays with its layer).
 * Support is checked in pass 3.
 */
export function placeOps(ctx: Context, weightHomes: ReadonlyMap<number, WeightHome>): Map<number, OpPlace> {
  const places = new Map<number, OpPlace>();
  const first = ctx.backends[0].name, instances = first.includes(":");
  // The latest instance among its inputs' producers: the residual stream only moves forward through instances.
  const index = new Map(ctx.backends.map((b, i) => [b.name, i]));
  const producer = (node: Node): string | undefined => {
    let at: string | undefined;
    for (const i of node.inputs) {
      const p = places.get(i)?.backend;
      if (p !== undefined && kindOf(p) === kindOf(first) && (at === undefined || index.get(p)! > index.get(at)!)) {
        at = p;
      }
    }
    return at;
  };
  for (const node of ctx.graph.nodes) {
    let weight: number | undefined, bits = -1;
    for (const i of node.inputs) {
      const t = ctx.table[i];
      if (t.kind !== "weight") continue;
      const b = numel(maxShape(t.shape)) * BITS_PER_ELEMENT[t.dtype];
      if (b > bits) [weight, bits] = [i, b];
    }
    if (weight === undefined) {
      const at = sharedStateHome(ctx, node) ?? ((instances && producer(node)) || first);
      places.set(node.id, { backend: at, wanted: at });
      continue;
    }
    const home = weightHomes.get(weight)!;
    // Another instance of the backend asked for (wasm:1 for wasm:0) is where it was asked for, not a fallback.
    const wanted = home.pinned || kindOf(home.backend) === kindOf(first) ? home.backend : first;
    places.set(node.id, { backend: home.backend, wanted, weight });
  }
  return places;
}

/**
 * Pass 3: an op its backend does not support moves to the first backend (in preference order) that does. Every
 * op not on the backend it was asked for is reported with the reason; `strict` makes that an error naming all of
 * them. Returns node id → backend name, and the fallbacks.
 */
export function fallBack(
  ctx: Context,
  places: ReadonlyMap<number, OpPlace>,
  weightHomes: ReadonlyMap<number, WeightHome>,
): { placement: Map<number, string>; fallbacks: Fallback[] } {
  const placement = new Map<number, string>();
  const fallbacks: Fallback[] = [];
  const unsupported: Node[] = [];
  for (const node of ctx.graph.nodes) {
    const place = places.get(node.id)!;
    const backend = ctx.supports(ctx.byName.get(place.backend)!, node)
      ? ctx.byName.get(place.backend)
      : ctx.backends.find((b) => ctx.supports(b, node));
    if (!backend) {
      unsupported.push(node);
      continue;
    }
    placement.set(node.id, backend.name);
    if (backend.name === place.wanted) continue;
    let reason: string;
    if (!ctx.supports(ctx.byName.get(place.wanted)!, node)) {
      reason = `${place.wanted} does not support ${node.op}(${node.inputs.map((i) => ctx.table[i].dtype).join(", ")})`;
    } else {
      const w = place.weight!;
      reason = `its weight ${ctx.table[w].name} is on ${place.backend}: ${weightHomes.get(w)!.why}`;
    }
    fallbacks.push({ node: node.id, name: node.name, op: node.op, from: place.wanted, to: backend.name, reason });
  }
  if (unsupported.length) {
    throw new ScheduleError(
      `no backend (${names(ctx)}) supports ${unsupported.map(describeNode).join("; ")}`,
      unsupported.map((n) => n.id),
    );
  }
  if (ctx.options.strict && fallbacks.length) {
    const list = fallbacks.map((f) => `${f.op} "${f.name}" (#${f.node}) ${f.from} → ${f.to}: ${f.reason}`);
    throw new ScheduleError(
      `strict: ${fallbacks.length} op(s) would not run where asked: ${list.join("; ")}`,
      fallbacks.map((f) => f.node),
    );
  }
  return { placement, fallbacks };
}

/** The home `stateHomes` gives a state `node` writes in place, else one it reads; undefined when none. */
function sharedStateHome(ctx: Context, node: Node): string | undefined {
  const homes = ctx.options.stateHomes;
  if (!homes) return undefined;
  const written = new Set((REGISTRY.get(node.op)?.writesInputs ?? []).map((w) => node.inputs[w]));
  const shared = node.inputs.filter((i) => ctx.table[i].kind === "state" && homes[ctx.table[i].name] !== undefined);
  const id = shared.find((i) => written.has(i)) ?? shared[0];
  if (id === undefined) return undefined;
  const home = homes[ctx.table[id].name];
  if (!ctx.byName.has(home)) {
    throw new ScheduleError(`state ${ctx.table[id].name} lives on ${home}, not one of ${names(ctx)}`);
  }
  return home;
}

function names(ctx: Context): string {
  return ctx.backends.map((b) => b.name).join(", ");
}
