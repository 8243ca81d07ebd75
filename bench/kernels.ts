/**
 * WASM CPU kernel benchmarks: GFLOPS of prefill matmuls, GB/s of decode matvecs (weight bytes streamed per
 * second), for 1 and 2 threads. Medians over repeated runs.
 *
 *   deno run --allow-read bench/kernels.ts [--threads 1,2] [--quick] [--json] [--dtypes q4,q8] [--only decode]
 *     [--memory64] [--module FILE] [--shapes 1024x384,1024x1024]
 *
 * Decode rows are measured twice: "hot" reuses one weight matrix (it stays in the last-level cache) and "cold"
 * rotates through ≥ 512 MiB of copies so the weights come from DRAM, as they do for a real model.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  DT,
  MLA_PARAMS,
  q8Bytes,
  warmup,
  WasmKernels,
  type WasmWeightDType,
  writeParams,
} from "../runtime/backends/wasm/module.ts";
import { ThreadPool } from "../runtime/backends/wasm/threads.ts";
import { nvfp4RowBytes, scalesOffset, wasmWeightBytes } from "../runtime/backends/wasm/layout.ts";
import { q4RowBytes } from "../weights/codecs.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string", default: "1,2" },
    quick: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    // Only these weight dtypes (default: all), only these kernels (prefill, decode, attention; default: all).
    dtypes: { type: "string" },
    only: { type: "string" },
    // The wasm64 build (memory64: its loads carry explicit bounds checks), or a module file to try a kernel variant.
    memory64: { type: "boolean", default: false },
    // Decode shapes as K×N (default 1024×4096,4096×1024); ms4-mini's small linears are e.g. 1024×384.
    shapes: { type: "string" },
    module: { type: "string" },
  },
});
const wanted = (dt: string) => flags.dtypes === undefined || flags.dtypes.split(",").includes(dt);
const runs = (kind: string) => flags.only === undefined || flags.only.split(",").includes(kind);
const threadCounts = flags.threads!.split(",").map(Number);
const quick = flags.quick!;

const k = await WasmKernels.load({
  memory64: flags.memory64,
  wasm: flags.module === undefined ? undefined : await Deno.readFile(flags.module),
});
warmup(k, 500);
const BYTES: Record<WasmWeightDType, number> = { f32: 4, bf16: 2, f8e4m3: 1, q8: 1, nvfp4: 0.5, q4: 0.5 };

interface Row {
  kernel: string;
  dtype: string;
  shape: string;
  threads: number;
  ms: number;
  bestMs: number;
  gflops: number;
  gbps: number;
}
const rows: Row[] = [];

function log(r: Row): void {
  if (!flags.json) console.error(`  ${r.kernel} ${r.dtype} ${r.shape} t=${r.threads}: ${r.ms.toFixed(3)} ms`);
}

function median(a: number[]): number {
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

/** Fills `bytes` at `ptr` with valid random data for `dt` (f8 codes avoid NaN; q8 scales positive). */
function fillWeight(ptr: number, dt: WasmWeightDType, n: number, kk: number): number {
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
  if (dt === "f32") {
    const v = k.f32(ptr, n * kk);
    for (let i = 0; i < v.length; i++) v[i] = next() - 0.5;
  } else if (dt === "bf16") {
    const v = k.u16(ptr, n * kk);
    for (let i = 0; i < v.length; i++) v[i] = 0x3c00 + Math.floor(next() * 0x300) | (next() < 0.5 ? 0x8000 : 0);
  } else if (dt === "f8e4m3") {
    // Gaussian weights with a per-tensor scale, as real FP8 checkpoints have (subnormal codes are rare there;
    // uniformly random codes would make ~60% of 16-byte chunks take the exact-decode path).
    const v = k.u8(ptr, n * kk);
    for (let i = 0; i < v.length; i++) {
      const g = Math.sqrt(-2 * Math.log(next() || 1e-12)) * Math.cos(2 * Math.PI * next());
      v[i] = encodeE4M3(g * (448 / 6));
    }
  } else if (dt === "nvfp4") {
    // Random E2M1 codes, f8 block scales of real magnitudes (a 448-scaled global), one global per row.
    const rb = nvfp4RowBytes(kk), v = k.u8(ptr, n * rb);
    for (let r = 0; r < n; r++) {
      for (let i = 0; i < kk / 2; i++) v[r * rb + i] = Math.floor(next() * 256);
      for (let i = kk / 2; i < rb; i++) v[r * rb + i] = encodeE4M3(100 + 300 * next());
    }
    k.f32(ptr + scalesOffset(n * rb), n).fill(448 * 6);
  } else if (dt === "q4") {
    const nb = Math.ceil(kk / 32), v = k.u8(ptr, n * q4RowBytes(kk)), s = k.u16(ptr + n * q4RowBytes(kk), n * nb);
    for (let i = 0; i < v.length; i++) v[i] = Math.floor(next() * 256);
    s.fill(0x2000); // f16 2^-7
  } else {
    const v = k.u8(ptr, n * kk);
    for (let i = 0; i < v.length; i++) v[i] = Math.floor(next() * 126) | (next() < 0.5 ? 0x80 : 0);
    if (dt === "q8") {
      const s = k.f32(ptr + q8Bytes(n, kk).scalesOffset, n * Math.ceil(kk / 32));
      for (let i = 0; i < s.length; i++) s[i] = 0.01;
    }
  }
  return ptr;
}

/** Nearest e4m3fn code (saturating at ±448). */
function encodeE4M3(x: number): number {
  const s = x < 0 ? 0x80 : 0, a = Math.min(Math.abs(x), 448);
  if (a < 2 ** -6) return s | Math.round(a / 2 ** -9);
  let e = Math.floor(Math.log2(a)), m = Math.round((a / 2 ** e - 1) * 8);
  if (m === 8) [e, m] = [e + 1, 0];
  return s | ((e + 7) << 3) | m;
}

function weightBytes(dt: WasmWeightDType, n: number, kk: number): number {
  if (dt === "nvfp4") return wasmWeightBytes([n, kk], "nvfp4");
  if (dt === "q4") return n * q4RowBytes(kk) + Math.ceil((n * Math.ceil(kk / 32) * 2) / 4) * 4;
  if (dt !== "q8") return n * kk * BYTES[dt];
  const q = q8Bytes(n, kk);
  return q.scalesOffset + q.scales;
}

/** Median and best of repeated runs (the best shows the kernel when the shared machine was quiet). */
function time(run: (i: number) => void, minMs: number, reps: number): [number, number] {
  run(0); // warm-up
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < reps || performance.now() - start < minMs; i++) {
    const t0 = performance.now();
    run(i + 1);
    times.push(performance.now() - t0);
    if (times.length >= 200) break;
  }
  return [median(times), Math.min(...times)];
}

function matmulArgs(x: number, w: number, dt: WasmWeightDType, n: number, kk: number, y: number, m: number) {
  const qs = dt === "q8"
    ? w + q8Bytes(n, kk).scalesOffset
    : dt === "nvfp4"
    ? w + scalesOffset(n * nvfp4RowBytes(kk))
    : dt === "q4"
    ? w + n * q4RowBytes(kk)
    : 0;
  return [x, w, DT[dt], 1, qs, y, m, n, kk];
}

async function benchPrefill(threads: number): Promise<void> {
  using pool = await ThreadPool.create(k, threads);
  const shapes: [number, number, number][] = quick ? [[256, 512, 512]] : [[512, 512, 512], [512, 1024, 1024]];
  const all: WasmWeightDType[] = quick ? ["f32", "f8e4m3"] : ["f32", "bf16", "f8e4m3", "q8", "q4", "nvfp4"];
  const dts = all.filter(wanted);
  for (const [m, n, kk] of shapes) {
    for (const dt of dts) {
      if (dt !== "f32" && m === 512 && n === 512) continue; // dtypes only at the prefill shape
      const x = k.alloc(m * kk * 4), y = k.alloc(m * n * 4), w = fillWeight(k.alloc(weightBytes(dt, n, kk)), dt, n, kk);
      fillWeight(x, "f32", m, kk);
      const args = matmulArgs(x, w, dt, n, kk, y, m);
      const [ms, bestMs] = time(() => pool.parallelFor("matmul", args, n, { align: 8 }), quick ? 200 : 600, 5);
      rows.push({
        kernel: "matmul",
        dtype: dt,
        shape: `${m}×${kk}→${n}`,
        threads,
        ms,
        bestMs,
        gflops: (2 * m * n * kk) / ms / 1e6,
        gbps: 0,
      });
      log(rows[rows.length - 1]);
      k.free(x);
      k.free(y);
      k.free(w);
    }
  }
}

async function benchDecode(threads: number): Promise<void> {
  using pool = await ThreadPool.create(k, threads);
  const shapes: [number, number][] = flags.shapes === undefined
    ? [[1024, 4096], [4096, 1024]] // [K, N]: up/gate-like, down-like
    : flags.shapes.split(",").map((s) => s.split(/[x×]/).map(Number) as [number, number]);
  const dts = (["f32", "bf16", "f8e4m3", "q8", "q4", "nvfp4"] as WasmWeightDType[]).filter(wanted);
  for (const [kk, n] of shapes) {
    for (const dt of dts) {
      for (const m of quick ? [1] : [1, 4]) {
        for (const cold of [false, true]) {
          const wb = weightBytes(dt, n, kk);
          const copies = cold ? Math.ceil((quick ? 256 : 512) * 2 ** 20 / wb) : 1;
          const ws: number[] = [fillWeight(k.alloc(wb), dt, n, kk)];
          for (let c = 1; c < copies; c++) ws.push(k.upload(k.u8(ws[0], wb))); // memcpy, not another fill
          const x = k.alloc(m * kk * 4), y = k.alloc(m * n * 4);
          fillWeight(x, "f32", m, kk);
          const args = ws.map((w) => matmulArgs(x, w, dt, n, kk, y, m));
          const [ms, bestMs] = time(
            (i) => pool.parallelFor("matmul", args[i % copies], n, { align: 8 }),
            300,
            20,
          );
          rows.push({
            kernel: `matvec${cold ? " cold" : " hot"}`,
            dtype: dt,
            shape: `${m}×${kk}→${n}`,
            threads,
            ms,
            bestMs,
            gflops: (2 * m * n * kk) / ms / 1e6,
            gbps: wb / ms / 1e6,
          });
          log(rows[rows.length - 1]);
          for (const w of ws) k.free(w);
          k.free(x);
          k.free(y);
        }
      }
    }
  }
}

/** MLA attention at ms4-mini shapes (H 8, kv_lora 256, rope 64, v 128): decode at long contexts, prefill chunk. */
async function benchAttention(threads: number): Promise<void> {
  using pool = await ThreadPool.create(k, threads);
  const H = 8, dn = 64, dr = 64, dv = 128, kvr = 256, QW = kvr + dr, bs = 64;
  const cases: { name: string; ctx: number; T: number }[] = quick
    ? [{ name: "mla decode", ctx: 4096, T: 1 }]
    : [{ name: "mla decode", ctx: 1024, T: 1 }, { name: "mla decode", ctx: 16384, T: 1 }, {
      name: "mla prefill",
      ctx: 512,
      T: 512,
    }];
  for (const c of cases) {
    const blocks = Math.ceil(c.ctx / bs);
    const cache = k.alloc(blocks * bs * QW * 2), table = k.alloc(blocks * 4);
    k.u16(cache, blocks * bs * QW).fill(0x3c00);
    k.i32(table, blocks).set(Array.from({ length: blocks }, (_, i) => i));
    const wb = H * (dn + dv) * kvr, w = fillWeight(k.alloc(wb), "f8e4m3", H * (dn + dv), kvr);
    const q = k.alloc(c.T * H * (dn + dr) * 4), out = k.alloc(c.T * H * dv * 4);
    fillWeight(q, "f32", c.T * H, dn + dr);
    const seq = k.alloc(c.T * 4), pos = k.alloc(c.T * 4), params = k.alloc(MLA_PARAMS.length * 4);
    k.i32(pos, c.T).set(Array.from({ length: c.T }, (_, i) => c.ctx - c.T + i));
    k.i32(seq, c.T).fill(0); // arena memory is not zeroed
    // Decode splits heads across threads; prefill gives each item 4 tokens × all heads (W and tiles shared).
    const hg = c.T === 1 ? Math.ceil(H / threads) : H, tb = c.T === 1 ? 1 : 4;
    writeParams(k, params, MLA_PARAMS, {
      q,
      wkvb: w,
      wdt: DT.f8e4m3,
      wscale: 0.01,
      cache,
      cdt: DT.bf16,
      blockTables: table,
      maxBlocks: blocks,
      bs,
      tokSeq: seq,
      tokPos: pos,
      out,
      T: c.T,
      H,
      dn,
      dr,
      dv,
      kvr,
      scale: 1 / Math.sqrt(dn + dr),
      hg,
      tb,
    });
    const rowsN = Math.ceil(c.T / tb) * Math.ceil(H / hg);
    const [ms, bestMs] = time(() => pool.parallelFor("mla_attention", [params], rowsN), 300, 5);
    // Flops of the absorbed form: absorb + scores + weighted sum + W_UV, per query token and head.
    let flops = 0;
    for (let t = 0; t < c.T; t++) {
      const L = c.ctx - c.T + t + 1;
      flops += 2 * H * (dn * kvr + L * QW + L * kvr + dv * kvr);
    }
    rows.push({
      kernel: c.name,
      dtype: "f8/bf16",
      shape: `T${c.T} ctx${c.ctx}`,
      threads,
      ms,
      bestMs,
      gflops: flops / ms / 1e6,
      gbps: c.T === 1 ? (c.ctx * QW * 2) / ms / 1e6 : 0,
    });
    log(rows[rows.length - 1]);
    for (const p of [cache, table, w, q, out, seq, pos, params]) k.free(p);
  }
}

for (const t of threadCounts) if (runs("prefill")) await benchPrefill(t);
for (const t of threadCounts) if (runs("attention")) await benchAttention(t);
for (const t of threadCounts) if (runs("decode")) await benchDecode(t);

if (flags.json) {
  console.log(JSON.stringify(rows, null, 2));
} else {
  const pad = (s: string | number, w: number) => String(s).padStart(w);
  console.log(
    `${"kernel".padEnd(12)}${pad("dtype", 7)}${pad("shape", 15)}${pad("thr", 4)}${pad("med ms", 9)}${
      pad("GFLOPS", 8)
    }` +
      `${pad("GB/s", 7)}${pad("best ms", 9)}${pad("GFLOPS", 8)}${pad("GB/s", 7)}`,
  );
  for (const r of rows) {
    const f = (ms: number) =>
      pad(((r.gflops * r.ms) / ms).toFixed(1), 8) + pad(r.gbps ? ((r.gbps * r.ms) / ms).toFixed(1) : "", 7);
    console.log(
      `${r.kernel.padEnd(12)}${pad(r.dtype.replace("e4m3", ""), 7)}${pad(r.shape, 15)}${pad(r.threads, 4)}` +
        `${pad(r.ms.toFixed(3), 9)}${f(r.ms)}${pad(r.bestMs.toFixed(3), 9)}${f(r.bestMs)}`,
    );
  }
}
