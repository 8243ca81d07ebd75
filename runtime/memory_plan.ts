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
  if (!Number.isInteger(alignment) || alignment < 1) throw new Error(`planArena: bad alignment ${alignment}`);
  const sizes = tensors.map((t) => alignUp(Math.max(t.bytes, 0), alignment));
  const order = tensors.map((_, i) => i).sort((a, b) =>
    sizes[b] - sizes[a] || tensors[a].first - tensors[b].first || a - b
  );
  const offsets = new Array<number>(tensors.length).fill(0);
  const placed: number[] = []; // indices already given an offset, kept sorted by offset
  let arenaBytes = 0;
  for (const i of order) {
    const size = sizes[i];
    if (size === 0) continue; // nothing to hold: offset 0 is as good as any
    let best = -1, bestGap = Infinity, end = 0;
    for (const j of placed) {
      if (!overlaps(tensors[i], tensors[j])) continue;
      const gap = offsets[j] - end;
      if (gap >= size && gap < bestGap) {
        best = end;
        bestGap = gap;
      }
      end = Math.max(end, offsets[j] + sizes[j]);
    }
    offsets[i] = best >= 0 ? best : end;
    arenaBytes = Math.max(arenaBytes, offsets[i] + size);
    insertSorted(placed, i, offsets);
  }
  return { offsets, arenaBytes };
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
