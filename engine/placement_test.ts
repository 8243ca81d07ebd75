import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { decodeGraph } from "../graph/inspect.ts";
import { resolveModel } from "../graph/models/mod.ts";
import type { Backend } from "../runtime/backend.ts";
import { createBackends } from "../runtime/registry.ts";
import { ScheduleError } from "../runtime/schedule.ts";
import { planBackends } from "./placement.ts";

Deno.test("planBackends refuses instances the host memory cannot hold, before loading, and disposes the backends it was given", async () => {
  const graph = decodeGraph(await resolveModel("tiny"));
  let disposed = 0;
  const counted = (b: Backend) =>
    new Proxy(b, {
      get(t, k) {
        if (k === "dispose") return () => (disposed++, t.dispose());
        const v = Reflect.get(t, k, t);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
  // 24 MiB instances cannot hold tiny's 32 MiB of weights: two or more, and the host has 16 MiB.
  const backendOptions = { threads: 1, memoryBytes: 24 * 2 ** 20 };
  const backends = (await createBackends(["wasm"], backendOptions)).map(counted);
  const error = await assertRejects(
    () =>
      planBackends([graph], backends, {
        backendOptions,
        hostMemoryBytes: 16 * 2 ** 20,
        log: () => {},
      }),
    ScheduleError,
  );
  assert(error.message.includes("but this host has 0.02 GiB of memory"), error.message);
  assertEquals(disposed, 1);
});

Deno.test("loadModel speculative on split wasm: the draft reads the target's embedding and head where the target has them, one buffer each, counted once", async () => {
  const { loadModel } = await import("./model.ts");
  const { alignUp, tensorBytes, weightBytes } = await import("../runtime/backend.ts");
  const { tensorTable } = await import("../graph/ir.ts");
  const options = {
    backend: "wasm",
    quiet: true,
    seed: 3,
    maxModelLen: 64,
    maxTokens: 16,
    maxSeqs: 2,
    cacheDtype: "f32" as const,
    threads: 1,
    backendOptions: { memoryBytes: 64 * 2 ** 20 },
  };
  const plain = await loadModel("tiny", options);
  const plainNames = plain.backends.map((b) => b.name), plainMemory = plain.plannedMemory;
  plain.dispose();
  const m = await loadModel("tiny", { ...options, speculative: { model: "tiny-eagle", numTokens: 3 } });
  try {
    assertEquals(m.backends.map((b) => b.name), plainNames); // no instance for copies of shared weights
    assert(plainNames.length >= 2, plainNames.join(","));
    const draft = m.draft!;
    for (const name of ["embed", "lm_head"]) {
      const target = m.plan.weights.find((w) => w.name === name)!,
        mine = draft.plan.weights.find((w) => w.name === name)!;
      assertEquals(target.backends.length, 1, `${name} on ${target.backends}`);
      assertEquals(mine.backends, target.backends, name); // the same buffer (one residency entry)
    }
    // What is allocated: each (backend, weight name) once over both plans; each (backend, state name) once.
    const weights = new Map<string, number>(), state = new Map<string, number>();
    for (const [plan, graph] of [[m.plan, m.graph], [draft.plan, draft.graph]] as const) {
      for (const w of plan.weights) {
        const decl = graph.weights.find((d) => d.id === w.tensor)!;
        for (const b of w.backends) {
          const backend = m.backends.find((x) => x.name === b)!;
          const parts = w.parts?.[b];
          weights.set(
            `${b}/${w.name}`,
            parts ? parts.reduce((n, p) => n + p.bytes, 0) : weightBytes(backend, decl.shape, decl.dtype),
          );
        }
      }
      for (const s of plan.state) {
        const caps = m.backends.find((x) => x.name === s.backend)!.caps;
        state.set(`${s.backend}/${s.name}`, alignUp(tensorBytes(caps, tensorTable(graph)[s.tensor]), caps.alignment));
      }
    }
    const planned = m.plannedMemory;
    assertEquals(planned.weights, [...weights.values()].reduce((a, b) => a + b, 0));
    assertEquals(
      planned.weights - plainMemory.weights,
      draft.plan.weights.filter((w) => w.name.startsWith("draft.")).reduce(
        (n, w) => n + weights.get(`${w.backends[0]}/${w.name}`)!,
        0,
      ),
    );
    // The draft's own caches count, eagle.hidden once.
    assert(draft.cacheBytes > 0);
    assertEquals(state.size, m.plan.state.length + draft.plan.state.filter((s) => s.name.startsWith("draft.")).length);
    assertEquals(planned.state, [...state.values()].reduce((a, b) => a + b, 0));
    assert(
      planned.state >= plainMemory.state + draft.cacheBytes,
      `${planned.state} vs ${plainMemory.state} + ${draft.cacheBytes}`,
    );
  } finally {
    m.dispose();
  }
});
