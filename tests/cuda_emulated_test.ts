/**
 * The cuda backend's kernels, run on the CPU: kernels/cuda/*.cu built by clang-19 as C++ against
 * tests/cuda_host_shim.h (CUDA's built-ins; a block's threads as fibers, barriers and warp shuffles as scheduling
 * points) into the fake driver, whose cuLaunchKernel then runs them (`FAKE_CUDA_RUN=1`). The cuda column of
 * tests/backend_ops_test.ts then runs for real here: every op case, through the backend's host code and the very
 * kernel sources the committed PTX comes from, ≡ the reference within that file's bounds (twice: MLA with its
 * default chunks, then with chunks of two pieces, so both the merge across chunks and the online softmax inside a
 * chunk run on the op table's contexts); and a replayed CUDA
 * graph (the fake records a capture and replays it) computes what the same runs launched one by one do. What this
 * cannot show is what only a GPU has (its math library's rounding, memory ordering, speed): bench/cuda_check.sh
 * stage 1 does.
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";
import { fakeLibcuda } from "./cuda_helpers.ts";
import { makeCudaFactory } from "../runtime/backends/cuda/backend.ts";
import { makeSegment } from "../runtime/backend.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import * as ops from "../ops/mod.ts";

const lib = await fakeLibcuda({ kernels: true });

/** Runs backend_ops_test's cuda column on the CPU-run kernels with `env` added; returns its summary line. */
async function cudaColumn(env: Record<string, string> = {}): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--filter", "backend ops: cuda", new URL("./backend_ops_test.ts", import.meta.url).pathname],
    env: {
      TRAMONTANE_LIBCUDA: lib!,
      FAKE_CUDA_RUN: "1",
      // The column runs each case once: launched one by one (graph replay has its own test below).
      TRAMONTANE_CUDA_GRAPHS: "0",
      // One `cuda\tCASE\terror\tstate error` line per case that ran on cuda (not refused by `supports`).
      BACKEND_OPS_REPORT: "1",
      NO_COLOR: "1",
      XDG_RUNTIME_DIR: "/tmp",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const summary = text.match(/^(ok|FAILED) \| .*$/m)?.[0] ?? "(no summary)";
  const failed = [...text.matchAll(/^\s+(.+) \.\.\. FAILED/gm)].map((m) => m[1]);
  assert(out.success && /ok \| 1 passed \((\d+) steps\)/.test(summary), `${summary}\nfailed: ${failed.join("; ")}`);
  // The table's size as backend_ops_test builds it (OP_CASES.length, in the column's name): every case must be a
  // step and must have run on cuda, so a family the backend stops running (refused, so skipped) fails here.
  const listed = Number(text.match(/^backend ops: cuda ≡ reference on (\d+) cases/m)?.[1]);
  const steps = Number(summary.match(/\((\d+) steps\)/)![1]);
  const ran = new Set([...text.matchAll(/^cuda\t(.+?)\t\S+\t\S+$/gm)].map((m) => m[1]));
  const refused = text.match(/^cuda does not run: (.*)$/m)?.[1];
  assert(listed > 0, `no "backend ops: cuda ≡ reference on N cases" line in:\n${text.slice(0, 2000)}`);
  assertEquals(refused, undefined, "cases the cuda backend refused");
  assertEquals(steps, listed, `steps of the cuda column vs OP_CASES.length`);
  assertEquals(ran.size, listed, `cases that ran on cuda (BACKEND_OPS_REPORT lines) vs OP_CASES.length`);
  return summary;
}

Deno.test({
  name: "cuda kernels on the CPU (fake driver + host shim): backend_ops_test's cuda column ≡ the reference",
  ignore: lib === undefined,
  async fn() {
    console.log(`cuda column on the CPU: ${await cudaColumn()}`);
  },
});

Deno.test({
  name: "cuda kernels on the CPU: the cuda column with MLA chunks of two 256-position pieces (the online softmax " +
    "inside a chunk) ≡ the reference",
  ignore: lib === undefined,
  async fn() {
    console.log(`cuda column, MLA span 512: ${await cudaColumn({ TRAMONTANE_CUDA_MLA_SPAN: "512" })}`);
  },
});

Deno.test({
  name: "cuda kernels on the CPU: a replayed CUDA graph computes each run's own values (its tables copied anew) ≡ " +
    "the same runs launched one by one",
  ignore: lib === undefined,
  async fn() {
    Deno.env.set("FAKE_CUDA_RUN", "1");
    const graphs = await makeCudaFactory({ libcuda: lib, graphs: true }).create();
    const eager = await makeCudaFactory({ libcuda: lib, graphs: false }).create();
    try {
      const g = new GraphBuilder();
      const T = sym("T", 3), x = g.input("x", [T, 2, 8], "f32"), pos = g.input("pos", [T], "i32");
      let y = x;
      for (let l = 0; l < 3; l++) y = ops.mul(g, ops.rope(g, y, pos, { theta: 10000 }), x);
      g.output("y", y);
      const graph = g.build();
      const out = graph.outputs[0].id, values = new Float32Array(48).map((_, i) => Math.sin(i) + 0.5);
      const setups = await Promise.all([graphs, eager].map(async (b) => {
        const buf = b.alloc(4096);
        const bindings = new Map([[x.id, { buffer: buf, offset: 0 }], [pos.id, { buffer: buf, offset: 256 }], [out, {
          buffer: buf,
          offset: 512,
        }]]);
        b.write({ buffer: buf, offset: 0 }, values);
        return { b, buf, bindings, prepared: await b.prepare(makeSegment(graph, graph.nodes.map((n) => n.id))) };
      }));
      for (const p of [[0, 1, 2], [7, 8, 9], [3, 100, 1000], [5, 5, 5]]) {
        const positions = Int32Array.from(p), results: Float32Array[] = [];
        for (const s of setups) {
          s.b.write({ buffer: s.buf, offset: 256 }, positions);
          s.b.run(s.prepared, s.bindings, { T: 3 }, new Map([[pos.id, positions]]));
          results.push(new Float32Array((await s.b.read({ buffer: s.buf, offset: 512 }, 4 * 48)).buffer));
        }
        assertEquals(results[0], results[1], `positions ${p}`);
      }
    } finally {
      graphs.dispose();
      eager.dispose();
      Deno.env.delete("FAKE_CUDA_RUN");
    }
  },
});
