/**
 * Pass 6: liveness and memory plan. Live ranges come from pass 4's timeline (a slot lives from the step that
 * writes it to the last step that reads it); each backend gets one arena holding its intermediates and incoming
 * copies (several, when one would pass `caps.maxBindingBytes`), packed by `planArenas` with offsets aligned to
 * `caps.alignment`. Inputs, outputs, state and weights keep
 * buffers of their own, counted separately. A plan needing more than `caps.memoryBytes` is an error here, before
 * anything is allocated.
 *
 * @module
 */

import { alignUp } from "../backend.ts";
import { planArenas } from "../memory_plan.ts";
import type { Context } from "./context.ts";
import { type BackendMemory, ScheduleError } from "./plan.ts";
import type { Split } from "./split.ts";

/** Pass 6: sets every arena slot's offset; returns each backend's memory. */
export function planMemory(ctx: Context, split: Split): Record<string, BackendMemory> {
  const perBackend: Record<string, BackendMemory> = {};
  for (const backend of ctx.backends) {
    const { alignment, memoryBytes, maxBindingBytes } = backend.caps;
    const mine = split.slots.filter((s) => s.backend === backend.name);
    const arena = mine.filter((s) => s.in === "arena");
    let packed;
    try {
      packed = planArenas(arena, alignment, maxBindingBytes);
    } catch (e) {
      throw new ScheduleError(`${backend.name}: ${(e as Error).message} (an intermediate over the binding limit)`);
    }
    arena.forEach((s, i) => [s.offset, s.arena] = [packed.offsets[i], packed.arenas[i]]);
    for (const s of mine) {
      if (s.in !== "arena" && s.in !== "weight" && alignUp(s.bytes, alignment) > maxBindingBytes) {
        throw new ScheduleError(
          `${backend.name}: ${s.in} tensor #${s.tensor} takes ${s.bytes} B, more than one binding may hold ` +
            `(${maxBindingBytes} B): fewer cache blocks or a shorter step`,
        );
      }
    }
    const arenaBytes = packed.arenaBytes.reduce((a, b) => a + b, 0);
    // A weight at the home another plan gave it is that plan's buffer (`weightHomes`): not counted here.
    const shared = (s: { tensor: number; in: string }) =>
      s.in === "weight" && ctx.options.weightHomes?.[ctx.table[s.tensor].name] === backend.name;
    const sum = (residences: string[]) =>
      mine.filter((s) => residences.includes(s.in) && !shared(s)).reduce((n, s) => n + alignUp(s.bytes, alignment), 0);
    const memory: BackendMemory = {
      arenaBytes,
      arenas: packed.arenaBytes,
      unsharedBytes: sum(["arena"]),
      weightBytes: sum(["weight"]),
      stateBytes: sum(["state"]),
      ioBytes: sum(["input", "output"]),
      allocations: arena.map((s) => ({
        tensor: s.tensor,
        arena: s.arena,
        offset: s.offset,
        bytes: s.bytes,
        first: s.first,
        last: s.last,
      })),
    };
    const used = ctx.options.usedBytes?.[backend.name] ?? 0;
    const total = memory.arenaBytes + memory.weightBytes + memory.stateBytes + memory.ioBytes + used;
    if (total > memoryBytes && !ctx.options.sizing) {
      throw new ScheduleError(
        `plan needs ${total} B on ${backend.name} (weights ${memory.weightBytes}, state ${memory.stateBytes}, ` +
          (used ? `another plan ${used}, ` : "") +
          `arena ${memory.arenaBytes}, io ${memory.ioBytes}) but it has ${memoryBytes} B: a smaller --dtype shrinks ` +
          `the weights (bf16: 2 B per value, q8 and f8e4m3: about 1 B), fewer or shorter sequences the cache`,
        [],
        true,
      );
    }
    perBackend[backend.name] = memory;
  }
  return perBackend;
}
