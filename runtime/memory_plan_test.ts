import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { type LiveRange, overlaps, peakLiveBytes, planArena } from "./memory_plan.ts";
import { createNullBackend } from "./backends/null.ts";
import { schedule } from "./schedule.ts";
import { chain, residualLm } from "../tests/schedule_helpers.ts";

/** Every pair of tensors live at a common step occupies disjoint bytes; every offset is aligned. */
function assertSound(tensors: readonly LiveRange[], offsets: readonly number[], arenaBytes: number, align: number) {
  for (let i = 0; i < tensors.length; i++) {
    assertEquals(offsets[i] % align, 0, `offset of ${i} not aligned to ${align}`);
    assert(offsets[i] + tensors[i].bytes <= arenaBytes, `tensor ${i} overflows the arena`);
    for (let j = i + 1; j < tensors.length; j++) {
      if (!overlaps(tensors[i], tensors[j]) || tensors[i].bytes === 0 || tensors[j].bytes === 0) continue;
      const disjoint = offsets[i] + tensors[i].bytes <= offsets[j] || offsets[j] + tensors[j].bytes <= offsets[i];
      assert(disjoint, `tensors ${i} and ${j} are live together and share bytes`);
    }
  }
}

Deno.test("planArena: the documented example, and best fit picks the tightest gap", () => {
  const example = [{ bytes: 100, first: 0, last: 1 }, { bytes: 100, first: 1, last: 2 }, {
    bytes: 100,
    first: 2,
    last: 2,
  }];
  assertEquals(planArena(example, 64), { offsets: [0, 128, 0], arenaBytes: 256 });
  // After step 0, A and C are gone, leaving holes [0, 256) and [384, 512) beside B and D: E takes the tighter
  // one (first fit would take 0), and F the 64 B left of it.
  const t: LiveRange[] = [
    { bytes: 256, first: 0, last: 0 }, // A
    { bytes: 128, first: 0, last: 9 }, // B
    { bytes: 128, first: 0, last: 0 }, // C
    { bytes: 64, first: 0, last: 9 }, // D
    { bytes: 64, first: 1, last: 9 }, // E
    { bytes: 64, first: 1, last: 9 }, // F
  ];
  const { offsets, arenaBytes } = planArena(t, 64);
  assertEquals(offsets, [0, 256, 384, 512, 384, 448]);
  assertEquals(arenaBytes, 576);
  assertThrows(() => planArena(t, 0), Error, "alignment");
});

Deno.test("planArena: random live ranges never overlap in time and space, aligned, above the peak", () => {
  const rand = mulberry32(7);
  for (let trial = 0; trial < 200; trial++) {
    const align = [1, 4, 16, 256][trial % 4];
    const n = 1 + Math.floor(rand() * 40);
    const tensors = Array.from({ length: n }, () => {
      const first = Math.floor(rand() * 30);
      return { bytes: Math.floor(rand() * 3000), first, last: first + Math.floor(rand() * 8) };
    });
    const { offsets, arenaBytes } = planArena(tensors, align);
    assertSound(tensors, offsets, arenaBytes, align);
    const peak = peakLiveBytes(tensors, align);
    const sum = tensors.reduce((s, t) => s + Math.ceil(t.bytes / align) * align, 0);
    assert(arenaBytes >= peak && arenaBytes <= sum, `arena ${arenaBytes} outside [${peak}, ${sum}]`);
  }
});

Deno.test("memory plan of a chain: two tensors' worth of arena, far below the sum of intermediates", () => {
  const graph = chain(10);
  const plan = schedule(graph, [createNullBackend({ caps: { alignment: 256 } })]);
  const m = plan.memory.perBackend.null;
  // Nine intermediates of [8, 256] f32 = 8 KiB each (the last node is the graph output, in its own buffer).
  assertEquals(m.allocations.length, 9);
  assertEquals(m.unsharedBytes, 9 * 8192);
  assertEquals(m.arenaBytes, 2 * 8192);
  assertSound(m.allocations, m.allocations.map((a) => a.offset), m.arenaBytes, 256);
  assertEquals(m.ioBytes, 2 * 8192); // input x and output y
  assertEquals(m.weightBytes, 1024);
});

Deno.test("memory plan across backends: every backend's arena is sound, copies included", () => {
  const gpu = createNullBackend({ name: "gpu", ops: ["matmul"], caps: { alignment: 128 } });
  const cpu = createNullBackend({ name: "cpu", caps: { alignment: 64 } });
  const plan = schedule(residualLm(), [gpu, cpu]);
  for (const b of [gpu, cpu]) {
    const m = plan.memory.perBackend[b.name];
    assert(m.allocations.length > 0);
    assertSound(m.allocations, m.allocations.map((a) => a.offset), m.arenaBytes, b.caps.alignment);
    assert(m.arenaBytes >= peakLiveBytes(m.allocations, b.caps.alignment));
  }
  // Copy destinations are arena allocations on the receiving side.
  for (const c of plan.copies) {
    assertEquals(c.dst.in, "arena");
    assert(plan.memory.perBackend[c.to].allocations.some((a) => a.tensor === c.tensor && a.offset === c.dst.offset));
  }
});
