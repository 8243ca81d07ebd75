/**
 * WebGPU kernel roofline: the decode matvec's weight bandwidth against a copy kernel's, and the prefill GEMM's
 * FLOP rate against an FMA microbenchmark's, on the same adapter, timed with timestamp queries (the issue's
 * targets on a GPU: matvec ≥ 60% of copy, GEMM ≥ 30% of FMA). The kernels are kernels/wgsl/matmul.ts's, dispatched
 * directly on buffers of random bytes (timing only: the values do not matter). Needs `timestamp-query`; lavapipe
 * has it, but its numbers are a CPU emulating a GPU. Untested on GPU hardware.
 *
 *   XDG_RUNTIME_DIR=/tmp deno run -A bench/webgpu_kernels.ts [--n 4096] [--k 4096] [--m 512] [--dtypes bf16,q8]
 *     [--repetitions 5] [--json]
 *
 * Defaults are GPU-sized; on lavapipe use e.g. `--n 1024 --k 1024 --m 64 --repetitions 2`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { GEMM_TILE, gemmKernel, matvecKernel, matvecThreads } from "../kernels/wgsl/matmul.ts";
import type { Stored } from "../kernels/wgsl/common.ts";
import { scaleWord, storedBytes } from "../runtime/backends/gpu_layout.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "4096" },
    k: { type: "string", default: "4096" },
    m: { type: "string", default: "512" },
    dtypes: { type: "string", default: "f32,bf16,f16,f8e4m3,q8,nvfp4,q4" },
    repetitions: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
  },
});
const N = Number(flags.n), K = Number(flags.k), M = Number(flags.m), reps = Number(flags.repetitions);

const adapter = await navigator.gpu?.requestAdapter();
if (!adapter) throw new Error("no WebGPU adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)");
if (!adapter.features.has("timestamp-query")) throw new Error("the adapter has no timestamp-query: no kernel timings");
const f16 = adapter.features.has("shader-f16");
const device = await adapter.requestDevice({
  requiredFeatures: ["timestamp-query", ...(f16 ? ["shader-f16" as const] : [])],
  requiredLimits: {
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
  },
});
const querySet = device.createQuerySet({ type: "timestamp", count: 2 });
const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });

function buffer(bytes: number, fill = true): GPUBuffer {
  const b = device.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  if (fill) {
    // Random bytes, written 16 MiB at a time.
    const chunk = new Uint8Array(Math.min(b.size, 1 << 24));
    for (let i = 0; i < chunk.length; i += 65536) crypto.getRandomValues(chunk.subarray(i, i + 65536));
    for (let at = 0; at < b.size; at += chunk.length) {
      device.queue.writeBuffer(b, at, chunk, 0, Math.min(chunk.length, b.size - at));
    }
  }
  return b;
}

/** The fastest of `reps` runs of `wgsl` over `groups` workgroups binding `buffers` (from 0), in nanoseconds. */
async function time(wgsl: string, buffers: GPUBuffer[], groups: number): Promise<number> {
  device.pushErrorScope("validation");
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code: wgsl }), entryPoint: "main" },
  });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((b, i) => ({ binding: i, resource: { buffer: b } })),
  });
  let best = Infinity;
  for (let r = 0; r < reps + 1; r++) {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass({
      timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    const x = Math.min(groups, 65535);
    pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    pass.end();
    const staging = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, staging, 0, 16);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const [a, b] = new BigUint64Array(staging.getMappedRange().slice(0));
    staging.destroy();
    if (r > 0) best = Math.min(best, Number(b - a)); // the first run warms up
  }
  const error = await device.popErrorScope();
  if (error) throw new Error(`${wgsl.split("\n")[0]}: ${error.message}`);
  return best;
}

/** Copy bandwidth (GB/s, read + write) over a buffer of `bytes`. */
async function copyRate(bytes: number): Promise<number> {
  const n = Math.floor(bytes / 16);
  const wgsl = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> A: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> B: array<vec4<u32>>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>,
    @builtin(num_workgroups) g: vec3<u32>) {
  let i = (w.y * g.x + w.x) * 256u + l.x;
  if (i < ${n}u) { B[i] = A[i]; }
}`;
  const ns = await time(wgsl, [buffer(16 * n), buffer(16 * n, false)], Math.ceil(n / 256));
  return (2 * 16 * n) / ns;
}

/** FMA rate (GFLOP/s): 4 independent chains of 1,024 fused multiply-adds a thread, 65,536 threads. */
async function fmaRate(): Promise<number> {
  const threads = 65536, iters = 1024;
  const wgsl = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
  let i = w.x * 256u + l.x;
  var a = vec4<f32>(f32(i), 1.0, 2.0, 3.0);
  let b = vec4<f32>(0.999, 0.998, 0.997, 0.996);
  for (var j = 0u; j < ${iters}u; j++) { a = fma(a, b, b); }
  O[i] = a.x + a.y + a.z + a.w;
}`;
  const ns = await time(wgsl, [buffer(4 * threads, false)], threads / 256);
  return (threads * iters * 4 * 2) / ns;
}

const params = (m: number, stored: Stored) => {
  const p = device.createBuffer({ size: 32, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(p, 0, new Uint32Array([m, N, K, N, 0, scaleWord([N, K], N, stored), 0, 0]));
  return p;
};

const copy = await copyRate(storedBytes([N, K], "bf16"));
const fma = await fmaRate();
const rows = [];
for (const dt of flags.dtypes!.split(",") as Stored[]) {
  const w = buffer(storedBytes([N, K], dt)), y = buffer(4 * M * N, false);
  const useF16 = f16 && dt === "f16";
  const threads = matvecThreads(dt, K);
  const mv = await time(
    matvecKernel(dt, threads, useF16, 1),
    [params(1, dt), buffer(4 * K), w, y],
    Math.ceil(N / (64 / threads)),
  );
  const gemm = await time(
    gemmKernel(dt, useF16),
    [params(M, dt), buffer(4 * M * K), w, y],
    Math.ceil(M / GEMM_TILE) * Math.ceil(N / GEMM_TILE),
  );
  const matvecGbs = storedBytes([N, K], dt) / mv, gemmGflops = (2 * M * N * K) / gemm;
  rows.push({
    dtype: dt,
    matvecUs: mv / 1e3,
    matvecGbs,
    ofCopy: matvecGbs / copy,
    gemmUs: gemm / 1e3,
    gemmGflops,
    ofFma: gemmGflops / fma,
  });
  w.destroy();
  y.destroy();
}
const info = adapter.info;
const name = `${info.vendor} ${info.description}`.trim();
if (flags.json) console.log(JSON.stringify({ adapter: name, N, K, M, copyGbs: copy, fmaGflops: fma, rows }));
else {
  console.log(`${name}: copy ${copy.toFixed(2)} GB/s, FMA ${fma.toFixed(1)} GFLOP/s; W [${N}, ${K}], GEMM M = ${M}\n`);
  console.log("| dtype | matvec µs | GB/s | of copy | GEMM µs | GFLOP/s | of FMA |\n|---|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(
      `| ${r.dtype} | ${r.matvecUs.toFixed(1)} | ${r.matvecGbs.toFixed(2)} | ${(100 * r.ofCopy).toFixed(0)}% | ` +
        `${r.gemmUs.toFixed(1)} | ${r.gemmGflops.toFixed(2)} | ${(100 * r.ofFma).toFixed(0)}% |`,
    );
  }
}
device.destroy();
