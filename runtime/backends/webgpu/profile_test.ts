import { assert, assertEquals, assertRejects } from "../../../tests/assert.ts";
import { dispatchCountingAdapter, WEBGPU_IGNORE } from "../../../tests/webgpu_helpers.ts";
import { GraphBuilder } from "../../../graph/builder.ts";
import { matmul } from "../../../ops/matmul.ts";
import { PlanExecutor } from "../../plan_executor.ts";
import { schedule } from "../../schedule.ts";
import { memorySource } from "../../../weights/memory_source.ts";
import { f32ToBytes } from "../../../weights/codecs.ts";
import { type WebGpuBackend, webgpuBackend } from "./backend.ts";

Deno.test({
  name: "webgpu: with `profile`, timestamp queries time each kernel (where the adapter has timestamp-query)",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const g = new GraphBuilder();
    const x = g.input("x", [20, 64], "f32");
    g.output("y", matmul(g, matmul(g, x, g.weight("a", [48, 64], "f32")), g.weight("b", [8, 48], "f32")));
    const graph = g.build();
    const weight = (name: string, shape: number[]) =>
      memorySource(
        { name, shape, dtype: "f32", data: f32ToBytes(new Float32Array(shape[0] * shape[1]), "f32") },
        "f32",
      );
    const { adapter } = await dispatchCountingAdapter();
    const b = await webgpuBackend.create({ adapter, profile: true } as never) as WebGpuBackend;
    const plain = await webgpuBackend.create() as WebGpuBackend;
    try {
      await assertRejects(() => plain.kernelTimes(), Error, "`profile: true`");
      if (!adapter.features.has("timestamp-query")) {
        await assertRejects(() => b.kernelTimes(), Error, "no timestamp-query");
        return;
      }
      const weights = (d: { name: string }) => weight(d.name, d.name === "a" ? [48, 64] : [8, 48]);
      const exec = await PlanExecutor.create(graph, schedule(graph, [b]), [b], { weights });
      const inputs = { x: new Float32Array(20 * 64).fill(1) };
      await exec.run({ inputs });
      await b.resetKernelTimes();
      for (let i = 0; i < 3; i++) await exec.run({ inputs });
      const times = await b.kernelTimes();
      // Two GEMM dispatches a run (20 rows), three runs; the matvec's are recorded with 0 groups and not run.
      assertEquals([...times.keys()], ["matmul gemm f32"]);
      const t = times.get("matmul gemm f32")!;
      assertEquals(t.dispatches, 6);
      assert(t.ns > 0 && t.boundBytes > 0, JSON.stringify(t));
      exec.dispose();
    } finally {
      b.dispose();
      plain.dispose();
    }
  },
});
