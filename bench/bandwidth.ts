/**
 * The machine's memory bandwidth as the WASM kernels see it: a STREAM-style add over three 128 MiB arrays on the
 * thread pool, best of 5, in GB/s (bytes read and written). `bench/roofline.ts` runs it in a process of its own so its
 * arrays stay out of the benchmark's peak RSS.
 *
 * ```
 * deno run --allow-read bench/bandwidth.ts --threads 2   # prints e.g. 27.3
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { WasmKernels } from "../runtime/backends/wasm/module.ts";
import { ThreadPool } from "../runtime/backends/wasm/threads.ts";

const { values } = parseArgs({ options: { threads: { type: "string" } } });
const k = await WasmKernels.load();
const pool = await ThreadPool.create(k, values.threads ? Number(values.threads) : navigator.hardwareConcurrency);
try {
  const n = 32 << 20; // floats per array
  const [a, b, y] = [k.alloc(4 * n), k.alloc(4 * n), k.alloc(4 * n)];
  k.f32(a, n).fill(1);
  k.f32(b, n).fill(2);
  let best = 0;
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    pool.parallelFor("add", [a, b, y], n, { minRows: 1 << 16 });
    best = Math.max(best, (3 * 4 * n) / ((performance.now() - start) / 1000) / 1e9);
  }
  console.log(best.toFixed(2));
} finally {
  pool.dispose();
}
