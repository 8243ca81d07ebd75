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
