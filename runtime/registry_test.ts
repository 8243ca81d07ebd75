import { assertEquals, assertRejects } from "../tests/assert.ts";
import type { BackendFactory } from "./backend.ts";
import { createNullBackend } from "./backends/null.ts";
import { BACKENDS, BackendUnavailableError, createBackend, createBackends, probeAll } from "./registry.ts";

/** A factory with a fixed probe score whose instances are null backends under its name. */
function fake(name: string, score: number | (() => never)): BackendFactory & { created: number } {
  const f = {
    name,
    created: 0,
    probe: () => typeof score === "number" ? Promise.resolve(score) : Promise.resolve().then(score),
    create: () => (f.created++, Promise.resolve(createNullBackend({ name }))),
  };
  return f;
}

Deno.test("registry: the reference backend is always there", async () => {
  assertEquals(BACKENDS.map((f) => f.name).includes("reference"), true);
  assertEquals((await probeAll()).find((p) => p.name === "reference")?.score, 1);
  const probes = await probeAll();
  const best = probes.reduce((a, b) => b.score > a.score ? b : a);
  const b = await createBackend("auto");
  assertEquals(b.name, best.name);
  b.dispose();
});

Deno.test("registry: auto picks the best available; names are checked with a useful message", async () => {
  const cpu = fake("cpu", 10), gpu = fake("gpu", 100), tpu = fake("tpu", 0);
  const broken = fake("broken", () => {
    throw new Error("driver not found");
  });
  const factories = [cpu, gpu, tpu, broken];
  assertEquals(await probeAll(factories), [
    { name: "cpu", score: 10 },
    { name: "gpu", score: 100 },
    { name: "tpu", score: 0 },
    { name: "broken", score: 0, error: "driver not found" },
  ]);
  assertEquals((await createBackend("auto", {}, factories)).name, "gpu");
  assertEquals([cpu.created, gpu.created], [0, 1]); // auto creates only the one it returns
  assertEquals((await createBackend("cpu", {}, factories)).name, "cpu");
  const unknown = await assertRejects(
    () => createBackend("cuda", {}, factories),
    BackendUnavailableError,
    'unknown backend "cuda" (known: cpu, gpu, tpu, broken; available here: gpu, cpu)',
  );
  assertEquals(unknown.available, ["gpu", "cpu"]);
  await assertRejects(
    () => createBackend("tpu", {}, factories),
    BackendUnavailableError,
    'backend "tpu" is not available here (available here: gpu, cpu)',
  );
  await assertRejects(() => createBackend("broken", {}, factories), BackendUnavailableError, "driver not found");
  await assertRejects(() => createBackend("auto", {}, [tpu]), BackendUnavailableError, "no backend is available");
});

Deno.test("registry: lists give the scheduler its preference order", async () => {
  const factories = [fake("cpu", 10), fake("gpu", 100), fake("wasm", 20)];
  const names = async (spec: string) => (await createBackends(spec, {}, factories)).map((b) => b.name);
  assertEquals(await names("cpu, gpu"), ["cpu", "gpu"]);
  assertEquals(await names("auto"), ["gpu", "wasm", "cpu"]);
  assertEquals(await names("cpu,auto"), ["cpu", "gpu", "wasm"]);
  assertEquals(await names("gpu,gpu"), ["gpu"]);
  await assertRejects(() => names(""), BackendUnavailableError, "no backend named");
});
