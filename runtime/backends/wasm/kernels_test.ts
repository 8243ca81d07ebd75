// Every WASM kernel against a naive TypeScript reference (f64 unless the kernel's semantics are f32 by definition),
// on seeded random data at odd shapes, single- and multi-threaded (multi-threaded results must be bit-identical:
// each output element is computed by exactly one thread with the same code).
//
// Error measure: normalised max error = max|y − ref| / max|ref|. Bounds (documented per dtype):
//   f32 / bf16 / f8e4m3 weights: 3e-6 of max Σ|x·w| (weights are decoded exactly; only f32 accumulation order and
//     FMA differ)
//   q8 decode (M ≤ 8): bit-level emulation of the int8 path within 2e-6, and against the exact f64 product the
//     activation-quantisation bound |Δy| ≤ Σ_blocks (max|x_b| / 254) · Σ_{k∈b} |w_k| (half a step per element)
//   q8 prefill (M > 8): on hosts whose relaxed dot multiplies u8 exactly (VNNI) the decode path's int8 products
//     (same emulation and bound); elsewhere, or with q8_prefill_int8(0), weights dequantised exactly, f32
//     activations → 3e-6
//   q4 (every M): with int8 activations (q4_int8(1), the default, every host) the same emulation and bound as q8; with
//     f32 activations (q4_int8(0)) weights dequantised exactly → 3e-6
//   elementwise / norms / rope / softmax: 2e-6; gelu (erfc approximation): 1e-6 absolute per |x|
//   attention, MoE: 2e-5 (long f32 reductions, online softmax)

import { DT, MLA_PARAMS, MOE_PARAMS, moeRows, q8Bytes, warmup, WasmKernels, writeParams } from "./module.ts";
import { ThreadPool } from "./threads.ts";
import { transposeQ4Groups } from "./layout.ts";
import { assert } from "../../../tests/assert.ts";
import { mulberry32 } from "../../../tests/fixtures.ts";
import { f32ToF16, quantizeQ4 } from "../../../weights/codecs.ts";

const k = await WasmKernels.load();
const ex = k.exports;

// ------------------------------------------------------------------------------------------- helpers

/** Uniform in ±scale, never exactly zero. */
function randArray(r: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((r() * 2 - 1) || 0.5) * scale;
  return a;
}

function normErr(y: ArrayLike<number>, ref: ArrayLike<number>): number {
  let e = 0, m = 0;
  for (let i = 0; i < ref.length; i++) {
    e = Math.max(e, Math.abs(y[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return m === 0 ? e : e / m;
}

function expectClose(y: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string): void {
  assert(y.length === ref.length, `${what}: length ${y.length} vs ${ref.length}`);
  for (let i = 0; i < y.length; i++) assert(Number.isFinite(y[i]), `${what}: non-finite at ${i}`);
  const e = normErr(y, ref);
  assert(e <= tol, `${what}: normalised error ${e.toExponential(3)} > ${tol}`);
}

function expectEqual(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}: differs at ${i}: ${a[i]} vs ${b[i]}`);
  }
}

const f32buf = new Float32Array(1), u32buf = new Uint32Array(f32buf.buffer);
const fr = Math.fround;

function f32ToBf16(f: number): number {
  f32buf[0] = f;
  const u = u32buf[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
function bf16ToF32(h: number): number {
  u32buf[0] = h << 16;
  return f32buf[0];
}
/** e4m3fn decoded from the definition (independent of the kernel's bit trick). */
function f8ToF32(b: number): number {
  const s = b & 0x80 ? -1 : 1, e = (b >> 3) & 15, m = b & 7;
  return e === 0 ? s * (m / 8) * 2 ** -6 : s * (1 + m / 8) * 2 ** (e - 7);
}
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Allocations of one test, freed together. */
class Bufs {
  ptrs: number[] = [];
  f32(data: ArrayLike<number> | number): number {
    const n = typeof data === "number" ? data : data.length;
    const p = k.alloc(n * 4);
    this.ptrs.push(p);
    if (typeof data !== "number") k.f32(p, n).set(data);
    return p;
  }
  i32(data: ArrayLike<number> | number): number {
    const n = typeof data === "number" ? data : data.length;
    const p = k.alloc(n * 4);
    this.ptrs.push(p);
    if (typeof data !== "number") k.i32(p, n).set(data);
    return p;
  }
  bytes(data: Uint8Array | Uint16Array | Int8Array): number {
    const p = k.upload(data);
    this.ptrs.push(p);
    return p;
  }
  free(): void {
    for (const p of this.ptrs) k.free(p);
    this.ptrs = [];
  }
}

type WDT = Exclude<keyof typeof DT, "nvfp4">; // nvfp4 (its own layout): tests/backend_ops_test.ts, kernels64_test

/** A random weight matrix [N, K] in `dt`, its decoded f64 values and kernel arguments. */
interface Weight {
  dt: WDT;
  dec: Float64Array;
  w: number;
  scale: number;
  qs: number;
  q?: Int8Array;
  qsv?: Float32Array;
}

function makeWeight(b: Bufs, r: () => number, dt: WDT, n: number, kk: number): Weight {
  const dec = new Float64Array(n * kk);
  if (dt === "f32") {
    const a = randArray(r, n * kk);
    dec.set(a);
    return { dt, dec, w: b.f32(a), scale: 1, qs: 0 };
  }
  if (dt === "bf16") {
    const h = new Uint16Array(n * kk);
    for (let i = 0; i < h.length; i++) {
      h[i] = f32ToBf16((r() * 2 - 1) || 0.25);
      dec[i] = bf16ToF32(h[i]);
    }
    return { dt, dec, w: b.bytes(h), scale: 1, qs: 0 };
  }
  if (dt === "f8e4m3") {
    const u = new Uint8Array(n * kk), scale = fr(0.0173);
    for (let i = 0; i < u.length; i++) {
      let v = Math.floor(r() * 256);
      if ((v & 0x7f) === 0x7f) v ^= 1; // NaN codes never occur in weights
      u[i] = v;
      dec[i] = f8ToF32(v) * scale;
    }
    return { dt, dec, w: b.bytes(u), scale, qs: 0 };
  }
  const nb = Math.ceil(kk / 32), q = new Int8Array(n * kk), qsv = new Float32Array(n * nb);
  for (let i = 0; i < q.length; i++) q[i] = Math.floor(r() * 255) - 127;
  for (let i = 0; i < qsv.length; i++) qsv[i] = 0.001 + r() * 0.01;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < kk; j++) dec[i * kk + j] = q[i * kk + j] * qsv[i * nb + Math.floor(j / 32)];
  }
  return { dt, dec, w: b.bytes(q), scale: 1, qs: b.f32(qsv), q, qsv };
}

function refMatmul(x: ArrayLike<number>, w: Float64Array, m: number, n: number, kk: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let c = 0; c < kk; c++) s += x[i * kk + c] * w[j * kk + c];
      y[i * n + j] = s;
    }
  }
  return y;
}

/** The kernel's activation quantisation, emulated in f32 steps. */
function quantAct(x: ArrayLike<number>, off: number, kk: number): { q: Int32Array; s: Float32Array } {
  const nb = Math.ceil(kk / 32), q = new Int32Array(kk), s = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let c = b * 32; c < Math.min(kk, b * 32 + 32); c++) amax = Math.max(amax, Math.abs(x[off + c]));
    const id = amax > 0 ? fr(127 / amax) : 0;
    s[b] = fr(amax / 127);
    for (let c = b * 32; c < Math.min(kk, b * 32 + 32); c++) {
      q[c] = Math.max(-127, Math.min(127, roundEven(fr(x[off + c] * id))));
    }
  }
  return { q, s };
}

function withPool<T>(threads: number, f: (p: ThreadPool) => T | Promise<T>): Promise<T> {
  return (async () => {
    const pool = await ThreadPool.create(k, threads);
    try {
      return await f(pool);
    } finally {
      pool.dispose();
    }
  })();
}

// ------------------------------------------------------------------------------------------- matmul

const MS = [1, 2, 3, 5, 8, 9, 17, 70];
const NS = [1, 7, 13, 33];
const KS = [1, 3, 17, 65, 257, 64, 1100];
const DTYPES: WDT[] = ["f32", "bf16", "f8e4m3", "q8"];

/**
 * Checks a q8 matmul that multiplied int8-quantised activations: against an emulation of the int8 path (2e-6 of the
 * sum of |terms|), and against the exact product within the activation-quantisation bound.
 */
function expectQ8Int8(
  got: Float32Array,
  ref: Float64Array,
  xs: Float32Array,
  W: { q?: Int8Array; qsv?: Float32Array; dec: Float64Array | Float32Array },
  m: number,
  n: number,
  kk: number,
  what: string,
): void {
  const nb = Math.ceil(kk / 32);
  for (let i = 0; i < m; i++) {
    const a = quantAct(xs, i * kk, kk);
    for (let j = 0; j < n; j++) {
      // emu: the int8 path in f64; terms: Σ |each block's scaled product|, the scale f32 rounding is relative to
      // (one output can cancel to near zero, so max|emu| would be no yardstick).
      let emu = 0, terms = 0, bound = 0;
      for (let blk = 0; blk < nb; blk++) {
        let is = 0, isAbs = 0, wabs = 0, amax = 0;
        for (let c = blk * 32; c < Math.min(kk, blk * 32 + 32); c++) {
          is += a.q[c] * W.q![j * kk + c];
          isAbs += Math.abs(a.q[c] * W.q![j * kk + c]);
          wabs += Math.abs(W.dec[j * kk + c]);
          amax = Math.max(amax, Math.abs(xs[i * kk + c]));
        }
        const scale = fr(W.qsv![j * nb + blk] * a.s[blk]);
        emu += is * scale;
        terms += isAbs * Math.abs(scale); // q4 scales may be negative
        bound += (amax / 254) * wabs;
      }
      const g = got[i * n + j];
      assert(Math.abs(g - emu) <= 2e-6 * terms + 1e-30, `${what} (int8 emulation): ${g} vs ${emu} (Σ|terms| ${terms})`);
      const d = Math.abs(g - ref[i * n + j]);
      assert(d <= bound * 1.001 + 1e-6, `${what}: |Δ| ${d} above the q8 bound ${bound}`);
    }
  }
}

/** Whether q8 matmuls with M > 8 run on int8 products on this host (the kernel probes it). */
const INT8_PREFILL = ex.q8_prefill_int8(1) === 1;

for (const dt of DTYPES) {
  Deno.test(`matmul ${dt}: decode and prefill paths, odd shapes`, () => {
    const r = mulberry32(1000 + DT[dt]);
    const b = new Bufs();
    try {
      for (const kk of KS) {
        for (const n of NS) {
          const W = makeWeight(b, r, dt, n, kk);
          for (const m of MS) {
            const xs = randArray(r, m * kk);
            const x = b.f32(xs), y = b.f32(m * n);
            ex.matmul(x, W.w, DT[dt], W.scale, W.qs, y, m, n, kk, 0, n);
            const got = k.f32(y, m * n).slice();
            const ref = refMatmul(xs, W.dec, m, n, kk);
            const what = `${dt} M=${m} N=${n} K=${kk}`;
            if (dt === "q8" && (m <= 8 || INT8_PREFILL)) {
              expectQ8Int8(got, ref, xs, W, m, n, kk, what);
            } else {
              // Against the sum of |terms|, not max|ref|: with one output (N = 1) and long K, cancellation can
              // make |ref| tiny while the f32 rounding stays proportional to Σ|x·w|.
              let cond = 0;
              for (let i = 0; i < m; i++) {
                for (let j = 0; j < n; j++) {
                  let t = 0;
                  for (let c = 0; c < kk; c++) t += Math.abs(xs[i * kk + c] * W.dec[j * kk + c]);
                  cond = Math.max(cond, t);
                }
              }
              let e = 0;
              for (let i = 0; i < got.length; i++) e = Math.max(e, Math.abs(got[i] - ref[i]));
              assert(e <= 3e-6 * cond, `${what}: max |Δ| ${e.toExponential(3)} above 3e-6 · Σ|x·w| (${cond})`);
            }
          }
        }
      }
    } finally {
      b.free();
    }
  });
}

/**
 * A random q4 weight [N, K] in the kernels' layout (weights/codecs.ts quantizeQ4, whole groups of 4 blocks transposed
 * as layout.ts stores them), its values and its q = u − 8.
 */
function makeQ4(b: Bufs, r: () => number, n: number, kk: number): Weight {
  const t = quantizeQ4(randArray(r, n * kk), n, kk), nb = Math.ceil(kk / 32);
  const dec = new Float64Array(n * kk), q = new Int8Array(n * kk);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < kk; j++) {
      const byte = t.packed[(i * nb + Math.floor(j / 32)) * 16 + (j % 16)];
      q[i * kk + j] = (j % 32 < 16 ? byte & 15 : byte >> 4) - 8;
      dec[i * kk + j] = q[i * kk + j] * t.scales[i * nb + Math.floor(j / 32)];
    }
  }
  transposeQ4Groups(t.packed, 0, n, kk);
  return { dt: "q4", dec, w: b.bytes(t.packed), scale: 1, qs: b.bytes(f32ToF16(t.scales)), q, qsv: t.scales };
}

Deno.test("matmul q4: int8 activations (decode and prefill) ≡ their emulation; f32 activations ≡ the exact product", () => {
  const r = mulberry32(1004);
  const b = new Bufs();
  try {
    for (const kk of [...KS, 16384 + 33]) {
      for (const n of kk > 2000 ? [3] : NS) {
        const W = makeQ4(b, r, n, kk);
        for (const m of kk > 2000 ? [2, 9] : MS) {
          const xs = randArray(r, m * kk), x = b.f32(xs), y = b.f32(m * n);
          const ref = refMatmul(xs, W.dec, m, n, kk), what = `q4 M=${m} N=${n} K=${kk}`;
          ex.q4_int8(1);
          ex.matmul(x, W.w, DT.q4, 1, W.qs, y, m, n, kk, 0, n);
          expectQ8Int8(k.f32(y, m * n).slice(), ref, xs, W, m, n, kk, `${what} int8`);
          ex.q4_int8(0);
          ex.matmul(x, W.w, DT.q4, 1, W.qs, y, m, n, kk, 0, n);
          expectClose(k.f32(y, m * n), ref, 3e-6, `${what} f32`);
        }
      }
    }
  } finally {
    ex.q4_int8(1);
    b.free();
  }
});

Deno.test("matmul: 2 threads give bit-identical results (decode and prefill, every dtype)", async () => {
  await withPool(2, (pool) => {
    const r = mulberry32(7);
    const b = new Bufs();
    try {
      for (const dt of [...DTYPES, "q4"] as WDT[]) {
        for (const [m, n, kk] of [[1, 37, 65], [4, 64, 100], [8, 19, 33], [21, 45, 129]]) {
          const W = dt === "q4" ? makeQ4(b, r, n, kk) : makeWeight(b, r, dt, n, kk);
          const x = b.f32(randArray(r, m * kk)), y1 = b.f32(m * n), y2 = b.f32(m * n);
          const args = [x, W.w, DT[dt], W.scale, W.qs];
          ex.matmul(...args, y1, m, n, kk, 0, n);
          pool.parallelFor("matmul", [...args, y2, m, n, kk], n);
          expectEqual(k.f32(y2, m * n), k.f32(y1, m * n), `${dt} ${m}x${n}x${kk}`);
        }
      }
    } finally {
      b.free();
    }
  });
});

Deno.test("matmul: K above the decode limit (16384) falls back to the packed path, every dtype", () => {
  // With M = 2 that is the prefill path (f32 panels, or int8 q8 blocks of 1024 columns on hosts that allow it).
  const r = mulberry32(9);
  const b = new Bufs();
  try {
    for (const dt of DTYPES) {
      const m = 2, n = 3, kk = 16384 + 33, W = makeWeight(b, r, dt, n, kk), xs = randArray(r, m * kk);
      const y = b.f32(m * n);
      ex.matmul(b.f32(xs), W.w, DT[dt], W.scale, W.qs, y, m, n, kk, 0, n);
      const got = k.f32(y, m * n).slice(), ref = refMatmul(xs, W.dec, m, n, kk);
      if (dt === "q8" && INT8_PREFILL) expectQ8Int8(got, ref, xs, W, m, n, kk, `${dt} K=${kk}`);
      else expectClose(got, ref, 3e-6, `${dt} K=${kk}`);
    }
  } finally {
    b.free();
  }
});

Deno.test("matmul q8, M ≤ 8: the u8-weight products give the sign-transfer ones bit for bit", () => {
  const r = mulberry32(12);
  const b = new Bufs();
  const on = ex.q8_decode_u8(1) === 1;
  try {
    for (const [m, n, kk] of [[1, 37, 1024], [2, 13, 65], [3, 20, 96], [5, 9, 257], [8, 33, 32], [4, 8, 1]]) {
      const W = makeWeight(b, r, "q8", n, kk), x = b.f32(randArray(r, m * kk)), y1 = b.f32(m * n), y2 = b.f32(m * n);
      ex.q8_decode_u8(0);
      ex.matmul(x, W.w, DT.q8, W.scale, W.qs, y1, m, n, kk, 0, n);
      ex.q8_decode_u8(1);
      ex.matmul(x, W.w, DT.q8, W.scale, W.qs, y2, m, n, kk, 0, n);
      expectEqual(
        k.f32(y2, m * n),
        k.f32(y1, m * n),
        `q8 decode ${m}x${n}x${kk} (u8 form ${on ? "on" : "unavailable"})`,
      );
    }
  } finally {
    b.free();
  }
});

Deno.test("matmul q8, M > 8: q8_prefill_int8(0) keeps f32 activations (exact dequantised product)", () => {
  const r = mulberry32(11);
  const b = new Bufs();
  try {
    assert(ex.q8_prefill_int8(0) === 0, "the int8 path turns off");
    for (const [m, n, kk] of [[9, 33, 257], [40, 20, 1100]]) {
      const W = makeWeight(b, r, "q8", n, kk), xs = randArray(r, m * kk), y = b.f32(m * n);
      ex.matmul(b.f32(xs), W.w, DT.q8, W.scale, W.qs, y, m, n, kk, 0, n);
      expectClose(k.f32(y, m * n), refMatmul(xs, W.dec, m, n, kk), 3e-6, `q8 f32 path ${m}x${n}x${kk}`);
    }
  } finally {
    ex.q8_prefill_int8(1);
    b.free();
  }
});

Deno.test("arena: 64-byte alignment, reuse and coalescing of freed blocks, growth; warmup runs", () => {
  const before = k.allocatedBytes, len = k.byteLength;
  const a = k.alloc(1), b2 = k.alloc(100), c = k.alloc(64);
  for (const p of [a, b2, c]) assert(p % 64 === 0, `aligned ${p}`);
  assert(b2 - a === 64 && c - b2 === 128, "sizes round up to 64");
  k.free(a);
  k.free(b2);
  const d = k.alloc(150); // fits the coalesced hole left by a and b2
  assert(d === a, `first fit reuses the hole (${d} vs ${a})`);
  const big = k.alloc(len + 2 ** 20); // forces memory.grow
  assert(k.byteLength > len, "memory grew");
  k.f32(big + len, 4).set([1, 2, 3, 4]);
  for (const p of [d, c, big]) k.free(p);
  assert(k.allocatedBytes === before, "everything freed");
  let threw = false;
  try {
    k.free(12345);
  } catch {
    threw = true;
  }
  assert(threw, "freeing an unknown pointer throws");
  warmup(k, 20);
  assert(k.allocatedBytes === before, "warmup frees its buffers");
});

Deno.test("dequant_rows gathers and decodes rows of every dtype; quantize_q8 matches its definition", () => {
  const r = mulberry32(11);
  const b = new Bufs();
  try {
    for (const dt of DTYPES) {
      for (const kk of [1, 17, 64, 100]) {
        const n = 9, W = makeWeight(b, r, dt, n, kk);
        const ids = [3, 0, 8, 3, 5];
        const idp = b.i32(ids), out = b.f32(ids.length * kk);
        ex.dequant_rows(W.w, DT[dt], W.scale, W.qs, idp, out, kk, 0, ids.length);
        const ref = new Float64Array(ids.length * kk);
        ids.forEach((id, i) => ref.set(W.dec.subarray(id * kk, id * kk + kk), i * kk));
        expectEqual(k.f32(out, ref.length), Float32Array.from(ref), `dequant ${dt} K=${kk}`);
      }
    }
    for (const kk of [1, 31, 32, 33, 100]) {
      const n = 5, src = randArray(r, n * kk), { values, scales } = q8Bytes(n, kk);
      const sp = b.f32(src), qp = b.bytes(new Int8Array(values)), qsp = b.f32(scales / 4);
      ex.quantize_q8(sp, qp, qsp, kk, 0, n);
      for (let i = 0; i < n; i++) {
        const a = quantAct(src, i * kk, kk);
        expectEqual(k.i8(qp + i * kk, kk), a.q, `q8 values K=${kk}`);
        expectEqual(k.f32(qsp + i * Math.ceil(kk / 32) * 4, a.s.length), a.s, `q8 scales K=${kk}`);
      }
    }
  } finally {
    b.free();
  }
});

Deno.test("f8e4m3 decode covers all 254 finite codes exactly, bf16 conversions round to nearest even", () => {
  const b = new Bufs();
  try {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const w = b.bytes(codes), out = b.f32(256);
    ex.dequant_rows(w, DT.f8e4m3, 1, 0, 0, out, 256, 0, 1);
    const got = k.f32(out, 256);
    for (let i = 0; i < 256; i++) if ((i & 0x7f) !== 0x7f) assert(got[i] === f8ToF32(i), `f8 code ${i}`);
    const src = randArray(mulberry32(5), 1001, 3),
      sp = b.f32(src),
      hp = b.bytes(new Uint16Array(1001)),
      back = b.f32(1001);
    ex.f32_to_bf16_n(sp, hp, 0, 1001);
    ex.bf16_to_f32_n(hp, back, 0, 1001);
    for (let i = 0; i < 1001; i++) assert(k.u16(hp, 1001)[i] === f32ToBf16(src[i]), `bf16 ${i}`);
    expectEqual(k.f32(back, 1001), Array.from(src, (v) => bf16ToF32(f32ToBf16(v))), "bf16 round trip");
  } finally {
    b.free();
  }
});

// ------------------------------------------------------------------------------------------- elementwise

Deno.test("rms_norm, softmax, add, mul, scale_add, swiglu, gelu", async () => {
  const r = mulberry32(21);
  const b = new Bufs();
  try {
    for (const d of [1, 3, 17, 64, 257]) {
      const t = 5, ld = d + 3; // strided rows
      const xs = randArray(r, t * ld, 2), w = randArray(r, d);
      const x = b.f32(xs), wp = b.f32(w), y = b.f32(t * ld);
      ex.rms_norm(x, ld, wp, y, ld, d, 1e-6, 0, t);
      const got = k.f32(y, t * ld);
      for (let i = 0; i < t; i++) {
        let ss = 0;
        for (let c = 0; c < d; c++) ss += xs[i * ld + c] ** 2;
        const inv = 1 / Math.sqrt(ss / d + 1e-6);
        const ref = Array.from({ length: d }, (_, c) => xs[i * ld + c] * inv * w[c]);
        expectClose(got.subarray(i * ld, i * ld + d), ref, 2e-6, `rms_norm D=${d}`);
      }
      ex.softmax(x, ld, y, ld, d, 0.7, 0, t);
      for (let i = 0; i < t; i++) {
        const row = Array.from({ length: d }, (_, c) => 0.7 * xs[i * ld + c]);
        const m = Math.max(...row), e = row.map((v) => Math.exp(v - m)), s = e.reduce((a, c) => a + c, 0);
        expectClose(k.f32(y + i * ld * 4, d), e.map((v) => v / s), 2e-6, `softmax D=${d}`);
      }
    }
    for (const n of [1, 3, 17, 1000]) {
      const a = randArray(r, n, 10), c = randArray(r, n, 10);
      const ap = b.f32(a), cp = b.f32(c), y = b.f32(n);
      ex.add(ap, cp, y, 0, n);
      expectEqual(k.f32(y, n), Array.from(a, (v, i) => fr(v + c[i])), "add");
      ex.mul(ap, cp, y, 0, n);
      expectEqual(k.f32(y, n), Array.from(a, (v, i) => fr(v * c[i])), "mul");
      ex.scale_add(ap, 0.5, cp, y, 0, n);
      expectEqual(k.f32(y, n), Array.from(a, (v, i) => fr(fr(v * 0.5) + c[i])), "scale_add");
      ex.scale_add(ap, 3, 0, y, 0, n);
      expectEqual(k.f32(y, n), Array.from(a, (v) => fr(v * 3)), "scale");
      ex.gelu(ap, y, 0, n);
      const g = k.f32(y, n);
      for (let i = 0; i < n; i++) {
        const ref = 0.5 * a[i] * (1 + erf(a[i] / Math.SQRT2));
        assert(Math.abs(g[i] - ref) <= 1e-6 * Math.max(1, Math.abs(a[i])), `gelu(${a[i]}) = ${g[i]} vs ${ref}`);
      }
    }
    for (const f of [1, 3, 17, 64]) {
      const t = 4, gu = randArray(r, t * 2 * f, 6), gp = b.f32(gu), y = b.f32(t * f);
      ex.swiglu(gp, 2 * f, gp + f * 4, 2 * f, y, f, f, 0, t); // fused [gate | up] rows
      const ref = new Float64Array(t * f);
      for (let i = 0; i < t; i++) {
        for (let c = 0; c < f; c++) {
          const g = gu[i * 2 * f + c], u = gu[i * 2 * f + f + c];
          ref[i * f + c] = (g / (1 + Math.exp(-g))) * u;
        }
      }
      expectClose(k.f32(y, t * f), ref, 2e-6, `swiglu F=${f}`);
    }
    // Elementwise kernels split by element ranges: 2 threads must agree bit for bit.
    await withPool(2, (pool) => {
      const n = 4099, a = b.f32(randArray(r, n)), y1 = b.f32(n), y2 = b.f32(n);
      ex.gelu(a, y1, 0, n);
      pool.parallelFor("gelu", [a, y2], n);
      expectEqual(k.f32(y2, n), k.f32(y1, n), "gelu 2 threads");
      ex.rms_norm(a, 37, 0, y1, 37, 37, 1e-5, 0, 110);
      pool.parallelFor("rms_norm", [a, 37, 0, y2, 37, 37, 1e-5], 110);
      expectEqual(k.f32(y2, 37 * 110), k.f32(y1, 37 * 110), "rms_norm 2 threads");
    });
  } finally {
    b.free();
  }
});

/** erf in f64: Taylor series near 0, continued fraction for erfc in the tails. */
function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = ax, sum = ax;
    for (let n = 1; n < 80; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * sum * 2 / Math.sqrt(Math.PI);
  }
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + (n / 2) / f;
  return Math.sign(x) * (1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f);
}

// ------------------------------------------------------------------------------------------- rope

Deno.test("rope: interleaved pairs, θ table, large positions, llama-4 scale, 2-D split", () => {
  const r = mulberry32(31);
  const b = new Bufs();
  try {
    const yarn = [1, 0.75, 0.5623413251903491, 0.00042105894684815834, 1.0418136188775968e-6];
    for (const [nh, ldh, off, dr] of [[1, 6, 0, 6], [3, 20, 7, 10], [4, 128, 64, 64]]) {
      const t = 6, ldx = nh * ldh + 5, np = dr / 2;
      const theta = Float32Array.from({ length: np }, (_, i) => yarn[i % yarn.length] / (1 + i));
      const pos = [0, 1, 17, 8191, 8192, 1048575].slice(0, t);
      for (const [beta, orig] of [[0, 8192], [0.1, 8192]]) {
        for (const split of [np, Math.floor(np / 2)]) {
          const pos2 = pos.flatMap((p, i) => [p, 100 * i + 3]);
          const posStride = split < np ? 2 : 1;
          const xs = randArray(r, t * ldx), x = b.f32(xs), tp = b.f32(theta), pp = b.i32(posStride === 2 ? pos2 : pos);
          ex.rope(x, ldx, nh, ldh, off, dr, tp, pp, posStride, split, 1, beta, orig, 0, t);
          const ref = Float64Array.from(xs);
          for (let i = 0; i < t; i++) {
            for (let h = 0; h < nh; h++) {
              for (let j = 0; j < np; j++) {
                const p = j < split ? pos[i] : pos2[2 * i + 1];
                const ang = fr(fr(p) * theta[j]), c = Math.cos(ang), s = Math.sin(ang);
                const o = i * ldx + h * ldh + off + 2 * j, a0 = xs[o], a1 = xs[o + 1];
                ref[o] = a0 * c - a1 * s;
                ref[o + 1] = a0 * s + a1 * c;
              }
            }
            const sc = 1 + beta * Math.log(1 + Math.floor(pos[i] / orig));
            for (let c = 0; c < nh * ldh; c++) ref[i * ldx + c] *= sc;
          }
          expectClose(k.f32(x, t * ldx), ref, 2e-6, `rope nh=${nh} dr=${dr} beta=${beta} split=${split}`);
        }
      }
    }
  } finally {
    b.free();
  }
});

// ------------------------------------------------------------------------------------------- MLA attention

interface MlaCase {
  H: number;
  dn: number;
  dr: number;
  dv: number;
  kvr: number;
  bs: number;
  lens: number[]; // context length of each sequence (tokens already cached before the queries)
  queries: number; // query tokens per sequence, at the last positions
}

/** `splits` > 1: split decode (mla_attention over context parts, then mla_merge); hg and tb are then unused. */
function runMla(c: MlaCase, dt: WDT, cdt: "f32" | "bf16", hg: number, pool?: ThreadPool, tb = 1, splits = 0): void {
  const r = mulberry32(c.H * 1000 + c.kvr + c.bs + DT[dt] * 7 + (cdt === "bf16" ? 3 : 0));
  const b = new Bufs();
  try {
    const { H, dn, dr, dv, kvr, bs } = c, QW = kvr + dr, S = c.lens.length;
    const maxBlocks = Math.max(...c.lens.map((l) => Math.ceil(l / bs)));
    // Scattered block ids so block tables matter.
    const nBlocks = S * maxBlocks + 3, perm = Array.from({ length: nBlocks }, (_, i) => i);
    for (let i = nBlocks - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const tables = new Int32Array(S * maxBlocks);
    for (let i = 0; i < tables.length; i++) tables[i] = perm[i];
    // Latents per (sequence, position), written through mla_cache_write.
    const lat: Float32Array[] = c.lens.map((l) => randArray(r, l * QW));
    const cacheBytes = nBlocks * bs * QW * (cdt === "bf16" ? 2 : 4);
    const cache = b.bytes(new Uint8Array(cacheBytes)), tp = b.i32(tables);
    for (let s = 0; s < S; s++) {
      const L = c.lens[s], kv = b.f32(lat[s]), seq = b.i32(new Array(L).fill(s));
      const pos = b.i32(Array.from({ length: L }, (_, i) => i));
      ex.mla_cache_write(kv, QW, cache, DT[cdt], tp, maxBlocks, bs, seq, pos, QW, 0, L);
      if (cdt === "bf16") lat[s] = lat[s].map((v) => bf16ToF32(f32ToBf16(v)));
    }
    // Query tokens: the last `queries` positions of every sequence (a prefill chunk or a decode batch).
    const tokSeq: number[] = [], tokPos: number[] = [];
    for (let s = 0; s < S; s++) {
      for (let q = c.queries; q >= 1; q--) {
        tokSeq.push(s);
        tokPos.push(c.lens[s] - q);
      }
    }
    const T = tokSeq.length, qs = randArray(r, T * H * (dn + dr));
    const W = makeWeight(b, r, dt, H * (dn + dv), kvr);
    const scale = 1 / Math.sqrt(dn + dr);
    const out = b.f32(T * H * dv), params = b.i32(MLA_PARAMS.length);
    const values = {
      q: b.f32(qs),
      wkvb: W.w,
      wdt: DT[dt],
      wscale: W.scale,
      wqs: W.qs,
      cache,
      cdt: DT[cdt],
      blockTables: tp,
      maxBlocks,
      bs,
      tokSeq: b.i32(tokSeq),
      tokPos: b.i32(tokPos),
      out,
      T,
      H,
      dn,
      dr,
      dv,
      kvr,
      scale,
      hg,
      tb,
      splits,
      part: splits > 1 ? b.f32(T * splits * H * (kvr + 2)) : 0,
    };
    writeParams(k, params, MLA_PARAMS, values);
    const run = (kernel: "mla_attention" | "mla_merge", rows: number) => {
      if (pool) pool.parallelFor(kernel, [params], rows, { chunks: 3 * rows });
      else ex[kernel](params, 0, rows);
    };
    if (splits > 1) {
      run("mla_attention", T * splits);
      run("mla_merge", T * H);
    } else run("mla_attention", Math.ceil(T / tb) * Math.ceil(H / hg));
    const got = k.f32(out, T * H * dv).slice();
    // Naive (expanded) MLA: k_nope = W_UK·c_kv, v = W_UV·c_kv per cached position, ordinary causal attention.
    const ref = new Float64Array(T * H * dv);
    for (let t = 0; t < T; t++) {
      const L = tokPos[t] + 1, cl = lat[tokSeq[t]];
      for (let h = 0; h < H; h++) {
        const q = qs.subarray((t * H + h) * (dn + dr), (t * H + h + 1) * (dn + dr));
        const sc = new Float64Array(L);
        for (let l = 0; l < L; l++) {
          let s = 0;
          for (let j = 0; j < dn; j++) {
            let kn = 0;
            for (let cc = 0; cc < kvr; cc++) kn += W.dec[(h * (dn + dv) + j) * kvr + cc] * cl[l * QW + cc];
            s += q[j] * kn;
          }
          for (let j = 0; j < dr; j++) s += q[dn + j] * cl[l * QW + kvr + j];
          sc[l] = s * scale;
        }
        const m = Math.max(...sc);
        let z = 0;
        for (let l = 0; l < L; l++) z += sc[l] = Math.exp(sc[l] - m);
        for (let d = 0; d < dv; d++) {
          let o = 0;
          for (let l = 0; l < L; l++) {
            let v = 0;
            for (let cc = 0; cc < kvr; cc++) v += W.dec[(h * (dn + dv) + dn + d) * kvr + cc] * cl[l * QW + cc];
            o += (sc[l] / z) * v;
          }
          ref[(t * H + h) * dv + d] = o;
        }
      }
    }
    // q8: W_UV runs on the int8 decode path, so o_lat is quantised too (see the q8 bound above).
    expectClose(
      got,
      ref,
      dt === "q8" ? 1e-2 : 2e-5,
      `mla ${JSON.stringify(c)} ${dt} cache=${cdt} hg=${hg} tb=${tb} splits=${splits}`,
    );
    if (pool) {
      // Same numbers as one thread.
      const out1 = b.f32(T * H * dv);
      writeParams(k, params, MLA_PARAMS, { ...values, out: out1 });
      if (splits > 1) {
        ex.mla_attention(params, 0, T * splits);
        ex.mla_merge(params, 0, T * H);
      } else ex.mla_attention(params, 0, Math.ceil(T / tb) * Math.ceil(H / hg));
      expectEqual(got, k.f32(out1, T * H * dv), "mla 2 threads");
    }
  } finally {
    b.free();
  }
}

const TINY: MlaCase = { H: 4, dn: 16, dr: 16, dv: 16, kvr: 32, bs: 16, lens: [5, 1, 40], queries: 1 };
const ODD: MlaCase = { H: 3, dn: 6, dr: 6, dv: 10, kvr: 20, bs: 3, lens: [2, 7, 70], queries: 2 };
const WIDE: MlaCase = { H: 10, dn: 8, dr: 8, dv: 12, kvr: 24, bs: 8, lens: [40, 3], queries: 3 };
const MS4: MlaCase = { H: 2, dn: 64, dr: 64, dv: 128, kvr: 256, bs: 16, lens: [150], queries: 3 };

Deno.test("mla_attention (absorbed, paged) ≡ naive MLA: decode and prefill shapes, f32 and bf16 cache", () => {
  for (const dt of DTYPES) runMla(TINY, dt, "f32", 4);
  runMla(TINY, "f32", "bf16", 1);
  runMla(ODD, "f32", "f32", 2);
  runMla(ODD, "bf16", "bf16", 3);
  runMla({ ...ODD, bs: 64, lens: [130], queries: 9 }, "f8e4m3", "f32", 3); // tiles of 64 rows, prefill chunk
  runMla(MS4, "f8e4m3", "bf16", 1);
  runMla(MS4, "q8", "f32", 2);
  // Token blocks (prefill): tb tokens share W decode and cache tiles; blocks may straddle sequences.
  runMla(ODD, "f32", "f32", 3, undefined, 2); // blocks of one sequence
  runMla(ODD, "bf16", "bf16", 2, undefined, 3); // blocks across sequences fall back to per token
  runMla({ ...ODD, bs: 64, lens: [130], queries: 9 }, "f8e4m3", "f32", 3, undefined, 4); // last block short
  runMla(WIDE, "f32", "bf16", 10, undefined, 3); // 30 rows: four 8-wide Q panels
  runMla(WIDE, "bf16", "f32", 5, undefined, 30); // 150 rows > 128: split inside the item
});

Deno.test("mla_attention split decode (context parts + mla_merge) ≡ naive MLA, odd contexts, 1 and many tokens", async () => {
  // Contexts shorter than, equal to and past whole 64-row tiles and block sizes; more parts than tiles (empty parts).
  const LONG: MlaCase = { H: 3, dn: 6, dr: 6, dv: 10, kvr: 20, bs: 5, lens: [1, 63, 64, 65, 200], queries: 1 };
  const MANY: MlaCase = { ...WIDE, lens: [130, 7], queries: 2 };
  for (const splits of [2, 3, 5]) {
    runMla(LONG, "f32", "f32", 1, undefined, 1, splits);
    runMla(LONG, "q8", "bf16", 1, undefined, 1, splits);
    runMla(MANY, "bf16", "f32", 1, undefined, 1, splits);
    runMla({ ...MS4, lens: [150, 2] }, "f8e4m3", "bf16", 1, undefined, 1, splits);
  }
  await withPool(2, (pool) => {
    runMla(LONG, "f32", "bf16", 1, pool, 1, 4);
    runMla(MANY, "q8", "f32", 1, pool, 1, 3);
  });
});

Deno.test("mla_attention: 2 threads, heads split across threads", async () => {
  await withPool(2, (pool) => {
    runMla(TINY, "bf16", "bf16", 1, pool);
    runMla(ODD, "f32", "f32", 3, pool);
    runMla(WIDE, "f32", "f32", 5, pool, 2);
  });
});

// ------------------------------------------------------------------------------------------- MoE

Deno.test("moe_route: f32 softmax, top-k (ties → lower id), renormalise with +1e-20", () => {
  const r = mulberry32(41);
  const b = new Bufs();
  try {
    for (const [E, kk] of [[8, 2], [32, 4], [5, 5], [128, 4]]) {
      const T = 6, logits = randArray(r, T * E, 4);
      logits[3] = logits[5]; // a tie in token 0
      const idx = b.i32(T * kk), w = b.f32(T * kk);
      for (const renorm of [1, 0]) {
        ex.moe_route(b.f32(logits), E, kk, renorm, 1.5, idx, w, 0, T);
        for (let t = 0; t < T; t++) {
          const row = Array.from(logits.subarray(t * E, t * E + E));
          const m = Math.max(...row), e = row.map((v) => Math.exp(v - m)), s = e.reduce((a, c) => a + c, 0);
          const p = e.map((v) => v / s);
          const order = p.map((v, i) => [v, i]).sort((a, c) => c[0] - a[0] || a[1] - c[1]).slice(0, kk);
          const tot = order.reduce((a, c) => a + c[0], 0);
          expectEqual(k.i32(idx + t * kk * 4, kk), order.map((o) => o[1]), `route idx E=${E}`);
          const ref = order.map((o) => (renorm ? o[0] / (tot + 1e-20) : o[0]) * 1.5);
          expectClose(k.f32(w + t * kk * 4, kk), ref, 2e-6, `route w E=${E}`);
        }
      }
    }
  } finally {
    b.free();
  }
});

function runMoe(dt: WDT, T: number, E: number, kk: number, D: number, F: number, fused: boolean, pool?: ThreadPool) {
  const r = mulberry32(T * 100 + E + D + F + DT[dt]);
  const b = new Bufs();
  try {
    // Weights: gate/up either fused per expert [E, 2F, D] (HF) or separate [E, F, D]; down [E, D, F].
    const per = (n: number, kdim: number) => Array.from({ length: E }, () => makeWeight(b, r, dt, n, kdim));
    const gu = fused ? per(2 * F, D) : null, gs = fused ? null : per(F, D), us = fused ? null : per(F, D);
    const ds = per(D, F);
    // The kernel wants expert 0's pointer plus a stride, so pack the per-expert matrices contiguously.
    const elem = { f32: 4, bf16: 2, f8e4m3: 1, q8: 1, q4: 0.5 }[dt]; // q4 experts: tests/backend_ops_test.ts
    const pack = (ws: Weight[], n: number, kdim: number) => {
      const bytes = n * kdim * elem, all = new Uint8Array(bytes * E);
      ws.forEach((w, e) => all.set(k.u8(w.w, bytes), e * bytes));
      const qsN = n * Math.ceil(kdim / 32), qs = new Float32Array(qsN * E);
      if (dt === "q8") ws.forEach((w, e) => qs.set(w.qsv!, e * qsN));
      return { ptr: b.bytes(all), bytes, qs: dt === "q8" ? b.f32(qs) : 0, qsN };
    };
    const fs = (ws: Weight[]) => b.f32(ws.map((w) => w.scale));
    let g: number, u: number, sg: number, su: number, qsg: number, qsu: number, fsg: number, fsu: number;
    let qg: number, qu: number;
    if (fused) {
      const pg = pack(gu!, 2 * F, D);
      g = pg.ptr;
      u = pg.ptr + F * D * elem;
      sg = su = pg.bytes;
      qsg = qsu = pg.qsN;
      fsg = fsu = fs(gu!);
      qg = pg.qs;
      qu = pg.qs ? pg.qs + F * Math.ceil(D / 32) * 4 : 0;
    } else {
      const pg = pack(gs!, F, D), pu = pack(us!, F, D);
      [g, u, sg, su, qsg, qsu] = [pg.ptr, pu.ptr, pg.bytes, pu.bytes, pg.qsN, pu.qsN];
      [fsg, fsu] = [fs(gs!), fs(us!)];
      qg = pg.qs;
      qu = pu.qs;
    }
    const pd = pack(ds, D, F);
    const xs = randArray(r, T * D), logits = randArray(r, T * E, 3), addend = randArray(r, T * D);
    const idx = b.i32(T * kk), wts = b.f32(T * kk);
    ex.moe_route(b.f32(logits), E, kk, 1, 1, idx, wts, 0, T);
    const offsets = b.i32(E + 1), order = b.i32(T * kk), inv = b.i32(T * kk), active = b.i32(E);
    const nActive = ex.moe_plan(idx, T, kk, E, offsets, order, inv, active);
    const chunk = 8;
    const params = b.i32(MOE_PARAMS.length), out = b.f32(T * D);
    writeParams(k, params, MOE_PARAMS, {
      x: b.f32(xs),
      offsets,
      order,
      inv,
      active,
      nActive,
      wg: g,
      wu: u,
      wd: pd.ptr,
      wdt: DT[dt],
      sg,
      su,
      sd: pd.bytes,
      fsg,
      fsu,
      fsd: fs(ds),
      qg,
      qu,
      qd: pd.qs,
      qsg,
      qsu,
      qsd: pd.qsN,
      act: b.f32(T * kk * F),
      up: b.f32(T * kk * F),
      ys: b.f32(T * kk * D),
      w: wts,
      addend: b.f32(addend),
      out,
      T,
      D,
      F,
      k: kk,
      chunk,
    });
    const rows = moeRows({ nActive, F, D, T, chunk });
    const run = (name: "moe_gate_up" | "moe_down" | "moe_combine", n: number) =>
      pool ? pool.parallelFor(name, [params], n) : ex[name](params, 0, n);
    run("moe_gate_up", rows.gateUp);
    run("moe_down", rows.down);
    run("moe_combine", rows.combine);
    const got = k.f32(out, T * D).slice();
    // Reference: dense loop over the chosen experts.
    const idv = k.i32(idx, T * kk), wv = k.f32(wts, T * kk);
    const ref = Float64Array.from(addend);
    for (let t = 0; t < T; t++) {
      const x = xs.subarray(t * D, t * D + D);
      for (let j = 0; j < kk; j++) {
        const e = idv[t * kk + j];
        const gw = fused ? gu![e].dec.subarray(0, F * D) : gs![e].dec;
        const uw = fused ? gu![e].dec.subarray(F * D) : us![e].dec;
        const hgt = refMatmul(x, gw, 1, F, D), hup = refMatmul(x, uw, 1, F, D);
        const a = hgt.map((v, i) => (v / (1 + Math.exp(-v))) * hup[i]);
        const y = refMatmul(a, ds[e].dec, 1, D, F);
        for (let c = 0; c < D; c++) ref[t * D + c] += wv[t * kk + j] * y[c];
      }
    }
    // q8 experts quantise activations when an expert sees ≤ 8 tokens; the bound is loose, so compare at 2e-2.
    expectClose(got, ref, dt === "q8" ? 2e-2 : 2e-5, `moe ${dt} T=${T} E=${E} k=${kk} D=${D} F=${F} fused=${fused}`);
    return got;
  } finally {
    b.free();
  }
}

Deno.test("moe_plan + moe_gate_up/down/combine ≡ dense reference (grouped decode and prefill paths)", () => {
  for (const dt of DTYPES) runMoe(dt, 3, 8, 2, 17, 13, true);
  runMoe("f32", 1, 8, 2, 64, 32, false);
  runMoe("bf16", 40, 4, 2, 33, 24, false); // ~20 tokens per expert: prefill path inside experts
  runMoe("f8e4m3", 40, 4, 2, 33, 24, true);
});

Deno.test("moe: 2 threads give the single-thread result", async () => {
  const one = runMoe("f32", 12, 8, 4, 40, 24, false);
  const two = await withPool(2, (pool) => runMoe("f32", 12, 8, 4, 40, 24, false, pool));
  expectEqual(two, one, "moe 2 threads");
});

// ------------------------------------------------------------------------------------------- sampling

Deno.test("argmax: first index of the maximum, ties, NaNs never largest, tails off the SIMD width", () => {
  const r = mulberry32(52);
  const b = new Bufs();
  try {
    const rows: number[][] = [];
    for (const V of [1, 2, 3, 4, 5, 9, 131]) {
      const row = Array.from({ length: V }, () => r() * 4 - 2);
      rows.push(row.slice());
      const top = Math.max(...row), last = V - 1;
      rows.push(row.map((x, i) => i === last || i === Math.floor(V / 2) ? top + 1 : x)); // tie at the max
      rows.push(row.map((x, i) => i % 3 === 1 ? NaN : x)); // NaNs inside
      rows.push(row.map((x, i) => i === 0 ? NaN : x + 5)); // NaN first: a scalar walk stays at 0
      rows.push(row.map(() => -Infinity));
      rows.push(row.map((_x, i) => i === last ? -0 : i === 0 ? 0 : -1)); // ±0 tie: the first
    }
    for (const row of rows) {
      const out = b.i32(1);
      ex.argmax(b.f32(row), row.length, out, 0, 1);
      let best = 0;
      for (let i = 1; i < row.length; i++) if (Math.fround(row[i]) > Math.fround(row[best])) best = i;
      assert(k.i32(out, 1)[0] === best, `argmax of [${row}]: ${k.i32(out, 1)[0]}, want ${best}`);
    }
  } finally {
    b.free();
  }
});

Deno.test("argmax and sample (temperature, top-k, top-p, uniform u, masks) match the reference walk", () => {
  const r = mulberry32(51);
  const b = new Bufs();
  try {
    // 20000: nearly flat rows (as a random-weight model gives), where the cuts select among thousands.
    for (const V of [1, 7, 1000, 20000]) {
      for (const masked of [false, true]) {
        const settings: [number, number, number][] = [
          [0, 0, 1],
          [0.7, 0, 1],
          [1.5, 5, 1],
          [1, 0, 0.9],
          [0.7, 50, 0.5],
          [1, 1, 1],
          [2, V, 0.3],
          [1, 0, 0],
          [0, 3, 1],
        ];
        const T = settings.length, W = Math.ceil(V / 32);
        const logits = randArray(r, T * V, V > 10000 ? 0.05 : 5);
        if (V > 1) logits[1] = logits[0]; // a tie
        const u = Array.from({ length: T }, () => r());
        // Masks: dense, sparse, a single id, none allowed (→ −1), with random bits past V that must be ignored.
        const masks = new Uint32Array(4 * W);
        for (let i = 0; i < 4 * W * 32; i++) {
          const m = i / (W * 32) | 0, id = i % (W * 32);
          const on = id >= V ? r() < 0.5 : m === 0 ? r() < 0.8 : m === 1 ? r() < 0.1 : m === 2 && id === V - 1;
          if (on) masks[i >> 5] |= 1 << (i & 31);
        }
        const maskRow = Array.from({ length: T }, (_, t) => t % 5 - 1); // −1 (none), then masks 0–3
        const allowed = (t: number, id: number) =>
          !masked || maskRow[t] < 0 || (masks[maskRow[t] * W + (id >> 5)] >>> (id & 31) & 1) === 1;
        const lp = b.f32(logits), out = b.i32(T), scratch = b.f32(2 * V * T);
        ex.sample(
          lp,
          V,
          b.f32(settings.map((s) => s[0])),
          b.i32(settings.map((s) => s[1])),
          b.f32(settings.map((s) => s[2])),
          b.f32(u),
          masked ? b.i32(maskRow) : 0,
          b.i32(new Int32Array(masks.buffer)),
          out,
          scratch,
          0,
          T,
        );
        const am = b.i32(T);
        ex.argmax(lp, V, am, 0, T);
        for (let t = 0; t < T; t++) {
          const row = logits.subarray(t * V, t * V + V);
          const ids = Array.from({ length: V }, (_, i) => i).filter((i) => allowed(t, i));
          let best = 0;
          for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
          assert(k.i32(am, T)[t] === best, `argmax V=${V}`);
          let bestAllowed = -1;
          for (const i of ids) if (bestAllowed < 0 || row[i] > row[bestAllowed]) bestAllowed = i;
          const [temp, topk, topp] = settings[t];
          const got = k.i32(out, T)[t];
          const what = `V=${V} masked=${masked} row ${t} ${settings[t]}`;
          if (temp <= 0 || ids.length === 0) {
            assert(got === bestAllowed, `temperature 0 is argmax, no allowed id is −1 (${what}): got ${got}`);
            continue;
          }
          // The kernel leaves p_i of the allowed ids in scratch: check them, then replay the selection walk on them.
          const p = k.f32(scratch + t * 8 * V, V).slice();
          const m = Math.max(...ids.map((i) => row[i]));
          const want = ids.map((i) => Math.exp(fr(fr(row[i] - m) * fr(1 / temp))));
          expectClose(Float32Array.from(ids, (i) => p[i]), want, 2e-6, "sample probs");
          assert(got === refSample(p, ids, topk, topp, u[t]), `sample ${what}: got ${got}`);
        }
      }
    }
  } finally {
    b.free();
  }
});

/** The kernel's walk over the candidates `all` (allowed ids, increasing) with their f32 probabilities `p`. */
function refSample(p: Float32Array, all: number[], topk: number, topp: number, u: number): number {
  const V = all.length, K = topk > 0 && topk < V ? topk : V;
  const sum = (ids: number[]) => ids.reduce((a, i) => fr(a + p[i]), 0);
  const walk = (ids: number[], z: number) => {
    const target = fr(u * z);
    let cum = 0;
    for (const i of ids) if (target < (cum = fr(cum + p[i]))) return i;
    return ids[ids.length - 1];
  };
  const sorted = all.slice().sort((a, c) => p[c] - p[a] || a - c);
  if (K === V && !(topp < 1)) return walk(sorted, sum(all)); // nothing cut: the total, summed in id order
  const z = K < V ? sum(sorted.slice(0, K)) : sum(all);
  let keep = K;
  if (topp < 1) {
    const target = fr(topp * z);
    let cum = 0;
    keep = 0;
    for (;;) {
      cum = fr(cum + p[sorted[keep]]);
      keep++;
      if (cum >= target || keep === K) break;
    }
  }
  const kept = sorted.slice(0, keep);
  return walk(kept, sum(kept));
}

// ------------------------------------------------------------------------------------------- pool

Deno.test("ThreadPool: ranges cover every row once, alignment, small jobs stay on the caller, errors surface", async () => {
  await withPool(3, (pool) => {
    const b = new Bufs();
    try {
      for (const rows of [1, 2, 3, 7, 64, 1001]) {
        const n = rows, a = b.f32(new Float32Array(n).fill(1)), y = b.f32(new Float32Array(n).fill(5));
        pool.parallelFor("add", [a, a, y], n, { align: 4 });
        expectEqual(k.f32(y, n), new Float32Array(n).fill(2), `rows=${rows}`);
      }
      let threw = false;
      try {
        pool.parallelFor("add", [0x7ffffff0, 0x7ffffff0, 0x7ffffff0], 64); // out of bounds: traps
      } catch {
        threw = true;
      }
      assert(threw, "a trapping kernel throws");
      const a = b.f32(new Float32Array(8).fill(3)), y = b.f32(8);
      pool.parallelFor("add", [a, a, y], 8); // still usable afterwards
      expectEqual(k.f32(y, 8), new Float32Array(8).fill(6), "after error");
    } finally {
      b.free();
    }
  });
  assert(k.allocatedBytes === 0, `test allocations leaked: ${k.allocatedBytes} bytes`);
});

Deno.test("ThreadPool: dynamic pieces (chunks) cover every row exactly once, aligned, and surface errors", async () => {
  await withPool(3, (pool) => {
    const b = new Bufs();
    try {
      for (const rows of [1, 5, 8, 33, 64, 1001, 4099]) {
        for (const [align, chunks, minRows] of [[1, 12, 1], [4, 7, 1], [8, 64, 16], [1, 1000, 1], [4, 2, 1]]) {
          // In place y += 1: a row run twice would read 3, a row skipped 1.
          const one = b.f32(new Float32Array(rows).fill(1)), y = b.f32(new Float32Array(rows).fill(1));
          pool.parallelFor("add", [y, one, y], rows, { align, chunks, minRows });
          expectEqual(k.f32(y, rows), new Float32Array(rows).fill(2), `rows=${rows} align=${align} chunks=${chunks}`);
        }
      }
      let threw = false;
      try {
        pool.parallelFor("add", [0x7ffffff0, 0x7ffffff0, 0x7ffffff0], 640, { chunks: 16 }); // traps
      } catch {
        threw = true;
      }
      assert(threw, "a trapping kernel throws in dynamic mode");
      const a = b.f32(new Float32Array(64).fill(3)), y = b.f32(64);
      pool.parallelFor("add", [a, a, y], 64, { chunks: 9 });
      expectEqual(k.f32(y, 64), new Float32Array(64).fill(6), "after error");
    } finally {
      b.free();
    }
  });
  assert(k.allocatedBytes === 0, `test allocations leaked: ${k.allocatedBytes} bytes`);
});
