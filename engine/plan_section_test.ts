import { assert, assertEquals } from "../tests/assert.ts";
import type { DType } from "../graph/dtype.ts";
import { decodeGraph } from "../graph/inspect.ts";
import { resolveModel } from "../graph/models/mod.ts";
import { planSection } from "./plan_section.ts";

const GiB = 2 ** 30;

async function section(model: string, hostGiB: number, dtype?: DType) {
  const resolved = await resolveModel(model);
  return await planSection({
    backends: "wasm",
    graphFor: (d) => decodeGraph(resolved, { dtype: d }),
    dtype,
    hostMemoryBytes: hostGiB * GiB,
    backendOptions: { threads: 1 },
  });
}

Deno.test("plan section: the real model on a 24 GiB host does not fit, and the section says by how much and what would", async () => {
  const s = await section("mistral-small-4", 24);
  assertEquals(s.fits, false);
  assertEquals(s.plan, undefined);
  const need = s.preview.needBytes.wasm;
  assert(need > 100 * GiB && need < 130 * GiB, `${need}`);
  // loadModel would grow wasm into memory64 instances of 16 GiB, split by layer; the host is what is short.
  assert(s.preview.growth!.memory64 && s.preview.growth!.instanceBytes === 16 * GiB);
  assert(s.preview.growth!.instances >= Math.ceil(need / (16 * GiB)), JSON.stringify(s.preview.growth));
  assertEquals(s.backend, `wasm:0…wasm:${s.preview.growth!.instances - 1}`);
  const text = s.lines!.join("\n");
  assert(text.includes("this host has 24.0 GiB of memory: short by"), text);
  assert(text.includes("a GPU backend with at least"), text);
  // Only smaller dtypes the backend holds natively are offered: q4 (every linear but the head and W_kvb in 4 bits) is
  // the smallest, nvfp4 (kept packed; FP8 outside the experts) next; both still short here.
  for (const a of s.alternatives) assert(a.needBytes < need && !a.fits, JSON.stringify(a));
  assertEquals(s.alternatives.slice(-2).map((a) => a.dtype), ["nvfp4", "q4"]);
});

Deno.test("plan section: with host memory to spare the real model plans over wasm instances split by whole layers", async () => {
  const s = await section("mistral-small-4", 1024);
  assertEquals(s.fits, true);
  const n = s.preview.growth!.instances;
  assert(n >= 7, `${n} instances`);
  assertEquals(s.plan!.backends, Array.from({ length: n }, (_, i) => `wasm:${i}`));
  for (let i = 0; i < n; i++) {
    const m = s.plan!.memory.perBackend[`wasm:${i}`];
    assert(m.weightBytes + m.stateBytes + m.arenaBytes + m.ioBytes < 16 * GiB, `wasm:${i} over 16 GiB`);
  }
  // The instances come in order along the graph (each holds a run of layers).
  const order = s.plan!.segments.map((seg) => Number(seg.backend.slice(5)));
  assert(order.every((b, i) => i === 0 || b >= order[i - 1]), order.join(","));
  assert(s.lines![0].includes(`split by layer over ${n} instances`), s.lines![0]);
});

Deno.test("plan section: ms4-medium q8 takes one memory64 instance; tiny fits wasm as created", async () => {
  const medium = await section("ms4-medium", 64, "q8");
  assertEquals(medium.fits, true);
  assertEquals(medium.preview.growth, { instances: 1, instanceBytes: 16 * GiB, memory64: true });
  assertEquals(medium.plan!.backends, ["wasm"]);
  const tiny = await section("tiny", 1);
  assertEquals([tiny.fits, tiny.preview.growth, tiny.backend], [true, undefined, "wasm"]);
  assert(tiny.lines![0].startsWith("plan for wasm"), tiny.lines![0]);
});
