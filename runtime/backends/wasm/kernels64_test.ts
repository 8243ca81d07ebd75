// The memory64 build (kernels64.wasm) against the wasm32 build, bit for bit: every scenario below makes the same
// seeded inputs on both modules, runs the same kernels, and compares every output byte. On the 64-bit module the
// arena starts at 4 GiB (`reserveBelow`), so every buffer, params struct and stack-free pointer lies above 4 GiB
// and its i64 address has a non-zero high word. The kernels' correctness against references is kernels_test.ts's
// job (on the wasm32 build); equality here carries it over. Also: the arena above 4 GiB, the params layouts, the
// thread pool on the 64-bit module, and the load options' errors.

import {
  DT,
  MAX_BYTES_64,
  MLA_PARAMS,
  MLA_PREFILL_PARAMS,
  MOE_PARAMS,
  moeRows,
  paramLayout,
  paramOffset,
  paramsBytes,
  WasmKernels,
  writeParams,
} from "./module.ts";
import { segmentItems } from "./vision_ops.ts";
import { ThreadPool } from "./threads.ts";
import { assert } from "../../../tests/assert.ts";
import { mulberry32 } from "../../../tests/fixtures.ts";

const GIB = 2 ** 30;
const BASE = 4 * GIB;
const k32 = await WasmKernels.load({ maxBytes: 512 * 2 ** 20 });
const k64 = await WasmKernels.load({ memory64: true, reserveBelow: BASE, maxBytes: BASE + 512 * 2 ** 20 });

type WDT = Exclude<keyof typeof DT, "nvfp4">; // nvfp4: its own scenario below (its layout differs)
type KernelCall = (...a: number[]) => unknown;

/** One module's side of a scenario: its allocations (all above 4 GiB on the 64-bit module) and kernel calls. */
class Side {
  ptrs: number[] = [];
  constructor(readonly k: WasmKernels, readonly pool?: ThreadPool) {}
  #take(bytes: number): number {
    const p = this.k.alloc(bytes);
    if (this.k.memory64) assert(p >= BASE, `64-bit allocation at ${p}, below 4 GiB`);
    this.ptrs.push(p);
    return p;
  }
  /** Outputs and scratch start as different garbage on the two modules: a byte a kernel fails to write differs. */
  get #garbage(): number {
    return this.k.memory64 ? 0x3f : 0x7f;
  }
  f32(data: ArrayLike<number> | number): number {
    const n = typeof data === "number" ? data : data.length, p = this.#take(n * 4);
    if (typeof data === "number") this.k.u8(p, n * 4).fill(this.#garbage);
    else this.k.f32(p, n).set(data);
    return p;
  }
  i32(data: ArrayLike<number> | number): number {
    const n = typeof data === "number" ? data : data.length, p = this.#take(n * 4);
    if (typeof data === "number") this.k.u8(p, n * 4).fill(this.#garbage);
    else this.k.i32(p, n).set(data);
    return p;
  }
  bytes(data: Uint8Array | Uint16Array | Int8Array): number {
    const p = this.#take(data.byteLength);
    this.k.u8(p, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return p;
  }
  params(layout: readonly string[], values: Record<string, number>): number {
    const p = this.#take(paramsBytes(this.k, layout));
    writeParams(this.k, p, layout, values);
    return p;
  }
  /** Runs a kernel on this thread, or split over the pool when there is one. */
  run(name: string, args: number[], rows: number, opts: { align?: number; chunks?: number } = {}): void {
    if (this.pool) this.pool.parallelFor(name as never, args, rows, opts);
    else (this.k.exports as unknown as Record<string, KernelCall>)[name](...args, 0, rows);
  }
  call(name: string, ...args: number[]): unknown {
    return (this.k.exports as unknown as Record<string, KernelCall>)[name](...args);
  }
  /** A copy of `bytes` at `ptr`. */
  out(ptr: number, bytes: number): Uint8Array {
    return this.k.u8(ptr, bytes).slice();
  }
  free(): void {
    for (const p of this.ptrs) this.k.free(p);
    this.ptrs = [];
  }
}

type Scenario = (s: Side) => Record<string, Uint8Array>;

/** Runs `scenario` on both modules (64-bit: optionally on a pool) and requires identical, non-trivial outputs. */
async function same(what: string, scenario: Scenario, threads64 = 1): Promise<void> {
  const s32 = new Side(k32);
  const pool = threads64 > 1 ? await ThreadPool.create(k64, threads64) : undefined;
  const s64 = new Side(k64, pool);
  try {
    const a = scenario(s32), b = scenario(s64);
    assert(s64.ptrs.length > 0 && s64.ptrs.every((p) => p >= BASE), `${what}: 64-bit buffers above 4 GiB`);
    for (const [name, x] of Object.entries(a)) {
      const y = b[name];
      assert(y !== undefined && y.length === x.length, `${what} ${name}: missing or length differs`);
      assert(x.some((v) => v !== 0), `${what} ${name}: all zero (the scenario checks nothing)`);
      for (let i = 0; i < x.length; i++) {
        if (x[i] !== y[i]) throw new Error(`${what} ${name}: byte ${i} differs: ${x[i]} (wasm32) vs ${y[i]} (wasm64)`);
      }
    }
  } finally {
    s32.free();
    s64.free();
    pool?.dispose();
  }
  assert(k32.allocatedBytes === 0 && k64.allocatedBytes === 0, `${what}: allocations leaked`);
}

function rand(r: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((r() * 2 - 1) || 0.5) * scale;
  return a;
}

/** Kernel arguments of a random weight [N, K] in `dt` (f8: per-tensor scale, or per-row scales when `rowScales`). */
function weight(s: Side, r: () => number, dt: WDT, n: number, kk: number, rowScales = false) {
  if (dt === "f32") return { w: s.f32(rand(r, n * kk)), scale: 1, qs: 0 };
  if (dt === "bf16") {
    const h = new Uint16Array(n * kk);
    for (let i = 0; i < h.length; i++) h[i] = 0x3c00 + Math.floor(r() * 0x300) | (r() < 0.5 ? 0x8000 : 0);
    return { w: s.bytes(h), scale: 1, qs: 0 };
  }
  if (dt === "f8e4m3") {
    const u = new Uint8Array(n * kk);
    for (let i = 0; i < u.length; i++) u[i] = ((v) => (v & 0x7f) === 0x7f ? v ^ 1 : v)(Math.floor(r() * 256));
    return { w: s.bytes(u), scale: 0.0173, qs: rowScales ? s.f32(rand(r, n, 0.05)) : 0 };
  }
  if (dt === "q4") {
    const nb = Math.ceil(kk / 32), codes = new Uint8Array(n * nb * 16);
    for (let i = 0; i < codes.length; i++) codes[i] = Math.floor(r() * 256);
    const qs = Uint16Array.from({ length: n * nb }, () => 0x2000 + Math.floor(r() * 0x400) | (r() < 0.5 ? 0x8000 : 0));
    return { w: s.bytes(codes), scale: 1, qs: s.bytes(qs) };
  }
  const q = new Int8Array(n * kk);
  for (let i = 0; i < q.length; i++) q[i] = Math.floor(r() * 255) - 127;
  const qs = Float32Array.from({ length: n * Math.ceil(kk / 32) }, () => 0.001 + r() * 0.01);
  return { w: s.bytes(q), scale: 1, qs: s.f32(qs) };
}

// ------------------------------------------------------------------------------------------- matmul

const DTYPES: WDT[] = ["f32", "bf16", "f8e4m3", "q8", "q4"];

function matmulScenario(shapes: [number, number, number][], dts: WDT[], int8: number): Scenario {
  return (s) => {
    const r = mulberry32(7 + int8), outs: Record<string, Uint8Array> = {};
    s.call("q8_prefill_int8", int8);
    s.call("q4_int8", int8);
    try {
      for (const dt of dts) {
        for (const rowScales of dt === "f8e4m3" ? [false, true] : [false]) {
          for (const [M, N, K] of shapes) {
            const W = weight(s, r, dt, N, K, rowScales), x = s.f32(rand(r, M * K)), y = s.f32(M * N);
            s.run("matmul", [x, W.w, DT[dt], W.scale, W.qs, y, M, N, K], N, { align: 8 });
            outs[`${dt}${rowScales ? " row scales" : ""} ${M}×${K}→${N}`] = s.out(y, M * N * 4);
          }
        }
      }
    } finally {
      s.call("q8_prefill_int8", 1);
      s.call("q4_int8", 1);
    }
    return outs;
  };
}

// Decode (M ≤ 8: every MR/NR case, K tails) and prefill (M > 8: register-tile tails, M blocks) shapes.
const DECODE: [number, number, number][] = [[1, 33, 1100], [2, 13, 257], [3, 9, 64], [5, 7, 17], [8, 33, 96]];
const PREFILL: [number, number, number][] = [[9, 13, 65], [17, 33, 1100], [70, 16, 300]];

Deno.test("memory64 ≡ wasm32: matmul decode shapes, every dtype (f8 with per-tensor and per-row scales)", async () => {
  await same("matmul decode", matmulScenario(DECODE, DTYPES, 1));
});

Deno.test("memory64 ≡ wasm32: matmul prefill shapes, every dtype; q8 on int8 products and on f32 panels", async () => {
  await same("matmul prefill", matmulScenario(PREFILL, DTYPES, 1));
  await same("matmul prefill q8 f32 panels", matmulScenario(PREFILL, ["q8"], 0));
  await same("matmul q4 f32 activations", matmulScenario([...DECODE, ...PREFILL], ["q4"], 0));
  await same("matmul K > 16384", matmulScenario([[1, 9, 16500]], ["f32", "q8", "q4"], 1));
});

Deno.test("memory64 ≡ wasm32: dequant_rows, quantize_q8, bf16 conversions, copy_rows", async () => {
  await same("conversions", (s) => {
    const r = mulberry32(3), outs: Record<string, Uint8Array> = {}, N = 11, K = 70;
    for (const dt of DTYPES) {
      const W = weight(s, r, dt, N, K), ids = s.i32([3, 0, 10, 3]), out = s.f32(4 * K);
      s.run("dequant_rows", [W.w, DT[dt], W.scale, W.qs, ids, out, K], 4);
      outs[`dequant ${dt}`] = s.out(out, 4 * K * 4);
    }
    const src = s.f32(rand(r, N * K)), q = s.bytes(new Uint8Array(N * K)), qs = s.f32(N * 3);
    s.run("quantize_q8", [src, q, qs, K], N);
    outs.quantize = s.out(q, N * K);
    outs.quantizeScales = s.out(qs, N * 3 * 4);
    const h = s.f32((N * K) / 2), back = s.f32(N * K);
    s.run("f32_to_bf16_n", [src, h], N * K);
    s.run("bf16_to_f32_n", [h, back], N * K);
    outs.bf16 = s.out(back, N * K * 4);
    const dst = s.f32(125);
    s.run("copy_rows", [src, K * 4, s.i32([9, 2, 2, 0, 10]), dst, 100, 100], 5);
    outs.copy = s.out(dst, 500);
    return outs;
  });
});

Deno.test("memory64 ≡ wasm32: rms_norm, softmax, add, mul, scale_add, swiglu, gelu, rope", async () => {
  await same("rows", (s) => {
    const r = mulberry32(5), outs: Record<string, Uint8Array> = {}, R = 5, D = 37, n = R * D;
    const x = s.f32(rand(r, n, 3)), w = s.f32(rand(r, D)), y = s.f32(n);
    s.run("rms_norm", [x, D, w, y, D, D, 1e-6], R);
    outs.rms = s.out(y, n * 4);
    s.run("softmax", [x, D, y, D, D, 0.7], R);
    outs.softmax = s.out(y, n * 4);
    const a = s.f32(rand(r, n)), b = s.f32(rand(r, n));
    for (const [name, args] of [["add", [a, b, y]], ["mul", [a, b, y]], ["scale_add", [a, 1.3, b, y]]] as const) {
      s.run(name, [...args], n);
      outs[name] = s.out(y, n * 4);
    }
    s.run("swiglu", [x, 2 * 18, x + 18 * 4, 2 * 18, y, 18, 18], 2);
    outs.swiglu = s.out(y, 36 * 4);
    s.run("gelu", [x, y], n);
    outs.gelu = s.out(y, n * 4);
    // rope: 3 tokens × 2 heads of 24 with a 16-wide rope part at offset 8; llama-4 scale on; 2-D split.
    const T = 3, ldx = 2 * 24, theta = s.f32(Array.from({ length: 8 }, (_, i) => 10000 ** (-i / 8)));
    const xr = s.f32(rand(r, T * ldx)), pos = s.i32([0, 5, 70000, 9, 1234567, 3]);
    s.run("rope", [xr, ldx, 2, 24, 8, 16, theta, pos, 2, 5, 1, 0.1, 4], T);
    outs.rope = s.out(xr, T * ldx * 4);
    return outs;
  });
});

// ------------------------------------------------------------------------------------------- MLA

interface MlaShape {
  H: number;
  dn: number;
  dr: number;
  dv: number;
  kvr: number;
  bs: number;
  lens: number[];
  queries: number;
}

/** Paged cache (scattered blocks) written by mla_cache_write, then mla_attention (absorbed) in the given mode. */
function mlaScenario(c: MlaShape, dt: WDT, cdt: "f32" | "bf16", hg: number, tb: number, splits: number): Scenario {
  return (s) => {
    const r = mulberry32(c.H * 31 + c.kvr + DT[dt]);
    const { H, dn, dr, dv, kvr, bs } = c, QW = kvr + dr, S = c.lens.length;
    const maxBlocks = Math.max(...c.lens.map((l) => Math.ceil(l / bs)));
    const nBlocks = S * maxBlocks + 3, perm = Array.from({ length: nBlocks }, (_, i) => nBlocks - 1 - i);
    const tp = s.i32(perm.slice(0, S * maxBlocks));
    const cache = s.bytes(new Uint8Array(nBlocks * bs * QW * (cdt === "bf16" ? 2 : 4)));
    for (let q = 0; q < S; q++) {
      const L = c.lens[q];
      const seq = s.i32(new Array(L).fill(q)), pos = s.i32(Array.from({ length: L }, (_, i) => i));
      s.run("mla_cache_write", [s.f32(rand(r, L * QW)), QW, cache, DT[cdt], tp, maxBlocks, bs, seq, pos, QW], L);
    }
    const tokSeq: number[] = [], tokPos: number[] = [];
    for (let q = 0; q < S; q++) {
      for (let j = c.queries; j >= 1; j--) tokSeq.push(q), tokPos.push(c.lens[q] - j);
    }
    const T = tokSeq.length, W = weight(s, r, dt, H * (dn + dv), kvr), out = s.f32(T * H * dv);
    const params = s.params(MLA_PARAMS, {
      q: s.f32(rand(r, T * H * (dn + dr))),
      wkvb: W.w,
      wdt: DT[dt],
      wscale: W.scale,
      wqs: W.qs,
      cache,
      cdt: DT[cdt],
      blockTables: tp,
      maxBlocks,
      bs,
      tokSeq: s.i32(tokSeq),
      tokPos: s.i32(tokPos),
      out,
      T,
      H,
      dn,
      dr,
      dv,
      kvr,
      scale: 1 / Math.sqrt(dn + dr),
      hg,
      tb,
      splits,
      part: splits > 1 ? s.f32(T * splits * H * (kvr + 2)) : 0,
    });
    if (splits > 1) {
      s.run("mla_attention", [params], T * splits, { chunks: 3 * T * splits });
      s.run("mla_merge", [params], T * H);
    } else s.run("mla_attention", [params], Math.ceil(T / tb) * Math.ceil(H / hg), { chunks: 8 });
    return { out: s.out(out, T * H * dv * 4), cache: s.out(cache, nBlocks * bs * QW * (cdt === "bf16" ? 2 : 4)) };
  };
}

const ODD: MlaShape = { H: 3, dn: 6, dr: 6, dv: 10, kvr: 20, bs: 3, lens: [2, 7, 70], queries: 2 };
const MS4: MlaShape = { H: 2, dn: 64, dr: 64, dv: 128, kvr: 256, bs: 16, lens: [150], queries: 3 };

Deno.test("memory64 ≡ wasm32: mla_cache_write + mla_attention absorbed decode, prefill and split decode", async () => {
  await same("mla decode q8 bf16", mlaScenario(ODD, "q8", "bf16", 1, 1, 0));
  await same("mla prefill f8 f32", mlaScenario(ODD, "f8e4m3", "f32", 3, 2, 0));
  await same("mla ms4 prefill bf16", mlaScenario(MS4, "bf16", "bf16", 2, 3, 0));
  await same("mla split decode q8", mlaScenario({ ...MS4, queries: 1 }, "q8", "bf16", 2, 1, 3));
  await same("mla split decode f32 odd", mlaScenario({ ...ODD, queries: 1 }, "f32", "f32", 3, 1, 4));
});

/** The naive prefill: per context tile mla_gather, the W_kvb expansion (matmul), mla_prefill, as ops.ts runs it. */
function mlaPrefillScenario(cdt: "f32" | "bf16", dt: WDT): Scenario {
  return (s) => {
    const r = mulberry32(99 + DT[dt]);
    const H = 2, dn = 16, dr = 8, dv = 24, kvr = 32, bs = 16, QW = kvr + dr, N = H * (dn + dv), CT = 48;
    const p0 = 20, n = 70, ctx = p0 + n, blocks = Math.ceil(ctx / bs), tb = 4;
    const table = s.i32(Array.from({ length: blocks }, (_, i) => blocks - 1 - i));
    const cache = s.bytes(new Uint8Array(blocks * bs * QW * (cdt === "bf16" ? 2 : 4)));
    const seq = s.i32(new Array(ctx).fill(0)), pos = s.i32(Array.from({ length: ctx }, (_, i) => i));
    s.run("mla_cache_write", [s.f32(rand(r, ctx * QW)), QW, cache, DT[cdt], table, blocks, bs, seq, pos, QW], ctx);
    const W = weight(s, r, dt, N, kvr), q = s.f32(rand(r, n * H * (dn + dr))), out = s.f32(n * H * dv);
    const ckv = s.f32(CT * kvr), kr = s.f32(CT * dr), kv = s.f32(CT * N + 8), state = s.f32(n * H * 2);
    for (let c0 = 0; c0 < ctx; c0 += CT) {
      const cl = Math.min(CT, ctx - c0);
      const params = s.params(MLA_PREFILL_PARAMS, {
        q,
        cache,
        cdt: DT[cdt],
        table,
        bs,
        ckv,
        kr,
        kv,
        state,
        out,
        n,
        p0,
        c0,
        cl,
        last: c0 + cl >= ctx ? 1 : 0,
        H,
        dn,
        dr,
        dv,
        kvr,
        scale: 1 / Math.sqrt(dn + dr),
        tb,
      });
      s.run("mla_gather", [params], cl);
      s.run("matmul", [ckv, W.w, DT[dt], W.scale, W.qs, kv, cl, N, kvr], N, { align: 8 });
      s.run("mla_prefill", [params], Math.ceil(n / tb) * H, { chunks: 5 });
    }
    return { out: s.out(out, n * H * dv * 4) };
  };
}

Deno.test("memory64 ≡ wasm32: naive MLA prefill (mla_gather, W_kvb expansion, mla_prefill over context tiles)", async () => {
  await same("mla naive prefill bf16 q8", mlaPrefillScenario("bf16", "q8"));
  await same("mla naive prefill f32 f32", mlaPrefillScenario("f32", "f32"));
});

// ------------------------------------------------------------------------------------------- MoE

/** moe_route, moe_plan, then gate_up / down / combine (fused gate|up, an addend) over packed experts. */
function moeScenario(dt: WDT, T: number, E: number, kk: number, D: number, F: number): Scenario {
  return (s) => {
    const r = mulberry32(T * 7 + E + DT[dt]);
    const elem = { f32: 4, bf16: 2, f8e4m3: 1, q8: 1, q4: 0.5 }[dt];
    // Experts packed contiguously: gate|up [E, 2F, D], down [E, D, F]; the kernel takes expert 0 plus strides.
    const gu = weight(s, r, dt, E * 2 * F, D), dw = weight(s, r, dt, E * D, F);
    const guRows = Math.ceil(D / 32), dRows = Math.ceil(F / 32);
    const perExpert = dt === "f8e4m3"; // f8: per-expert scales (fs*) rather than row scales
    const logits = s.f32(rand(r, T * E, 3)), idx = s.i32(T * kk), wts = s.f32(T * kk);
    s.run("moe_route", [logits, E, kk, 1, 1, idx, wts], T);
    const offsets = s.i32(E + 1), order = s.i32(T * kk), inv = s.i32(T * kk), active = s.i32(E);
    const nActive = s.call("moe_plan", idx, T, kk, E, offsets, order, inv, active) as number;
    const out = s.f32(T * D), fs = s.f32(rand(r, E, 0.1));
    const values = {
      x: s.f32(rand(r, T * D)),
      offsets,
      order,
      inv,
      active,
      nActive,
      wg: gu.w,
      wu: gu.w + F * D * elem,
      wd: dw.w,
      wdt: DT[dt],
      sg: 2 * F * D * elem,
      su: 2 * F * D * elem,
      sd: D * F * elem,
      fsg: perExpert ? fs : 0,
      fsu: perExpert ? fs : 0,
      fsd: perExpert ? fs : 0,
      qg: gu.qs,
      qu: gu.qs ? gu.qs + 4 * F * guRows : 0,
      qd: dw.qs,
      qsg: 2 * F * guRows,
      qsu: 2 * F * guRows,
      qsd: D * dRows,
      act: s.f32(T * kk * F),
      up: s.f32(T * kk * F),
      ys: s.f32(T * kk * D),
      w: wts,
      addend: s.f32(rand(r, T * D)),
      out,
      T,
      D,
      F,
      k: kk,
      chunk: 8,
    };
    const params = s.params(MOE_PARAMS, values);
    const rows = moeRows({ nActive, F, D, T, chunk: 8 });
    s.run("moe_gate_up", [params], rows.gateUp);
    // As ops.ts does: a different chunk for the down phase, set in place.
    const view = new DataView(s.k.memory.buffer, params + paramOffset(s.k, MOE_PARAMS, "chunk"), 4);
    view.setInt32(0, 16, true);
    s.run("moe_down", [params], moeRows({ nActive, F, D, T, chunk: 16 }).down);
    s.run("moe_combine", [params], rows.combine);
    return {
      route: s.out(idx, T * kk * 4),
      weights: s.out(wts, T * kk * 4),
      plan: new Uint8Array([...s.out(offsets, (E + 1) * 4), ...s.out(order, T * kk * 4), ...s.out(inv, T * kk * 4)]),
      active: new Uint8Array([nActive, ...s.out(active, nActive * 4)]),
      out: s.out(out, T * D * 4),
    };
  };
}

Deno.test("memory64 ≡ wasm32: moe_route, moe_plan, moe_gate_up / down / combine, every dtype", async () => {
  for (const dt of DTYPES) await same(`moe ${dt} decode`, moeScenario(dt, 3, 8, 2, 40, 24));
  await same("moe q8 prefill", moeScenario("q8", 40, 4, 2, 33, 24));
  await same("moe bf16 prefill", moeScenario("bf16", 40, 4, 2, 33, 24));
});

// ------------------------------------------------------------------------------------------- sampling, vision

Deno.test("memory64 ≡ wasm32: argmax and sample (temperatures, top-k, top-p, masks)", async () => {
  await same("sample", (s) => {
    const r = mulberry32(17), V = 1000, W = Math.ceil(V / 32);
    const settings = [[0, 0, 1], [0.7, 0, 1], [1.5, 5, 1], [1, 0, 0.9], [0.7, 50, 0.5], [2, V, 0.3]];
    const T = settings.length, logits = s.f32(rand(r, T * V, 5));
    const masks = Uint32Array.from({ length: 2 * W }, () => Math.floor(r() * 2 ** 32));
    const out = s.i32(T), am = s.i32(T);
    s.run("argmax", [logits, V, am], T);
    s.run("sample", [
      logits,
      V,
      s.f32(settings.map((x) => x[0])),
      s.i32(settings.map((x) => x[1])),
      s.f32(settings.map((x) => x[2])),
      s.f32(Array.from({ length: T }, () => r())),
      s.i32(Array.from({ length: T }, (_, t) => (t % 3) - 1)),
      s.bytes(new Uint8Array(masks.buffer)),
      out,
      s.f32(2 * V * T),
    ], T);
    return { argmax: s.out(am, T * 4), sample: s.out(out, T * 4) };
  });
});

Deno.test("memory64 ≡ wasm32: seg_attention (segments, query blocks, key tiles) and patch_merge", async () => {
  await same("vision", (s) => {
    const r = mulberry32(23), H = 3, d = 20, dv = 12, segs = [5, 70, 33], N = segs.reduce((a, b) => a + b);
    const segment = new Int32Array(segs.flatMap((n, i) => new Array(n).fill(i)));
    const items = new Int32Array(6 * N * H), { count, cost } = segmentItems(segment, H, items);
    const out = s.f32(N * H * dv);
    const args = [s.f32(rand(r, N * H * d)), s.f32(rand(r, N * H * d)), s.f32(rand(r, N * H * dv)), out, H, d, dv];
    s.run("seg_attention", [...args, 0.3, s.i32(items), count], cost, { chunks: 7 });
    const P = 36, C = 10, M = 9, K = 4, x = s.f32(rand(r, P * C)), merged = s.f32(M * C * K);
    const index = s.i32(Array.from({ length: M * K }, (_, i) => (i * 7) % P));
    s.run("patch_merge", [x, C, index, K, merged], M);
    return { seg: s.out(out, N * H * dv * 4), patch: s.out(merged, M * C * K * 4) };
  });
});

// ------------------------------------------------------------------------------------------- pool

Deno.test("memory64: a 2-thread pool runs matmul, MLA (split decode) and MoE above 4 GiB ≡ one wasm32 thread", async () => {
  await same("pool matmul", matmulScenario([...DECODE.slice(0, 2), PREFILL[1]], ["q8", "bf16"], 1), 2);
  await same("pool mla split", mlaScenario({ ...MS4, queries: 1 }, "q8", "bf16", 2, 1, 3), 2);
  await same("pool mla prefill", mlaPrefillScenario("bf16", "f8e4m3"), 2);
  await same("pool moe", moeScenario("q8", 12, 8, 4, 40, 24), 2);
});

// ------------------------------------------------------------------------------------------- arena, layout, errors

Deno.test("memory64 arena: allocations above 4 GiB, views, reuse, coalescing, growth past the first pages", () => {
  const k = k64, start = k.byteLength;
  assert(k.arenaBase === BASE && k.memory64 && k.pointerBytes === 8, "arena base and build");
  const a = k.alloc(100), b = k.alloc(64 * 2 ** 20), c = k.alloc(1);
  assert(a === BASE && b === BASE + 128 && c === BASE + 128 + 64 * 2 ** 20, `placement ${a} ${b} ${c}`);
  assert(k.byteLength > start && k.byteLength >= c + 64, "the memory grew to cover the allocations");
  k.f32(b + 4, 3).set([1.5, -2, 3]);
  assert(k.u8(b + 8, 4).join() === "0,0,0,192" && k.i32(b + 8, 1)[0] === -1073741824, "views agree above 4 GiB");
  k.u16(c, 2).set([0xbeef, 1]);
  assert(k.i8(c, 1)[0] === -17, "int8 view");
  assert(k.allocatedBytes === 128 + 64 * 2 ** 20 + 64, `allocatedBytes ${k.allocatedBytes}`);
  k.free(a);
  k.free(b);
  assert(k.alloc(64 * 2 ** 20 + 128) === BASE, "freed neighbours coalesce and are reused");
  k.free(BASE);
  k.free(c);
  assert(k.allocatedBytes === 0 && k.alloc(64) === BASE, "everything back, the bump pointer at the base");
  k.free(BASE);
  let threw = false;
  try {
    k.alloc(600 * 2 ** 20); // past maxBytes
  } catch (e) {
    threw = e instanceof RangeError && /exhausted/.test(e.message);
  }
  assert(threw, "allocations past maxBytes throw");
});

/** Field names with their TS-layout suffix (`:p` pointer, `:f` float) of `typedef struct { … } name;` in a C file. */
async function cStruct(file: string, name: string): Promise<string[]> {
  const src = await Deno.readTextFile(new URL(`../../../kernels/wasm/${file}`, import.meta.url));
  const body = src.match(new RegExp(`typedef struct \\{([^}]*)\\} ${name};`))?.[1];
  assert(body !== undefined, `${name} in ${file}`);
  const fields: string[] = [];
  for (const decl of body.replace(/\/\/[^\n]*/g, "").split(";").map((d) => d.trim()).filter(Boolean)) {
    const [first, ...rest] = decl.split(",");
    const m = first.match(/^(.*?)([*\s]*\w+)$/)!, base = m[1];
    for (const d of [m[2], ...rest]) {
      const id = d.match(/\w+/)![0];
      // paramLayout knows 4-byte scalars and pointers only: a size_t, int64_t or double field needs it extended.
      assert(d.includes("*") || /^(int32_t|uint32_t|float)$/.test(base.trim()), `${name}.${id}: type ${base}`);
      fields.push(d.includes("*") ? `${id}:p` : /\bfloat\b/.test(base) ? `${id}:f` : id);
    }
  }
  return fields;
}

Deno.test("params layouts: the TS field lists match the C structs (names, order, pointers, floats)", async () => {
  for (
    const [file, name, layout] of [
      ["attention.c", "MlaParams", MLA_PARAMS],
      ["attention_prefill.c", "MlaPrefillParams", MLA_PREFILL_PARAMS],
      ["moe.c", "MoeParams", MOE_PARAMS],
    ] as const
  ) {
    const c = await cStruct(file, name);
    assert(c.join() === layout.join(), `${name}: C ${c.join()} vs TS ${layout.join()}`);
  }
});

Deno.test("params layouts: 4-byte slots in wasm32, 8-byte aligned pointers in wasm64; writeParams above 4 GiB", () => {
  for (const layout of [MLA_PARAMS, MLA_PREFILL_PARAMS, MOE_PARAMS]) {
    const l32 = paramLayout(layout, 4);
    assert(l32.bytes === 4 * layout.length && l32.offsets.every((o, i) => o === 4 * i), "wasm32: one slot a field");
    assert(paramsBytes(k32, layout) === l32.bytes, "paramsBytes of the wasm32 module");
  }
  // C's natural layout of MlaParams on wasm64 (attention.c): q, wkvb 0, 8; wdt, wscale 16, 20; wqs 24; cache 32;
  // cdt 40, (pad); blockTables 48; maxBlocks, bs 56, 60; tokSeq, tokPos, out 64, 72, 80; T … kvr 88–108; scale,
  // hg, tb, splits 112–124; part 128; 136 bytes.
  const mla = paramLayout(MLA_PARAMS, 8);
  const want = [0, 8, 16, 20, 24, 32, 40, 48, 56, 60, 64, 72, 80, 88, 92, 96, 100, 104, 108, 112, 116, 120, 124, 128];
  assert(mla.offsets.join() === want.join() && mla.bytes === 136, `MlaParams wasm64: ${mla.offsets} ${mla.bytes}`);
  // MoeParams: 4 bytes of padding after qsd (148) before act; chunk at 216, 4 more before qx (224), qact at 232.
  assert(paramLayout(MOE_PARAMS, 8).bytes === 240, `MoeParams wasm64: ${paramLayout(MOE_PARAMS, 8).bytes}`);
  assert(paramOffset(k64, MOE_PARAMS, "chunk") === 216 && paramOffset(k32, MOE_PARAMS, "chunk") === 128, "chunk");
  assert(paramOffset(k64, MOE_PARAMS, "act") === 152, "act after the padding");
  const p = k64.alloc(paramsBytes(k64, MLA_PARAMS)), far = 3 * GIB + BASE + 12345 * 64;
  try {
    writeParams(k64, p, MLA_PARAMS, { q: far, wdt: 3, wscale: 0.5, part: 2 ** 33, splits: -2 });
    const v = new DataView(k64.memory.buffer, p, 136);
    assert(v.getBigUint64(0, true) === BigInt(far) && v.getBigUint64(128, true) === 2n ** 33n, "pointers as u64");
    assert(v.getInt32(16, true) === 3 && v.getFloat32(20, true) === 0.5 && v.getInt32(124, true) === -2, "fields");
    let threw = false;
    try {
      writeParams(k64, p, MLA_PARAMS, { q: 1.5 });
    } catch {
      threw = true;
    }
    assert(threw, "a non-integer pointer is refused");
  } finally {
    k64.free(p);
  }
});

Deno.test("WasmKernels.load: maxBytes above 16 GiB throws naming the limit; build mismatch; reserveBelow range", async () => {
  const fails = async (opts: Parameters<typeof WasmKernels.load>[0], re: RegExp) => {
    try {
      await WasmKernels.load(opts);
    } catch (e) {
      assert(re.test((e as Error).message), `message: ${(e as Error).message}`);
      return;
    }
    throw new Error(`load(${JSON.stringify(opts)}) did not throw`);
  };
  await fails({ memory64: true, maxBytes: MAX_BYTES_64 + 65536 }, /16 GiB/);
  await fails({ memory64: true, maxBytes: 64 * 2 ** 20, reserveBelow: 64 * 2 ** 20 }, /reserveBelow/);
  const bytes32 = await Deno.readFile(new URL("../../../kernels/wasm/kernels.wasm", import.meta.url));
  await fails({ memory64: true, wasm: bytes32 }, /memory64/);
  const k = await WasmKernels.load({ memory64: true, maxBytes: MAX_BYTES_64 });
  assert(k.maxBytes === 16 * GIB && k.memory64, "16 GiB is allowed");
  assert((await WasmKernels.load({ maxBytes: 8 * GIB })).maxBytes === 4 * GIB, "wasm32 clamps to 4 GiB");
});

// ------------------------------------------------------------------------------------------- NVFP4

/**
 * NVFP4 rows as the backend lays them out (codes ‖ f8 block scales per row, then per-row globals): matmul at decode
 * (int8 products) and prefill sizes (`int8`: `nvfp4_prefill_int8`'s mode), with the pool; and rows decoded to f32.
 */
function nvfp4Scenario(M: number, N: number, K: number, int8 = -1): Scenario {
  return (s) => {
    const r = mulberry32(M * 1000 + N + K), rb = K / 2 + K / 16, body = Math.ceil((N * rb) / 4) * 4;
    const bytes = new Uint8Array(body + 4 * N);
    for (let row = 0; row < N; row++) {
      for (let i = 0; i < K / 2; i++) bytes[row * rb + i] = Math.floor(r() * 256);
      for (let i = K / 2; i < rb; i++) bytes[row * rb + i] = 0x30 + Math.floor(r() * 0x40); // f8 0.125 … 60
    }
    new Float32Array(bytes.buffer, body, N).set(rand(r, N).map((g) => 100 + 300 * Math.abs(g)));
    const w = s.bytes(bytes), qs = w + body, x = s.f32(rand(r, M * K)), y = s.f32(M * N), rows = s.f32(N * K);
    s.call("nvfp4_prefill_int8", int8);
    s.run("matmul", [x, w, DT.nvfp4, 1, qs, y, M, N, K], N, { align: 8 });
    s.call("nvfp4_prefill_int8", -1);
    s.run("dequant_rows", [w, DT.nvfp4, 1, qs, 0, rows, K], N);
    return { y: s.out(y, M * N * 4), rows: s.out(rows, N * K * 4) };
  };
}

Deno.test("memory64 ≡ wasm32: NVFP4 matmul (decode on int8 products, prefill) and row decoding", async () => {
  await same("nvfp4 decode", nvfp4Scenario(3, 37, 272), 2);
  await same("nvfp4 prefill, f32 panels", nvfp4Scenario(21, 40, 1040, 0), 2);
  await same("nvfp4 prefill, int8 products", nvfp4Scenario(21, 40, 1040, 1), 2);
});
