/**
 * The cost of memory64: the same kernels on the wasm32 build (kernels.wasm) and the wasm64 build (kernels64.wasm),
 * the latter with its buffers low in the memory and above 4 GiB, in one process, the three variants interleaved
 * run by run (in rotating order) so machine noise hits them alike. Medians.
 *
 *   deno run --allow-read bench/memory64.ts [--threads 1,2] [--reps 41]
 *
 * Rows: the decode matvec (1 activation row, weights rotated through ≥ 256 MiB of copies so they come from DRAM:
 * memory-bound) for q8 and f32, a q8 matvec whose 1 MiB of weights stay in cache (the code, not the memory), and
 * the prefill GEMM (512 rows) for f32 and q8 weights.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DT, q8Bytes, warmup, WasmKernels, type WasmWeightDType } from "../runtime/backends/wasm/module.ts";
import { ThreadPool } from "../runtime/backends/wasm/threads.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: { threads: { type: "string", default: "1,2" }, reps: { type: "string", default: "41" } },
});
const reps = Number(flags.reps);
const GIB = 2 ** 30;

const variants = [
  { name: "wasm32", k: await WasmKernels.load() },
  { name: "wasm64", k: await WasmKernels.load({ memory64: true, maxBytes: 2 * GIB }) },
  { name: "wasm64 >4G", k: await WasmKernels.load({ memory64: true, reserveBelow: 4 * GIB, maxBytes: 6 * GIB }) },
];
for (const v of variants) warmup(v.k, 500);

interface Case {
  what: string;
  dt: WasmWeightDType;
  M: number;
  N: number;
  K: number;
  cold: boolean;
}
const cases: Case[] = [
  { what: "matvec cold", dt: "q8", M: 1, N: 4096, K: 1024, cold: true },
  { what: "matvec cold", dt: "f32", M: 1, N: 4096, K: 1024, cold: true },
  { what: "matvec hot", dt: "q8", M: 1, N: 1024, K: 1024, cold: false },
  { what: "gemm", dt: "f32", M: 512, N: 1024, K: 1024, cold: false },
  { what: "gemm", dt: "q8", M: 512, N: 1024, K: 1024, cold: false },
];

function weightBytes(dt: WasmWeightDType, n: number, kk: number): number {
  if (dt === "f32") return n * kk * 4;
  const q = q8Bytes(n, kk);
  return q.scalesOffset + q.scales;
}

/** Valid random weights (q8 values in ±125, scales 0.01) and activations, the same bytes on every variant. */
function fill(k: WasmKernels, ptr: number, dt: WasmWeightDType | "x", n: number, kk: number): void {
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
  if (dt === "q8") {
    const v = k.i8(ptr, n * kk);
    for (let i = 0; i < v.length; i++) v[i] = Math.floor(next() * 251) - 125;
    k.f32(ptr + q8Bytes(n, kk).scalesOffset, n * Math.ceil(kk / 32)).fill(0.01);
  } else {
    const v = k.f32(ptr, n * kk);
    for (let i = 0; i < v.length; i++) v[i] = next() - 0.5;
  }
}

function median(a: number[]): number {
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

const table: string[][] = [];
for (const threads of flags.threads!.split(",").map(Number)) {
  const pools = await Promise.all(variants.map((v) => ThreadPool.create(v.k, threads)));
  try {
    for (const c of cases) {
      const wb = weightBytes(c.dt, c.N, c.K), copies = c.cold ? Math.ceil(256 * 2 ** 20 / wb) : 1;
      const setups = variants.map((v) => {
        const k = v.k, w0 = k.alloc(wb);
        fill(k, w0, c.dt, c.N, c.K);
        const ws = [w0];
        for (let i = 1; i < copies; i++) ws.push(k.upload(k.u8(w0, wb)));
        const x = k.alloc(c.M * c.K * 4), y = k.alloc(c.M * c.N * 4);
        fill(k, x, "x", c.M, c.K);
        if (v.name.includes(">4G")) {
          for (const p of [x, y, ...ws]) if (p < 4 * GIB) throw new Error("not above 4 GiB");
        }
        const args = ws.map((w) => [x, w, DT[c.dt], 1, c.dt === "q8" ? w + q8Bytes(c.N, c.K).scalesOffset : 0, y, c.M]);
        return { k, ws, x, y, args: args.map((a) => [...a, c.N, c.K]) };
      });
      const times: number[][] = variants.map(() => []);
      for (let r = -1; r < reps; r++) {
        for (let v = 0; v < variants.length; v++) {
          const j = (v + r + 1) % variants.length; // rotate the order: no variant always runs first
          const s = setups[j], t0 = performance.now();
          pools[j].parallelFor("matmul", s.args[(r + 1) % copies], c.N, { align: 8 });
          if (r >= 0) times[j].push(performance.now() - t0); // run −1 warms up
        }
      }
      const ms = times.map(median);
      const rate = (t: number) =>
        c.M === 1 ? `${(wb / t / 1e6).toFixed(1)} GB/s` : `${(2 * c.M * c.N * c.K / t / 1e6).toFixed(1)} GFLOPS`;
      table.push([
        `${c.what} ${c.dt} ${c.M}×${c.K}→${c.N}`,
        String(threads),
        ...ms.map((t) => `${t.toFixed(3)} (${rate(t)})`),
        ...ms.slice(1).map((t) => `${((t / ms[0] - 1) * 100).toFixed(1)}%`),
      ]);
      console.error(table[table.length - 1].join(" | "));
      for (const s of setups) for (const p of [s.x, s.y, ...s.ws]) s.k.free(p);
    }
  } finally {
    for (const p of pools) p.dispose();
  }
}

const head = ["kernel", "thr", ...variants.map((v) => `${v.name} ms`), "Δ wasm64", "Δ wasm64 >4G"];
console.log(`| ${head.join(" | ")} |\n|${head.map(() => " --- ").join("|")}|`);
for (const row of table) console.log(`| ${row.join(" | ")} |`);
