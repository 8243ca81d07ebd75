/**
 * Arena planning: given tensors with sizes and live ranges (inclusive steps of one execution), give each a byte
 * offset in one arena so that tensors live at the same step never share a byte. Greedy by size with best fit, as
 * TFLite's `GreedyBySize` and ONNX Runtime's arena planners do: place the biggest tensors first, each into the
 * smallest gap left between the already-placed tensors it overlaps in time, else after the last of them.
 *
 * @example
 * ```ts
 * import { planArena } from "./memory_plan.ts";
 * // a → b → c: a and c are never live together, so they share bytes.
 * const { offsets, arenaBytes } = planArena([
 *   { bytes: 100, first: 0, last: 1 },
 *   { bytes: 100, first: 1, last: 2 },
 *   { bytes: 100, first: 2, last: 2 },
 * ], 64);
 * offsets; // [0, 128, 0]
 * arenaBytes; // 256
 * ```
 *
 * @module
 */

import { alignUp } from "./backend.ts";

/** A tensor to place: `bytes` at most, live from step `first` to step `last` (both included). */
export type LiveRange = { bytes: number; first: number; last: number };

/** Offsets (same order as the input) and the arena size they need. */
export type ArenaPlan = { offsets: number[]; arenaBytes: number };

/** True when two live ranges share at least one step. */
export function overlaps(a: LiveRange, b: LiveRange): boolean {
  return a.first <= b.last && b.first <= a.last;
}

/**
 * Places `tensors` in one arena. Every offset and every size is rounded up to `alignment`, so views stay aligned
 * whatever the tensor sizes are. Deterministic: ties break on the earlier first step, then on input order.
 */
export function planArena(tensors: readonly LiveRange[], alignment: number): ArenaPlan {
  const { offsets, arenaBytes } = planArenas(tensors, alignment, Infinity);
  return { offsets, arenaBytes: arenaBytes[0] ?? 0 };
}

/** Offsets and arena index (same order as the input), and each arena's size. */
export type ArenasPlan = { offsets: number[]; arenas: number[]; arenaBytes: number[] };

/**
 * Places `tensors` in as few arenas of at most `maxBytes` each as the greedy fit gives: each tensor, biggest first,
 * takes the best gap of the first arena where it fits under `maxBytes`, else a new arena. Used when a backend
 * cannot bind one buffer of the whole arena (WebGPU's storage-binding limit); with `maxBytes` = Infinity it is
 * {@link planArena}. Throws when one tensor alone is larger than `maxBytes`.
 */
export function planArenas(tensors: readonly LiveRange[], alignment: number, maxBytes: number): ArenasPlan {
  if (!Number.isInteger(alignment) || alignment < 1) throw new Error(`planArena: bad alignment ${alignment}`);
  const sizes = tensors.map((t) => alignUp(Math.max(t.bytes, 0), alignment));
  const order = tensors.map((_, i) => i).sort((a, b) =>
    sizes[b] - sizes[a] || tensors[a].first - tensors[b].first || a - b
  );
  const offsets = new Array<number>(tensors.length).fill(0);
  const arenas = new Array<number>(tensors.length).fill(0);
  const placed: number[][] = []; // per arena: indices already given an offset, kept sorted by offset
  const arenaBytes: number[] = [];
  for (const i of order) {
    const size = sizes[i];
    if (size === 0) continue; // nothing to hold: offset 0 is as good as any
    if (size > maxBytes) {
      throw new RangeError(`planArenas: a tensor of ${size} B is larger than the ${maxBytes} B an arena may hold`);
    }
    for (let a = 0;; a++) {
      if (a === placed.length) placed.push([]), arenaBytes.push(0);
      const at = bestFit(tensors, sizes, offsets, placed[a], i);
      if (at + size > maxBytes) continue;
      offsets[i] = at;
      arenas[i] = a;
      arenaBytes[a] = Math.max(arenaBytes[a], at + size);
      insertSorted(placed[a], i, offsets);
      break;
    }
  }
  return { offsets, arenas, arenaBytes };
}

/** The offset tensor `i` takes among `placed`: the smallest gap between tensors live with it, else past them. */
function bestFit(
  tensors: readonly LiveRange[],
  sizes: readonly number[],
  offsets: readonly number[],
  placed: readonly number[],
  i: number,
): number {
  let best = -1, bestGap = Infinity, end = 0;
  for (const j of placed) {
    if (!overlaps(tensors[i], tensors[j])) continue;
    const gap = offsets[j] - end;
    if (gap >= sizes[i] && gap < bestGap) {
      best = end;
      bestGap = gap;
    }
    end = Math.max(end, offsets[j] + sizes[j]);
  }
  return best >= 0 ? best : end;
}

/** The most bytes live at any one step (sizes aligned): no arena can be smaller. */
export function peakLiveBytes(tensors: readonly LiveRange[], alignment: number): number {
  const events: [number, number][] = [];
  for (const t of tensors) {
    const size = alignUp(Math.max(t.bytes, 0), alignment);
    events.push([t.first, size], [t.last + 1, -size]);
  }
  // Frees at a step are applied before allocations at that step: a range ending at s − 1 is gone by step s.
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let live = 0, peak = 0;
  for (const [, delta] of events) {
    live += delta;
    peak = Math.max(peak, live);
  }
  return peak;
}

function insertSorted(placed: number[], i: number, offsets: number[]): void {
  let lo = 0, hi = placed.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[placed[mid]] <= offsets[i]) lo = mid + 1;
    else hi = mid;
  }
  placed.splice(lo, 0, i);
}
