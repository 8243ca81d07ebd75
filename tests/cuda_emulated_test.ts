/**
 * The cuda backend's kernels, run on the CPU: kernels/cuda/*.cu built by clang-19 as C++ against
 * tests/cuda_host_shim.h (CUDA's built-ins; a block's threads as fibers, barriers and warp shuffles as scheduling
 * points) into the fake driver, whose cuLaunchKernel then runs them (`FAKE_CUDA_RUN=1`). The cuda column of
 * tests/backend_ops_test.ts then runs for real here: every op case, through the backend's host code and the very
 * kernel sources the committed PTX comes from, ≡ the reference within that file's bounds. What this cannot show
 * is what only a GPU has (its math library's rounding, memory ordering, speed): bench/cuda_check.sh stage 1 does.
 *
 * @module
 */

import { assert } from "./assert.ts";
import { fakeLibcuda } from "./cuda_helpers.ts";

const lib = await fakeLibcuda({ kernels: true });

Deno.test({
  name: "cuda kernels on the CPU (fake driver + host shim): backend_ops_test's cuda column ≡ the reference",
  ignore: lib === undefined,
  async fn() {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--filter", "backend ops: cuda", new URL("./backend_ops_test.ts", import.meta.url).pathname],
      env: {
        TRAMONTANE_LIBCUDA: lib!,
        FAKE_CUDA_RUN: "1",
        // The fake does not replay graphs: every run launches its kernels.
        TRAMONTANE_CUDA_GRAPHS: "0",
        NO_COLOR: "1",
        XDG_RUNTIME_DIR: "/tmp",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const summary = text.match(/^(ok|FAILED) \| .*$/m)?.[0] ?? "(no summary)";
    const failed = [...text.matchAll(/^\s+(.+) \.\.\. FAILED/gm)].map((m) => m[1]);
    assert(out.success && /ok \| 1 passed \((\d+) steps\)/.test(summary), `${summary}\nfailed: ${failed.join("; ")}`);
    const cases = Number(summary.match(/\((\d+) steps\)/)![1]);
    assert(cases >= 150, `only ${cases} cases ran on cuda`);
    console.log(`cuda column on the CPU: ${summary}`);
  },
});
