/**
 * Every op on every backend against the reference: a table of small seeded graphs (one op each, plus the helper
 * nodes that feed it), run through the scheduler and the plan executor on each backend whose `probe() > 0`, and
 * compared with the reference's results by normalised error (`max|a − e| / max|e|`); ids compare exactly.
 *
 * Bounds (wasm, measured with BACKEND_OPS_REPORT=1): f32 / bf16 / f8e4m3 weights 1e-5 (measured ≤ 2.5e-7: weights
 * decode exactly, only f32 accumulation order and FMA differ from the reference's f64 sums); q8 2e-2 (measured
 * ≤ 1.1e-2: rows ≤ 8 quantise activations to int8 per 32-block, the reference sees only the dequantised weights;
 * so do more rows on hosts with the int8 prefill path (x86 with AVX-VNNI), elsewhere they dequantise the weights
 * exactly, ≤ 5e-7); nvfp4 the q8 bound with int8 activations (≤ 8 rows, and prefill with `nvfp4Prefill: "int8"`:
 * measured ≤ 1.4e-2) and 1e-6 on wasm's f32 path (the reference's dequantised values: ≤ 3.7e-7; 1e-5 elsewhere);
 * q4 2e-2 with int8 activations (measured ≤ 7.1e-3; every host, every M; experts 3e-2, see `q4MoeCases`) and 1e-6
 * with f32 activations (≤ 4.4e-7: the weights decode exactly); norms, rope, swiglu 2e-6 (≤ 1.6e-7); gelu 1e-5 (its erfc
 * approximation, ≤ 3.4e-6); vision attention 2e-6 (≤ 3.6e-7: f32 scores and online softmax), 5e-6 with scores of
 * ±50 (1.2e-6: f32 rounding of the scores, amplified by exp); add / mul 1e-7 and copies (patch_merge too) 0 (both
 * exact on wasm). MLA cases (cache write and attention) run q8 weights with the f32 prefill path and compare at
 * 2e-5, bf16 caches included (the reference rounds what a bf16 cache stores, as the backends do): a 5% scale error
 * fails them; the cache each case writes is compared exactly. The int8 q8 path has its own bit-level tests
 * (runtime/backends/wasm/kernels_test.ts).
 *
 * webgpu (Mesa's lavapipe, measured the same way) holds the same bounds: bf16, f16, FP8, q8, NVFP4 and q4 weights
 * stay as they are and decode exactly as they are read (activations are never quantised), and kernels accumulate in
 * f32 (matmul ≤ 4.9e-7, q8 included since the weight is dequantised exactly; q4 ≤ 1.5e-6 at K = 1050, far inside
 * its 2e-2; MLA ≤ 3.5e-7; MoE ≤ 4.5e-7, experts grouped per expert on the device; norms, rope, swiglu, temperature ≤ 1.6e-7; copies, routing ids and caches exact). The ops it
 * does not run yet are listed in `WEBGPU_REFUSED`: the table must skip exactly those.
 * The onnx column (onnxruntime-node; its ops: matmul, rms_norm, swiglu, embedding, moe_experts) is held to the same
 * bounds; measured: matmul ≤ 4.8e-7 in every weight dtype (q8 dequantised exactly at upload), rms_norm
 * ≤ 1.5e-7, swiglu ≤ 1.3e-7, moe_experts ≤ 3.6e-7, embedding exact.
 *
 * The table is exported for benches: `OP_CASES` (build a case with `c.build()`) and `runOpCase`.
 *
 * @module
 */

import { GraphBuilder, type Tensor } from "../graph/builder.ts";
import type { DType } from "../graph/dtype.ts";
import { type Dim, type Graph, sym, tensorTable, type Vars } from "../graph/ir.ts";
import * as ops from "../ops/mod.ts";
import { normalisedError } from "./op_helpers.ts";
import { type Backend, kindOf, tensorDType } from "../runtime/backend.ts";
import { referenceBackend } from "../runtime/backends/reference.ts";
import { type HostArray, PlanExecutor } from "../runtime/plan_executor.ts";
import { wasmBackend, type WasmTuning } from "../runtime/backends/wasm/backend.ts";
import { webgpuBackend } from "../runtime/backends/webgpu/backend.ts";
import { probeQ8Paths } from "../runtime/backends/wasm/module.ts";
import { memorySource } from "../weights/memory_source.ts";
import { planMla } from "../runtime/step_plan.ts";
import { q8AbsorbedRows } from "./mla_q8_emulation.ts";
import { BACKENDS } from "../runtime/registry.ts";
import { type Plan, schedule } from "../runtime/schedule.ts";
import { bf16ToF32, f32ToBytes, type FloatDType, nvfp4BlockScale, quantizeFp8 } from "../weights/codecs.ts";
import { convertWeight, nvfp4Weight } from "../weights/convert.ts";
import type { CanonicalWeight } from "../weights/load.ts";
import { assert, assertEquals } from "./assert.ts";
import { mulberry32 } from "./fixtures.ts";
import { dispatchCountingAdapter, dispatchesOf, WEBGPU_IGNORE } from "./webgpu_helpers.ts";

/** A built case: a graph with its seeded weights, per-run inputs, initial state (f32 values) and symbols. */
export interface BuiltCase {
  graph: Graph;
  weights: Map<string, CanonicalWeight>;
  inputs: Record<string, Float32Array | Int32Array>;
  state: Record<string, Float32Array>;
  vars?: Vars;
}

/** One row of the table: the op under test, its bound, and how to build it (deterministic). */
export interface OpCase {
  /** Unique label (op, dtypes, shapes). */
  name: string;
  /** The op whose node must run on the backend under test. */
  op: string;
  /** Normalised error bound of float outputs. */
  tol: number;
  /** Bound for state read back after the run (a cache); default `tol`. */
  stateTol?: number;
  /**
   * A tighter bound `wasm` meets (NVFP4 on its f32 path reproduces the reference's dequantised weights; another
   * backend sums in another order, within `tol`).
   */
  wasmTol?: number;
  build(): BuiltCase;
}

function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Builds one case's graph and data; values are uniform in ±scale and never exactly zero. */
class Case {
  readonly g = new GraphBuilder();
  readonly r: () => number;
  readonly weights = new Map<string, CanonicalWeight>();
  readonly inputs: Record<string, Float32Array | Int32Array> = {};
  readonly state: Record<string, Float32Array> = {};

  constructor(name: string) {
    this.r = mulberry32(seedOf(name));
  }

  values(n: number, scale = 1): Float32Array {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = ((2 * this.r() - 1) || 0.5) * scale;
    return v;
  }

  /** A random f32 input; a dim given as `[n, max]` is the symbol T (at most max), bound to n by the data. */
  f32(name: string, shape: (number | [number, number])[], scale = 1): Tensor {
    const dims: Dim[] = shape.map((d) => typeof d === "number" ? d : sym("T", d[1]));
    const real = shape.map((d) => typeof d === "number" ? d : d[0]);
    this.inputs[name] = this.values(numel(real), scale);
    return this.g.input(name, dims, "f32");
  }

  i32(name: string, values: readonly number[], shape: Dim[] = [values.length]): Tensor {
    this.inputs[name] = Int32Array.from(values);
    return this.g.input(name, shape, "i32");
  }

  /**
   * A weight of `dtype` with values uniform in ±scale; f8e4m3 gets `blocks` scale blocks (1 per tensor, 2 for a
   * fused gate ‖ up, E or 2E for experts), nvfp4 `blocks` global scales likewise, q8 per-32 scales.
   */
  weight(name: string, shape: number[], dtype: DType, scale = 1, blocks = 1): Tensor {
    const values = this.values(numel(shape), scale);
    let w: CanonicalWeight = { name, shape, dtype: "f32", data: f32ToBytes(values, "f32") };
    if (dtype === "f8e4m3") {
      const q = quantizeFp8(values, blocks);
      w = { name, shape, dtype, data: q.codes, scales: q.scales };
    } else if (dtype === "nvfp4") {
      w = nvfp4Weight(name, shape, values, blocks);
    } else {
      w = convertWeight(w, dtype);
    }
    this.weights.set(name, w);
    return this.g.weight(name, shape, dtype);
  }

  cache(name: string, shape: number[], dtype: DType): Tensor {
    // bf16-exact values, so a backend holding the cache in bf16 starts from the same contents.
    const bytes = f32ToBytes(this.values(numel(shape)), "bf16");
    this.state[name] = bf16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, numel(shape)));
    return this.g.state(name, shape, dtype);
  }

  done(outputs: Record<string, Tensor>): BuiltCase {
    for (const [name, t] of Object.entries(outputs)) this.g.output(name, t);
    return { graph: this.g.build(), weights: this.weights, inputs: this.inputs, state: this.state };
  }
}

/** A case whose graph comes from `body` (seeded by the case name). */
function opCase(name: string, op: string, tol: number, body: (c: Case) => Record<string, Tensor>, stateTol?: number) {
  const build = () => {
    const c = new Case(name);
    return c.done(body(c));
  };
  return { name, op, tol, stateTol, build } satisfies OpCase;
}

// ---------------------------------------------------------------------------------------------- the table

const MATRIX_TOL: Record<string, number> = {
  f32: 1e-5,
  bf16: 1e-5,
  f16: 1e-5,
  f8e4m3: 1e-5,
  q8: 2e-2,
  nvfp4: 2e-2,
  q4: 2e-2,
};
/** NVFP4 with f32 activations (more than 8 rows, nvfp4Prefill `f32`): the reference's dequantised weights exactly. */
const NVFP4_F32_TOL = 1e-6;

/** `c` with the bound that applies on `backend`. */
function boundOn(c: OpCase, backend: string): OpCase {
  return c.wasmTol !== undefined && kindOf(backend) === "wasm" ? { ...c, tol: c.wasmTol } : c;
}
/** q4 with f32 activations (`q4Activations: "f32"`): weights decode exactly, only f32 sums differ. */
const Q4_F32_TOL = 1e-6;
/** Whether this host runs q8 matmuls of more than 8 rows on int8 products (the kernels probe it). */
const INT8_PREFILL = (await probeQ8Paths()).int8Prefill;
const FLOAT_WEIGHTS: DType[] = ["f32", "bf16", "f16", "f8e4m3"];

function matmulCases(): OpCase[] {
  const cases: OpCase[] = [];
  const Ks = [1, 3, 17, 65, 257], Ms = [1, 3, 9], Ns = [1, 13, 33];
  for (const dt of FLOAT_WEIGHTS) {
    Ks.forEach((K, i) => {
      const M = Ms[i % 3], N = Ns[(i + 1) % 3];
      cases.push(opCase(`matmul ${dt} M=${M} K=${K} N=${N}`, "matmul", MATRIX_TOL[dt], (c) => {
        const x = c.f32("x", [[M, 16], K]);
        return { y: ops.matmul(c.g, x, c.weight("w", [N, K], dt, 1 / Math.sqrt(K))) };
      }));
    });
  }
  // K a multiple of 32 at decode sizes: the aligned decode paths (cuda's matvec reads 16 bytes of codes per lane).
  for (const dt of FLOAT_WEIGHTS) {
    for (const [M, K, N] of [[1, 64, 13], [5, 128, 9]]) {
      cases.push(opCase(`matmul ${dt} M=${M} K=${K} N=${N}`, "matmul", MATRIX_TOL[dt], (c) => {
        const x = c.f32("x", [[M, 16], K]);
        return { y: ops.matmul(c.g, x, c.weight("w", [N, K], dt, 1 / Math.sqrt(K))) };
      }));
    }
  }
  // FP8 with the block scales of a fused gate ‖ up (2) and of a tensor split in 3.
  for (const [M, K, N, blocks] of [[1, 65, 18, 2], [9, 17, 18, 2], [4, 33, 21, 3]]) {
    cases.push(opCase(`matmul f8e4m3 ${blocks} scale blocks M=${M} K=${K} N=${N}`, "matmul", 1e-5, (c) => {
      const x = c.f32("x", [[M, 16], K]);
      return { y: ops.matmul(c.g, x, c.weight("w", [N, K], "f8e4m3", 0.3, blocks)) };
    }));
  }
  // FP8 codes with exponent 0 (zeros, subnormals: 1 in 32) among small normals of both signs, all of like size
  // (exponents 0–2), so a chunk decoded on the wrong path is far outside the bound, and some 16-byte chunks of a row
  // hold one while others do not: decode with one test for 4 rows' chunks (M 1) or 2 (M 5's last row), a test per chunk
  // (M 3, M 5's first 4), K past whole chunks, and prefill.
  for (const [M, K, N] of [[1, 80, 13], [3, 72, 10], [5, 48, 11], [12, 40, 9]]) {
    cases.push(opCase(`matmul f8e4m3 zero and subnormal codes M=${M} K=${K} N=${N}`, "matmul", 1e-5, (c) => {
      const [r, x] = [c.values(3 * N * K), c.f32("x", [[M, 16], K])];
      const u = (i: number) => (r[i] + 1) / 2;
      const data = Uint8Array.from({ length: N * K }, (_, i) => {
        const e = u(3 * i + 1) < 1 / 32 ? 0 : u(3 * i + 1) < 0.5 ? 1 : 2;
        return (u(3 * i) < 0.5 ? 0x80 : 0) | (e << 3) | Math.min(7, Math.floor(u(3 * i + 2) * 8));
      });
      c.weights.set("w", { name: "w", shape: [N, K], dtype: "f8e4m3", data, scales: new Float32Array([1 / 64]) });
      return { y: ops.matmul(c.g, x, c.g.weight("w", [N, K], "f8e4m3")) };
    }));
  }
  // q8: K a multiple of 32 (its block); M ≤ 8 quantises activations, so does M > 8 where the host runs the int8
  // prefill path, else the weight dequantises exactly.
  for (const [M, K, N] of [[1, 32, 13], [5, 96, 33], [12, 288, 17], [3, 64, 1]]) {
    cases.push(opCase(`matmul q8 M=${M} K=${K} N=${N}`, "matmul", M > 8 && !INT8_PREFILL ? 1e-5 : 2e-2, (c) => {
      const x = c.f32("x", [[M, 16], K]);
      return { y: ops.matmul(c.g, x, c.weight("w", [N, K], "q8", 1 / Math.sqrt(K))) };
    }));
  }
  cases.push(...nvfp4MatmulCases());
  cases.push(...q4MatmulCases());
  // Prefill shapes over more than one 64 × 64 tile with M, N and K off it (cuda's tensor-core GEMM: K steps of 16).
  for (const [dt, M, K, N] of [["bf16", 70, 100, 75], ["f8e4m3", 67, 130, 66], ["q8", 66, 160, 70]] as const) {
    const tol = dt === "q8" && INT8_PREFILL ? 2e-2 : MATRIX_TOL.f32;
    cases.push(opCase(`matmul ${dt} prefill M=${M} K=${K} N=${N}`, "matmul", tol, (c) => {
      const x = c.f32("x", [[M, M + 4], K]);
      return { y: ops.matmul(c.g, x, c.weight("w", [N, K], dt, 1 / Math.sqrt(K))) };
    }));
  }
  cases.push(opCase("matmul f32 x rank 3 [T, 2, 17]", "matmul", 1e-5, (c) => {
    const x = c.f32("x", [[3, 8], 2, 17]);
    return { y: ops.matmul(c.g, x, c.weight("w", [7, 17], "f32")) };
  }));
  return cases;
}

/**
 * NVFP4 (K a multiple of its 16-block, as the format requires): decode shapes (M ≤ 8, int8 activations per
 * 32-block: the q8 bound) and prefill shapes (more rows: f32 activations under the conformance tuning, ≤ 1e-6;
 * int8 in the test below); K = 48 and 272 end on a half activation block, 272 has an odd number of f8 blocks;
 * `globals` 2 gives a fused gate ‖ up its two global scales.
 */
export function nvfp4MatmulCases(): OpCase[] {
  const cases: OpCase[] = [];
  const shapes = [[1, 16, 13, 1], [1, 272, 34, 2], [3, 48, 17, 1], [5, 1040, 18, 2], [8, 64, 1, 1]];
  shapes.push([9, 272, 13, 1], [20, 48, 34, 2], [33, 1040, 40, 2], [68, 144, 70, 1]);
  for (const [M, K, N, globals] of shapes) {
    const tol = M > 8 ? MATRIX_TOL.f32 : MATRIX_TOL.nvfp4;
    const c = opCase(`matmul nvfp4 M=${M} K=${K} N=${N} globals ${globals}`, "matmul", tol, (c) => {
      const x = c.f32("x", [[M, M + 8], K]);
      return { y: ops.matmul(c.g, x, c.weight("w", [N, K], "nvfp4", 1 / Math.sqrt(K), globals)) };
    });
    cases.push(M > 8 ? { ...c, wasmTol: NVFP4_F32_TOL } : c);
  }
  // Zero, subnormal, small normal and negative f8 block scales (codes 0x00–0x0f and their negatives, of like size):
  // the decoders' edge cases (released checkpoints hold positive normal codes, and some zeros).
  for (const M of [2, 12]) {
    const [K, N] = [256, 24], codes = [0, 1, 3, 5, 7, 0x08, 0x0b, 0x0f, 0x80, 0x81, 0x86, 0x88, 0x8f];
    const c = opCase(
      `matmul nvfp4 zero, subnormal and negative block scales M=${M}`,
      "matmul",
      M > 8 ? MATRIX_TOL.f32 : 2e-2,
      (c) => {
        const data = Uint8Array.from(c.values((N * K) / 2), (v) => Math.floor((v + 1) * 128) & 0xff);
        const scales = Float32Array.from(
          { length: (N * K) / 16 },
          (_, b) => nvfp4BlockScale(codes[(b + (b >> 4)) % codes.length], 1),
        );
        c.weights.set("w", {
          name: "w",
          shape: [N, K],
          dtype: "nvfp4",
          data,
          scales,
          globalScales: new Float32Array([1]),
        });
        return { y: ops.matmul(c.g, c.f32("x", [[M, M + 8], K]), c.g.weight("w", [N, K], "nvfp4")) };
      },
    );
    cases.push(M > 8 ? { ...c, wasmTol: NVFP4_F32_TOL } : c);
  }
  return cases;
}

/**
 * q4 matmuls: decode shapes (M ≤ 8) and prefill shapes, odd K, K not a multiple of the 32-block, K past the prefill's
 * 1024-column block. In the table with int8 activations (the default; q8's bound); {@link Q4_F32_CASES} runs them
 * again with f32 activations at {@link Q4_F32_TOL}.
 */
function q4MatmulCases(): OpCase[] {
  const shapes = [[1, 32, 13], [3, 17, 33], [8, 65, 16], [1, 257, 9], [9, 96, 17], [12, 257, 33], [40, 1050, 24], [
    70,
    100,
    66,
  ], [
    5,
    1050,
    3,
  ]];
  return shapes.map(([M, K, N]) =>
    opCase(`matmul q4 M=${M} K=${K} N=${N}`, "matmul", MATRIX_TOL.q4, (c) => {
      const x = c.f32("x", [[M, Math.max(M, 48)], K]);
      return { y: ops.matmul(c.g, x, c.weight("w", [N, K], "q4", 1 / Math.sqrt(K))) };
    })
  );
}

function elementwiseCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const D of [1, 3, 17, 65, 257]) {
    for (const wdt of ["f32", "bf16"] as DType[]) {
      cases.push(opCase(`rms_norm D=${D} w ${wdt}`, "rms_norm", 2e-6, (c) => {
        const x = c.f32("x", [[D % 5 + 1, 9], D], 3);
        const w = c.weight("w", [D], wdt, 1);
        return { y: ops.rmsNorm(c.g, x, w, { eps: 1e-6 }) };
      }));
    }
  }
  // Where eps decides the result: an all-zero row (0 / sqrt(eps) = 0, not NaN) and rows of tiny values, whose
  // mean square (~1e-12) is far below eps = 1e-6, so a kernel that ignores eps is off by ~1000×.
  for (const [label, scale] of [["all-zero rows", 0], ["tiny rows (eps dominates)", 1e-6]] as const) {
    cases.push(opCase(`rms_norm ${label}`, "rms_norm", 2e-6, (c) => {
      const x = c.f32("x", [[3, 4], 40], 1);
      c.inputs.x = (c.inputs.x as Float32Array).map((v, i) => i < 40 ? (scale === 0 ? 0 : v * 1e-6) : v * scale || 0);
      return { y: ops.rmsNorm(c.g, x, c.weight("w", [40], "f32", 1), { eps: 1e-6 }) };
    }));
  }
  for (const shape of [[[3, 8], 37], [[1, 1], 1], [[5, 5], 4, 9]] as (number | [number, number])[][]) {
    for (const op of ["add", "mul"] as const) {
      cases.push(opCase(`${op} ${JSON.stringify(shape)}`, op, 1e-7, (c) => {
        const a = c.f32("a", shape), b = c.f32("b", shape);
        return { y: op === "add" ? ops.add(c.g, a, b) : ops.mul(c.g, a, b) };
      }));
    }
  }
  for (const F of [1, 13, 64]) {
    cases.push(
      opCase(`swiglu F=${F}`, "swiglu", 2e-6, (c) => ({ y: ops.swiglu(c.g, c.f32("x", [[3, 4], 2 * F], 4)) })),
    );
  }
  for (const n of [1, 33, 1000]) {
    // The kernel's erfc approximation: |Δ| ≤ 1e-6·|x|.
    cases.push(opCase(`gelu n=${n}`, "gelu", 1e-5, (c) => ({ y: ops.gelu(c.g, c.f32("x", [[2, 2], n], 5)) })));
  }
  return cases;
}

function helperCases(): OpCase[] {
  return [
    opCase("slice f32 [T, 3, 20] 5..17", "slice", 0, (c) => {
      return { y: ops.slice(c.g, c.f32("x", [[4, 8], 3, 20]), { start: 5, end: 17 }) };
    }),
    opCase(
      "slice f32 [T, 7] 0..1",
      "slice",
      0,
      (c) => ({ y: ops.slice(c.g, c.f32("x", [[5, 5], 7]), { start: 0, end: 1 }) }),
    ),
    opCase("slice i32 [T, 6] 2..5", "slice", 0, (c) => {
      const x = c.i32("x", Array.from({ length: 18 }, (_, i) => i * 7 - 30), [sym("T", 4), 6]);
      return { y: ops.slice(c.g, x, { start: 2, end: 5 }) };
    }),
    opCase("concat [T, 3, 5] ‖ [T, 3, 7]", "concat", 0, (c) => {
      return { y: ops.concat(c.g, [c.f32("a", [[2, 4], 3, 5]), c.f32("b", [[2, 4], 3, 7])]) };
    }),
    opCase("concat [T, 1] ‖ [T, 2] ‖ [T, 3]", "concat", 0, (c) => {
      return { y: ops.concat(c.g, [c.f32("a", [[3, 3], 1]), c.f32("b", [[3, 3], 2]), c.f32("c", [[3, 3], 3])]) };
    }),
    opCase("reshape [T, 12] → [T, 3, 4]", "reshape", 0, (c) => {
      const x = c.f32("x", [[3, 5], 12]);
      return { y: ops.reshape(c.g, x, { shape: [x.shape[0], 3, 4] }) };
    }),
    opCase("reshape i32 [T, 4] → [T, 2, 2]", "reshape", 0, (c) => {
      const T = sym("T", 3), x = c.i32("x", [1, -2, 3, 4, 5, 6, 7, 8], [T, 4]);
      return { y: ops.reshape(c.g, x, { shape: [T, 2, 2] }) };
    }),
    opCase("reshape bf16 weight [5, 3] → [15] (an odd count of halves)", "reshape", 0, (c) => {
      return { y: ops.reshape(c.g, c.weight("w", [5, 3], "bf16"), { shape: [15] }) };
    }),
    opCase("scatter_rows [T, 9] rows with a repeat", "scatter_rows", 0, (c) => {
      const I = sym("I", 5), x = c.f32("x", [[7, 8], 9]), rows = c.i32("rows", [6, 0, 2, 6], [I]);
      c.inputs.src = c.values(4 * 9);
      return { y: ops.scatterRows(c.g, x, rows, c.g.input("src", [I, 9], "f32")) };
    }),
    opCase("write_rows into state, a repeat and a skipped row", "write_rows", 0, (c) => {
      const R = sym("R", 6), store = c.cache("store", [9, 7], "f32");
      const rows = c.i32("rows", [8, 0, -1, 8, 3], [R]);
      c.inputs.src = c.values(5 * 7);
      return { y: ops.writeRows(c.g, store, rows, c.g.input("src", [R, 7], "f32")) };
    }),
    opCase("write_rows into state [9, 2, 3] (rows of the leading dim)", "write_rows", 0, (c) => {
      const R = sym("R", 4), store = c.cache("store", [9, 2, 3], "f32");
      c.inputs.src = c.values(3 * 6);
      return { y: ops.writeRows(c.g, store, c.i32("rows", [7, 1, 8], [R]), c.g.input("src", [R, 2, 3], "f32")) };
    }),
    opCase("gather_rows [T, 3, 5] rows with repeats", "gather_rows", 0, (c) => {
      const x = c.f32("x", [[6, 8], 3, 5]), rows = c.i32("rows", [5, 0, 5, 2], [sym("R", 6)]);
      return { y: ops.gatherRows(c.g, x, rows) };
    }),
  ];
}

function ropeCases(): OpCase[] {
  const yarn = { factor: 128, originalMaxPositionEmbeddings: 8192, betaFast: 32, betaSlow: 1 };
  return [
    opCase("rope [T, 3, 16] positions up to 1e6, yarn", "rope", 2e-6, (c) => {
      const pos = c.i32("pos", [0, 1, 17, 8191, 100_000, 999_999], [sym("T", 8)]);
      const x = c.f32("x", [[6, 8], 3, 16]);
      return { y: ops.rope(c.g, x, pos, { theta: 10000, yarn }) };
    }),
    opCase("rope [T, 6] magnitude 1.3", "rope", 2e-6, (c) => {
      const pos = c.i32("pos", [3, 4, 5], [sym("T", 4)]);
      return { y: ops.rope(c.g, c.f32("x", [[3, 4], 6]), pos, { theta: 500, magnitude: 1.3 }) };
    }),
    opCase("rope 2-D positions [T, 2], pairs split 2 | 2", "rope", 2e-6, (c) => {
      const pos = c.i32("pos", [0, 0, 1, 3, 7, 2], [sym("T", 3), 2]);
      const x = c.f32("x", [[3, 3], 2, 8]);
      return { y: ops.rope(c.g, x, pos, { theta: 100, pairAxis: [0, 0, 1, 1] }) };
    }),
    opCase("attn_temperature across the original length", "attn_temperature", 2e-7, (c) => {
      const pos = c.i32("pos", [0, 3, 4, 9, 40, 41, 1000], [sym("T", 8)]);
      return { y: ops.attnTemperature(c.g, c.f32("x", [[7, 8], 2, 5]), pos, { beta: 0.1, original: 4 }) };
    }),
  ];
}

type MlaGeom = { H: number; dn: number; dr: number; dv: number; kvr: number; bs: number };
const MLA_ODD: MlaGeom = { H: 3, dn: 6, dr: 4, dv: 5, kvr: 12, bs: 4 };
const MLA_POW2: MlaGeom = { H: 4, dn: 16, dr: 16, dv: 16, kvr: 32, bs: 8 };
const MLA_WIDE: MlaGeom = { H: 3, dn: 32, dr: 16, dv: 44, kvr: 96, bs: 16 };

/**
 * MLA over two sequences with scattered block tables. `history[s]` positions of sequence s are already cached
 * (from the initial cache contents); `queries[s]` new tokens follow them. The two sequences' tokens interleave,
 * or with `runs` come as one run per sequence (sequence 1 first), as chunked prefills do.
 */
function mlaCase(
  label: string,
  m: MlaGeom,
  wdt: DType,
  cdt: DType,
  history: [number, number],
  queries: [number, number],
  opts: { form?: "absorbed" | "naive"; runs?: boolean; order?: [number, number][] } = {},
): OpCase {
  const form = opts.form ?? "absorbed";
  const name = `mla_attention ${label} ${wdt} cache ${cdt} H=${m.H} kvr=${m.kvr} bs=${m.bs}`;
  return opCase(name, "mla_attention", MLA_TOL, (c) => {
    const mb = Math.ceil((Math.max(history[0] + queries[0], history[1] + queries[1]) + 1) / m.bs);
    const nb = 2 * mb + 3;
    // Blocks handed out in a shuffled order: the op must follow the table.
    const perm = Array.from({ length: nb }, (_, i) => i);
    for (let i = nb - 1; i > 0; i--) {
      const j = Math.floor(c.r() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const seq: number[] = [], pos: number[] = [];
    if (opts.order) { // (sequence, tokens) runs in this order; each sequence continues where it left off
      const next = [...history];
      for (const [s, n] of opts.order) for (let i = 0; i < n; i++) seq.push(s), pos.push(next[s]++);
    } else if (opts.runs) {
      for (const s of [1, 0]) for (let i = 0; i < queries[s]; i++) seq.push(s), pos.push(history[s] + i);
    } else {
      for (let i = 0; i < Math.max(...queries); i++) {
        for (const s of [1, 0]) if (i < queries[s]) seq.push(s), pos.push(history[s] + i);
      }
    }
    const T = sym("T", seq.length + 2), S = sym("S", 2);
    const q = c.f32("q", [[seq.length, seq.length + 2], m.H, m.dn + m.dr]);
    const ckv = c.f32("ckv", [[seq.length, seq.length + 2], m.kvr]);
    const kpe = c.f32("kpe", [[seq.length, seq.length + 2], m.dr]);
    const wkvb = c.weight("wkvb", [m.H * (m.dn + m.dv), m.kvr], wdt, 1 / Math.sqrt(m.kvr));
    const batch = {
      cache: c.cache("cache", [nb, m.bs, m.kvr + m.dr], cdt),
      seq: c.i32("seq", seq, [T]),
      pos: c.i32("pos", pos, [T]),
      blockTable: c.i32("blockTable", perm.slice(0, 2 * mb), [S, mb]),
    };
    const rows = ops.mlaCacheWrite(c.g, { ckv, kpe, ...batch });
    const out = ops.mlaAttention(c.g, { q, wkvb, ...batch }, { scale: 1 / Math.sqrt(m.dn + m.dr), form });
    return { y: out, rows };
  }, 0);
}

/**
 * MLA's bound on every backend: weights decode exactly (q8 with the f32 prefill path, see `runOpCase`) and a bf16
 * cache holds the same values as the reference's, so only f32 accumulation order differs (measured ≤ 2e-6).
 */
const MLA_TOL = 2e-5;

/** The cache write on its own: scattered blocks, a bf16 cache's rounding (exact: state tolerance 0). */
function cacheWriteCases(): OpCase[] {
  return [["f32", 5, 6], ["bf16", 9, 20], ["bf16", 1, 70]].map(([cdt, T, width]) =>
    opCase(`mla_cache_write cache ${cdt} T=${T} row ${width}`, "mla_cache_write", 0, (c) => {
      const kvr = (width as number) - 4, Tn = T as number;
      const batch = {
        cache: c.cache("cache", [7, 4, width as number], cdt as DType),
        seq: c.i32("seq", Array.from({ length: Tn }, (_, i) => i % 2), [sym("T", Tn + 1)]),
        pos: c.i32("pos", Array.from({ length: Tn }, (_, i) => 3 + Math.floor(i / 2) * 2), [sym("T", Tn + 1)]),
        blockTable: c.i32("blockTable", [6, 2, 0, 5, 1, 3, 4, 2], [sym("S", 2), 4]),
      };
      const ckv = c.f32("ckv", [[Tn, Tn + 1], kvr], 3), kpe = c.f32("kpe", [[Tn, Tn + 1], 4], 3);
      return { rows: ops.mlaCacheWrite(c.g, { ckv, kpe, ...batch }) };
    }, 0)
  );
}

function mlaCases(): OpCase[] {
  return [
    ...cacheWriteCases(),
    ...mlaPrefillCases(),
    mlaCase("prefill", MLA_ODD, "f32", "f32", [0, 0], [7, 4]),
    mlaCase("prefill", MLA_POW2, "bf16", "f32", [0, 0], [9, 5]),
    mlaCase("prefill naive form", MLA_ODD, "f32", "f32", [0, 0], [5, 3], { form: "naive" }),
    mlaCase("chunk after history", MLA_ODD, "f8e4m3", "f32", [5, 2], [3, 1]),
    mlaCase("chunk after history", MLA_POW2, "q8", "f32", [11, 20], [6, 1]),
    mlaCase("decode", MLA_ODD, "f32", "f32", [9, 2], [1, 1]),
    mlaCase("decode", MLA_POW2, "f8e4m3", "f32", [30, 17], [1, 1]),
    mlaCase("decode", MLA_POW2, "bf16", "bf16", [12, 7], [1, 1]),
    mlaCase("prefill", MLA_ODD, "f32", "bf16", [0, 3], [6, 2]),
    // Long enough for token blocks (several tokens per work item): one sequence, then two interleaved.
    mlaCase("long prefill one sequence", MLA_POW2, "f32", "f32", [3, 0], [29, 0]),
    mlaCase("long prefill", MLA_ODD, "bf16", "f32", [0, 0], [12, 9]),
    ...mlaDecodeCases(),
    // Past the wasm backend's default split length: split decode without forcing it.
    mlaCase("decode split by default", MLA_POW2, "q8", "bf16", [300, 257], [1, 1]),
  ];
}

/**
 * Prefill runs long enough for the wasm backend's naive (expanded) MLA prefill by default, after a cached history,
 * across its 256-row context tiles, next to single tokens of another sequence, and split by them; the wasm test below
 * also runs every MLA case with the naive path forced on (single tokens too) and off.
 */
function mlaPrefillCases(): OpCase[] {
  return [
    mlaCase("prefill runs", MLA_POW2, "f32", "f32", [0, 5], [70, 66], { runs: true }),
    mlaCase("prefill run after history, one decode", MLA_POW2, "q8", "bf16", [290, 9], [75, 1], { runs: true }),
    mlaCase("prefill runs", MLA_ODD, "f8e4m3", "f32", [3, 0], [67, 64], { runs: true }),
    mlaCase("prefill run past a context tile", MLA_POW2, "bf16", "f32", [0, 3], [300, 1], { runs: true }),
    mlaCase("prefill run first, then one token of another sequence", MLA_POW2, "f32", "f32", [9, 290], [1, 75], {
      runs: true,
    }),
    mlaCase("two prefill runs of one sequence around another's tokens", MLA_POW2, "f32", "f32", [250, 17], [130, 5], {
      order: [[0, 65], [1, 5], [0, 65]],
    }),
    mlaCase("prefill run between single tokens, odd head sizes", MLA_WIDE, "q8", "f32", [100, 7], [300, 3], {
      order: [[1, 2], [0, 300], [1, 1]],
    }),
  ];
}

/**
 * Decode at context lengths off the 64-row tiles and block sizes, one and two tokens per sequence; the wasm test
 * below also runs them with its split decode forced on and off.
 */
function mlaDecodeCases(): OpCase[] {
  return [
    mlaCase("decode long", MLA_ODD, "f32", "f32", [70, 3], [1, 1]),
    mlaCase("decode long", MLA_POW2, "q8", "bf16", [129, 64], [1, 1]),
    mlaCase("decode long one sequence", MLA_POW2, "bf16", "f32", [200, 0], [1, 0]),
    mlaCase("decode long, 2 tokens each", MLA_ODD, "f8e4m3", "f32", [65, 1], [2, 2]),
  ];
}

function moeCase(
  dt: DType,
  T: number,
  E: number,
  K: number,
  D: number,
  F: number,
  blocks = 1,
  tol = MATRIX_TOL[dt],
): OpCase {
  const scales = dt === "f8e4m3" || dt === "nvfp4"
    ? ` (${blocks === E ? "per-expert" : blocks === 2 * E ? "gate/up per expert" : blocks} scales)`
    : "";
  const name = `moe_experts ${dt}${scales} T=${T} top ${K} of ${E} D=${D} F=${F}`;
  // q8 quantises activations: always with few tokens per expert, with many where the host has the int8 prefill path.
  // NVFP4 with many tokens per expert runs f32 activations under the conformance tuning (the reference's values).
  const f32Path = dt === "nvfp4" && T * K / E > 8;
  const c = opCase(name, "moe_experts", f32Path ? MATRIX_TOL.f32 : tol, (c) => {
    const x = c.f32("x", [[T, T + 3], D]);
    const logits = c.f32("logits", [[T, T + 3], E], 3);
    const ids = ops.moeTopK(c.g, logits, { topK: K }), weights = ops.moeGate(c.g, logits, ids);
    const gateUp = c.weight("gate_up", [E, 2 * F, D], dt, 1 / Math.sqrt(D), blocks);
    const down = c.weight("down", [E, D, F], dt, 1 / Math.sqrt(F), dt === "f8e4m3" || dt === "nvfp4" ? E : 1);
    return { y: ops.moeExperts(c.g, x, ids, weights, gateUp, down), ids, weights };
  });
  return f32Path ? { ...c, wasmTol: NVFP4_F32_TOL } : c;
}

/** Routing alone: ids compare exactly, weights at f32 rounding; logits with ties (ties → the lower id). */
function routeCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const [T, E, K, ties] of [[9, 8, 2, false], [3, 5, 5, false], [6, 128, 4, false], [4, 8, 4, true]] as const) {
    const label = `T=${T} top ${K} of ${E}${ties ? " with ties" : ""}`;
    cases.push(opCase(`moe_topk ${label}`, "moe_topk", 0, (c) => {
      const logits = routerLogits(c, T, E, ties);
      return { ids: ops.moeTopK(c.g, logits, { topK: K }) };
    }));
    cases.push(opCase(`moe_gate ${label}`, "moe_gate", 1e-6, (c) => {
      const logits = routerLogits(c, T, E, ties);
      // Ids in an order of their own (not the top-k): the gate must follow the ids it is given.
      c.inputs.ids = Int32Array.from({ length: T * K }, (_, i) => (i * 7 + Math.floor(i / K)) % E);
      return { y: ops.moeGate(c.g, logits, c.g.input("ids", [sym("T", T + 1), K], "i32")) };
    }));
  }
  return cases;
}

/** Router logits `[T, E]` (T symbolic); with `ties`, values on a coarse grid so equal probabilities occur. */
function routerLogits(c: Case, T: number, E: number, ties: boolean): Tensor {
  const t = c.f32("logits", [[T, T + 1], E], 3);
  if (ties) c.inputs.logits = (c.inputs.logits as Float32Array).map((v) => Math.round(v));
  return t;
}

function moeCases(): OpCase[] {
  return [
    ...routeCases(),
    moeCase("f32", 1, 8, 2, 24, 16),
    moeCase("f32", 20, 8, 2, 24, 16),
    moeCase("bf16", 3, 16, 4, 33, 13),
    moeCase("bf16", 30, 16, 4, 33, 13),
    moeCase("f8e4m3", 2, 8, 2, 17, 24, 8),
    moeCase("f8e4m3", 20, 8, 2, 17, 24, 16),
    moeCase("f8e4m3", 5, 16, 4, 40, 8, 32),
    moeCase("q8", 1, 8, 2, 32, 32),
    moeCase("q8", 6, 16, 4, 64, 32),
    moeCase("q8", 40, 4, 2, 64, 32), // ~20 tokens per expert: the int8 prefill path over gathered rows
    ...nvfp4MoeCases(),
    ...q4MoeCases(),
    ...groupedMoeCases(),
  ];
}

/**
 * Shapes for experts grouped per expert (webgpu's kernels: chunks of 8 pairs per expert × tiles of 64 features,
 * the reduction staged 64 values at a time): most of 32 experts empty; a router skewed onto two experts (37
 * tokens each: four full chunks and a partial one, six experts empty); D and F past one tile and one slice.
 */
function groupedMoeCases(): OpCase[] {
  return [
    moeCase("f16", 9, 32, 2, 130, 70),
    skewedMoeCase("bf16", 37, 8, 2, 72, 66),
    skewedMoeCase("q8", 37, 8, 2, 96, 64),
  ];
}

/** `moeCase` with router logits pushed onto experts 3 and 5, so every token picks both. */
function skewedMoeCase(dt: DType, T: number, E: number, K: number, D: number, F: number): OpCase {
  const name = `moe_experts ${dt} skewed onto 2 experts T=${T} top ${K} of ${E} D=${D} F=${F}`;
  return opCase(name, "moe_experts", MATRIX_TOL[dt], (c) => {
    const x = c.f32("x", [[T, T + 3], D]);
    const logits = c.f32("logits", [[T, T + 3], E], 0.5);
    const l = c.inputs.logits as Float32Array;
    for (let t = 0; t < T; t++) l[t * E + 3] += 4, l[t * E + 5] += 3;
    const ids = ops.moeTopK(c.g, logits, { topK: K }), weights = ops.moeGate(c.g, logits, ids);
    const gateUp = c.weight("gate_up", [E, 2 * F, D], dt, 1 / Math.sqrt(D));
    const down = c.weight("down", [E, D, F], dt, 1 / Math.sqrt(F));
    return { y: ops.moeExperts(c.g, x, ids, weights, gateUp, down), ids, weights };
  });
}

/** Routed experts in NVFP4 (as the release stores them): decode and prefill token counts, one or two globals. */
export function nvfp4MoeCases(): OpCase[] {
  return [
    moeCase("nvfp4", 1, 8, 2, 32, 48, 16),
    moeCase("nvfp4", 6, 16, 4, 64, 32, 16),
    moeCase("nvfp4", 3, 8, 2, 48, 16, 8),
    moeCase("nvfp4", 60, 4, 2, 64, 48, 8), // ~30 tokens per expert: the prefill path over gathered rows
    moeCase("nvfp4", 40, 4, 2, 80, 32, 4),
  ];
}

/**
 * q4 experts: decode-sized groups, odd D and F (rows padded to whole blocks), and ~20 tokens per expert (prefill).
 * Two quantised products in a row (gate/up, then down on silu(g)·u, whose spiky blocks quantise worst): with int8
 * activations measured 7.5e-3 – 2.05e-2 over nine seeds and shapes (q8's experts 8.3e-3 – 1.2e-2 over five), so
 * the bound is 3e-2 where q8's matmuls have 2e-2; with f32 activations ≤ 4.1e-7.
 */
function q4MoeCases(): OpCase[] {
  return [
    moeCase("q4", 1, 8, 2, 32, 32, 1, 3e-2),
    moeCase("q4", 6, 16, 4, 65, 40, 1, 3e-2),
    moeCase("q4", 40, 4, 2, 64, 33, 1, 3e-2),
  ];
}

function embeddingCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (
    const [dt, D] of [["f32", 17], ["bf16", 33], ["f16", 33], ["f8e4m3", 17], ["q8", 64], ["q4", 65]] as [
      DType,
      number,
    ][]
  ) {
    cases.push(opCase(`embedding ${dt} D=${D}`, "embedding", 0, (c) => {
      const ids = c.i32("ids", [3, 0, 36, 3, 20], [sym("T", 8)]);
      return { y: ops.embedding(c.g, ids, c.weight("table", [37, D], dt)) };
    }));
  }
  return cases;
}

function sampleCases(): OpCase[] {
  // `masks` allowed-id masks (0: none, so `mask` is [0, W]): dense, sparse, a single id, then none (→ −1); each
  // with random bits past V, which must be ignored. Row r obeys mask r % (masks + 1) − 1 (−1: unmasked).
  const rows = (R: number, V: number, masks: number) =>
    opCase(`sample R=${R} V=${V} masks=${masks}`, "sample", 0, (c) => {
      const Rs = sym("R", R + 2), W = Math.ceil(V / 32);
      const t = [0, 0.7, 1, 1.5, 0.9, 0, 2, 0.3, 1];
      const k = [0, 0, 5, 40, 0, 3, 0, 1, 2];
      const p = [1, 0.9, 1, 0.5, 1, 1, 0.2, 1, 0.95];
      const pick = <T>(a: T[]) => Array.from({ length: R }, (_, i) => a[i % a.length]);
      const input = (name: string, values: number[]) => {
        c.inputs[name] = Float32Array.from(values);
        return c.g.input(name, [Rs], "f32");
      };
      c.inputs.logits = c.values(R * V, 4);
      const logits = c.g.input("logits", [Rs, V], "f32");
      const temperature = input("temperature", pick(t)), topP = input("topP", pick(p));
      const uniform = input("uniform", Array.from({ length: R }, () => c.r()));
      const topK = c.i32("topK", pick(k), [Rs]);
      const words = new Uint32Array(masks * W);
      for (let m = 0; m < masks; m++) {
        const density = [0.8, 0.05, 0, 0][m % 4];
        for (let id = 0; id < W * 32; id++) {
          const on = id >= V ? c.r() < 0.5 : m % 4 === 2 ? id === (7 * m + 3) % V : c.r() < density;
          if (on) words[m * W + (id >> 5)] |= 1 << (id & 31);
        }
      }
      const maskRow = c.i32("maskRow", Array.from({ length: R }, (_, r) => r % (masks + 1) - 1), [Rs]);
      const mask = c.i32("mask", Array.from(new Int32Array(words.buffer)), [sym("C", R), W]);
      return { ids: ops.sample(c.g, { logits, temperature, topK, topP, uniform, maskRow, mask }) };
    });
  return [rows(5, 300, 0), rows(9, 1000, 0), rows(9, 300, 4), rows(12, 1000, 3)];
}

/**
 * Vision ops: block-diagonal attention over uneven segments (one of length 1, some longer than the kernel's 16-row
 * query blocks and 64-row key tiles), head dims that are and are not multiples of 4, d ≠ dv; patch_merge with the
 * 2×2 merge (K = 4, the kernel's transposed path) and another K, with repeated rows.
 */
function visionCases(): OpCase[] {
  const cases: OpCase[] = [];
  // [segment lengths], H, d, dv, q and k amplitude (6: scores spread over ±50, so most weights flush to 0).
  const geoms: [number[], number, number, number, number][] = [
    [[3, 1, 3], 2, 8, 8, 2],
    [[20, 1, 24], 3, 16, 16, 2],
    [[40, 33], 2, 16, 16, 6],
    [[70, 1, 79], 2, 88, 88, 2],
    [[5, 9, 1, 2], 3, 12, 20, 2],
    [[1, 6, 4], 2, 5, 3, 2],
  ];
  for (const [lens, H, d, dv, amp] of geoms) {
    const N = lens.reduce((a, b) => a + b, 0);
    cases.push(
      opCase(
        `attention segments [${lens}] H=${H} d=${d} dv=${dv} q,k ±${amp}`,
        "attention",
        amp > 2 ? 5e-6 : 2e-6,
        (c) => {
          const segment = lens.flatMap((n, s) => new Array(n).fill(s));
          const q = c.f32("q", [[N, N + 3], H, d], amp), k = c.f32("k", [[N, N + 3], H, d], amp);
          const v = c.f32("v", [[N, N + 3], H, dv]);
          const seg = c.i32("segment", segment, [sym("T", N + 3)]);
          return { y: ops.attention(c.g, { q, k, v, segment: seg }, { scale: 1 / Math.sqrt(d) }) };
        },
      ),
    );
  }
  // attention_rows: queries of some rows (in any order, one segment of length 1) against keys in a longer state.
  for (
    const [lens, H, d, dv, picks] of [
      [[20, 1, 24], 3, 16, 16, [21, 0, 1, 2, 19, 20, 44, 30, 31]],
      [[40, 33], 2, 12, 20, [72, 71, 3, 39, 40]],
    ] as [number[], number, number, number, number[]][]
  ) {
    const N = lens.reduce((a, b) => a + b, 0), Q = picks.length;
    cases.push(opCase(`attention_rows segments [${lens}] rows [${picks}] H=${H}`, "attention_rows", 2e-6, (c) => {
      const segment = lens.flatMap((n, s) => new Array(n).fill(s));
      const q = c.f32("q", [[Q, Q + 2], H, d]);
      const k = c.cache("k", [N + 5, H, d], "f32"), v = c.cache("v", [N + 5, H, dv], "f32");
      const seg = c.i32("segment", segment, [sym("P", N + 5)]), rows = c.i32("rows", picks, [sym("T", Q + 2)]);
      return { y: ops.attentionRows(c.g, { q, k, v, segment: seg, rows }, { scale: 1 / Math.sqrt(d) }) };
    }));
  }
  for (
    const [P, C, K, index] of [[13, 9, 4, [0, 1, 4, 5, 12, 12, 3, 0, 7, 8, 11, 2]], [9, 8, 4, [8, 0, 1, 2]], [
      6,
      5,
      3,
      [5, 0, 1, 1, 2, 3, 4, 0, 5],
    ]] as [number, number, number, number[]][]
  ) {
    cases.push(opCase(`patch_merge P=${P} C=${C} K=${K}`, "patch_merge", 0, (c) => {
      const M = index.length / K, idx = c.i32("index", index, [sym("M", M + 1), K]);
      return { y: ops.patchMerge(c.g, c.f32("x", [[P, P + 2], C]), idx) };
    }));
  }
  return cases;
}

/** Every case, in table order. */
export const OP_CASES: readonly OpCase[] = [
  ...embeddingCases(),
  ...matmulCases(),
  ...elementwiseCases(),
  ...helperCases(),
  ...ropeCases(),
  ...mlaCases(),
  ...moeCases(),
  ...sampleCases(),
  ...visionCases(),
];

/** The q4 cases again, for the run with f32 activations: the reference's numbers up to f32 sums. */
const Q4_F32_CASES: readonly OpCase[] = [...q4MatmulCases(), ...q4MoeCases()].map((c) => ({
  ...c,
  name: `${c.name} (f32 activations)`,
  tol: Q4_F32_TOL,
}));

// ---------------------------------------------------------------------------------------------- running

/** What a run gives back: outputs by name and state by name, floats as f32 (ids as i32). */
export type CaseResult = { outputs: Record<string, Float32Array | Int32Array>; state: Record<string, Float32Array> };

function toF32(a: HostArray): Float32Array | Int32Array {
  if (a instanceof Uint16Array) return bf16ToF32(a);
  if (a instanceof Float32Array || a instanceof Int32Array) return a;
  throw new Error("unexpected host array");
}

/**
 * Runs a built case on `backends` (the first is the one under test; others take what it does not support) and
 * returns outputs and state. Weights stream from sources converted to the graph's dtype, as the model loader sends
 * them.
 */
export async function runOpCase(built: BuiltCase, backends: readonly Backend[]): Promise<CaseResult & { plan: Plan }> {
  const { graph } = built;
  const plan = schedule(graph, backends, { strict: backends.length === 1 });
  const ex = await PlanExecutor.create(graph, plan, backends, {
    weights: (w) => memorySource(built.weights.get(w.name)!, w.dtype),
  });
  try {
    for (const [name, values] of Object.entries(built.state)) {
      const s = plan.state.find((s) => s.name === name)!, decl = graph.inputs.find((i) => i.name === name)!;
      const stored = tensorDType(backends.find((b) => b.name === s.backend)!.caps, {
        kind: "state",
        dtype: decl.dtype,
      });
      ex.writeState(name, f32ToBytes(values, stored as FloatDType));
    }
    const raw = await ex.run({ inputs: built.inputs, vars: built.vars });
    const outputs: CaseResult["outputs"] = {}, state: CaseResult["state"] = {};
    for (const [name, a] of Object.entries(raw)) outputs[name] = toF32(a);
    for (const name of Object.keys(built.state)) state[name] = toF32(await ex.readState(name)) as Float32Array;
    return { outputs, state, plan };
  } finally {
    ex.dispose();
  }
}

/** Per-element slack of an expectation (a rounding that may go either way), by output name. */
type Slack = Record<string, Float64Array>;
const SLACK = new WeakMap<CaseResult, Slack>();

/**
 * For an `mla_attention` case with q8 W_kvb: replaces the reference's rows of the tokens the CPU kernels take on
 * the absorbed path (the step planner's choice at `naivePrefill`) with the quantised-latent expectation, and
 * records its slack.
 */
function q8MlaExpectation(built: BuiltCase, want: CaseResult, naivePrefill: number): void {
  const node = built.graph.nodes.find((n) => n.op === "mla_attention");
  const wkvb = node && built.weights.get(tensorTable(built.graph)[node.inputs[1]].name);
  if (!node || wkvb?.dtype !== "q8") return;
  const a = node.attrs as ops.MlaAttentionAttrs, seq = built.inputs.seq as Int32Array;
  const pos = built.inputs.pos as Int32Array, bt = built.inputs.blockTable as Int32Array;
  const tokens = planMla(seq, pos, { naivePrefill }).flatMap((r) =>
    r.kind === "absorbed" ? Array.from({ length: r.n }, (_, i) => r.start + i) : []
  );
  const cacheShape = tensorTable(built.graph)[node.inputs[2]].shape as number[];
  const cache = { data: want.state.cache, shape: cacheShape, dtype: "f32" as const };
  const table = { data: bt, shape: [2, bt.length / 2], dtype: "i32" as const };
  const q = built.inputs.q as Float32Array;
  const { values, slack } = q8AbsorbedRows(a, q, wkvb, cache, seq, pos, table, tokens);
  const y = want.outputs.y as Float32Array, w = a.heads * a.dv, s = new Float64Array(y.length);
  tokens.forEach((t, i) => {
    y.set(values[i], t * w);
    s.set(slack[i], t * w);
  });
  SLACK.set(want, { y: s });
}

/** Normalised error beyond the slack: `max(0, |g − e| − slack) / max|e|`. */
function slackError(g: ArrayLike<number>, e: ArrayLike<number>, slack: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < e.length; i++) {
    num = Math.max(num, Math.abs(g[i] - e[i]) - slack[i]);
    den = Math.max(den, Math.abs(e[i]));
  }
  return num / (den || 1);
}

/** Largest normalised error over a case's outputs and state (ids: Infinity on any mismatch). */
function compare(c: OpCase, got: CaseResult, want: CaseResult): { err: number; stateErr: number } {
  let err = 0, stateErr = 0;
  const slack = SLACK.get(want);
  for (const [name, w] of Object.entries(want.outputs)) {
    const g = got.outputs[name];
    if (w instanceof Int32Array) err = Math.max(err, g.every((v, i) => v === w[i]) ? 0 : Infinity);
    else if (slack?.[name]) err = Math.max(err, slackError(g, w, slack[name]));
    else err = Math.max(err, normalisedError(g, w));
  }
  for (const [name, w] of Object.entries(want.state)) {
    stateErr = Math.max(stateErr, normalisedError(got.state[name], w));
  }
  if (c.stateTol === undefined) err = Math.max(err, stateErr);
  return { err, stateErr };
}

// BACKEND_OPS_REPORT=1 prints each case's error (to set and document the bounds).
const REPORT = Deno.env.get("BACKEND_OPS_REPORT") === "1";
// BACKEND_OPS_THREADS=N runs the backends with N threads (default 2): other splits of the same work.
const THREADS = Number(Deno.env.get("BACKEND_OPS_THREADS") ?? 2);

/**
 * The wasm tuning of the conformance runs: q8 and NVFP4 prefill on f32 panels (the int8 q8 path has its own bit-level
 * tests, NVFP4's the test below).
 */
const TUNING: Partial<WasmTuning> = { q8Prefill: "f32", nvfp4Prefill: "f32" };

/**
 * Runs case `c` on `backend` (with the reference for anything else) and checks it against the reference alone. On
 * the CPU backend, a q8 MLA case's absorbed tokens are held to the quantised-latent expectation of
 * tests/mla_q8_emulation.ts (their own rounding), the other tokens to the reference.
 */
async function checkCase(c: OpCase, backend: Backend, reference: Backend, tuning = TUNING): Promise<void> {
  c = boundOn(c, backend.name);
  const built = c.build();
  const want = await runOpCase(built, [reference]);
  const got = await runOpCase(c.build(), [backend, reference]);
  if (backend.name.startsWith("wasm")) q8MlaExpectation(built, want, tuning.naivePrefill ?? 64);
  const { err, stateErr } = compare(c, got, want);
  if (REPORT) console.log(`${backend.name}\t${c.name}\t${err.toExponential(2)}\t${stateErr.toExponential(2)}`);
  assert(err <= c.tol, `${c.name}: normalised error ${err} > ${c.tol}`);
  if (c.stateTol !== undefined) assert(stateErr <= c.stateTol, `${c.name}: state error ${stateErr} > ${c.stateTol}`);
}

/**
 * What the WebGPU kernels do not run yet (a mixed plan runs them elsewhere), as "op dtype" (a case name's first two
 * words): the table must skip exactly these, so a kernel added or lost shows here.
 */
const WEBGPU_REFUSED: string[] = [];

for (const factory of BACKENDS.filter((f) => f.name !== "reference")) {
  const score = await factory.probe().catch((e) => {
    // The cuda column runs where a GPU is (bench/cuda_check.sh stage 1); elsewhere one line says why not.
    if (factory.name === "cuda") console.log(`backend ops: cuda skipped: ${(e as Error).message.split(". ")[0]}`);
    return 0;
  });
  Deno.test({
    name: `backend ops: ${factory.name} ≡ reference on ${OP_CASES.length} cases`,
    ignore: factory.name === "webgpu" ? WEBGPU_IGNORE : score <= 0,
    async fn(t) {
      const backend = await factory.create({ threads: THREADS, tuning: TUNING } as never);
      const reference = await referenceBackend.create();
      const skipped: string[] = [];
      try {
        for (const c of OP_CASES) {
          await t.step(c.name, async () => {
            const built = c.build();
            const node = built.graph.nodes.find((n) => n.op === c.op)!;
            const table = tensorTable(built.graph);
            if (!backend.supports(node, node.inputs.map((i) => table[i]))) {
              skipped.push(c.name);
              return;
            }
            const placed = schedule(built.graph, [backend, reference]).segments.find((s) => s.nodes.includes(node.id))!;
            assertEquals(placed.backend, backend.name, `${c.op} ran on ${placed.backend}`);
            await checkCase(c, backend, reference);
          });
        }
      } finally {
        backend.dispose();
        reference.dispose();
      }
      if (skipped.length) console.warn(`${factory.name} does not run: ${skipped.join("; ")}`);
      // The CPU backend runs the whole text model: nothing in the table may fall back.
      if (factory.name === "wasm") assertEquals(skipped, []);
      if (factory.name === "webgpu") {
        const kinds = new Set(skipped.map((name) => name.split(" ").slice(0, 2).join(" ")));
        assertEquals([...kinds].sort(), WEBGPU_REFUSED);
      }
    },
  });
}

Deno.test({
  name: `backend ops: wasm q4 with f32 activations ≡ reference ≤ ${Q4_F32_TOL}`,
  ignore: await wasmBackend.probe().catch(() => 0) <= 0,
  async fn(t) {
    const tuning: Partial<WasmTuning> = { ...TUNING, q4Activations: "f32" };
    const backend = await wasmBackend.create({ threads: THREADS, tuning } as never);
    const reference = await referenceBackend.create();
    try {
      for (const c of Q4_F32_CASES) await t.step(c.name, () => checkCase(c, backend, reference, tuning));
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: wasm prefill attention ≡ reference with the naive prefill forced on and off",
  ignore: await wasmBackend.probe().catch(() => 0) <= 0,
  async fn(t) {
    const tuning: Partial<WasmTuning> = { ...TUNING };
    const backend = await wasmBackend.create({ threads: THREADS, tuning } as never);
    const reference = await referenceBackend.create();
    try {
      for (const naivePrefill of [1, Infinity]) {
        for (const c of mlaCases()) {
          await t.step(`${c.name} (naive from ${naivePrefill})`, async () => {
            tuning.naivePrefill = naivePrefill;
            await checkCase(c, backend, reference, tuning);
          });
        }
      }
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: wasm decode attention ≡ reference with split decode forced on and off",
  ignore: await wasmBackend.probe().catch(() => 0) <= 0,
  async fn(t) {
    const tuning: Partial<WasmTuning> = { ...TUNING };
    const backend = await wasmBackend.create({ threads: THREADS, tuning } as never);
    const reference = await referenceBackend.create();
    try {
      for (const splitContext of [0, Infinity]) {
        for (const c of mlaDecodeCases()) {
          await t.step(`${c.name} (split from ${splitContext})`, async () => {
            tuning.splitContext = splitContext;
            await checkCase(c, backend, reference, tuning);
          });
        }
      }
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: wasm nvfp4 prefill on int8 products ≡ reference within the q8 bound",
  ignore: await wasmBackend.probe().catch(() => 0) <= 0,
  async fn(t) {
    const tuning: Partial<WasmTuning> = { ...TUNING, nvfp4Prefill: "int8" };
    const backend = await wasmBackend.create({ threads: THREADS, tuning } as never);
    const reference = await referenceBackend.create();
    try {
      for (const c of [...nvfp4MatmulCases(), ...nvfp4MoeCases()]) {
        await t.step(
          `${c.name} (int8 prefill)`,
          () => checkCase({ ...c, tol: MATRIX_TOL.nvfp4, wasmTol: undefined }, backend, reference),
        );
      }
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: webgpu with a 1 KiB binding limit (weights split by rows) ≡ reference",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    const backend = await webgpuBackend.create({ maxBindingBytes: 1024 } as never);
    const reference = await referenceBackend.create();
    // [40, 16] f32 weights are 2,560 B: three row ranges of 16, 16 and 8 rows, each its own dispatch; bf16 ones
    // hold twice the rows per range, FP8, q8 and q4 ones their codes then their scales in each range.
    const cases = [
      opCase("split matmul f32 M=3 K=16 N=40", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[3, 4], 16]), c.weight("w", [40, 16], "f32", 0.25)) };
      }),
      opCase("split matmul bf16 M=1 K=16 N=80", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[1, 2], 16]), c.weight("w", [80, 16], "bf16", 0.25)) };
      }),
      opCase("split matmul bf16 M=2 K=17 N=75 (rows end inside words)", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[2, 3], 17]), c.weight("w", [75, 17], "bf16", 0.25)) };
      }),
      // Activations must fit one binding too: 12 rows of 16 in, 20 out, over a weight of two parts.
      opCase("split matmul f32 M=12 K=16 N=20 (the tiled GEMM, part by part)", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[12, 12], 16]), c.weight("w", [20, 16], "f32", 0.25)) };
      }),
      opCase("split matmul f16 M=2 K=17 N=75", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[2, 3], 17]), c.weight("w", [75, 17], "f16", 0.25)) };
      }),
      opCase("split matmul f8e4m3 M=2 K=17 N=100 (codes end inside words; scales per part)", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[2, 2], 17]), c.weight("w", [100, 17], "f8e4m3", 0.25, 4)) };
      }),
      opCase("split matmul nvfp4 M=2 K=32 N=90", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[2, 2], 32]), c.weight("w", [90, 32], "nvfp4", 0.25)) };
      }),
      opCase("split matmul q8 M=2 K=64 N=40", "matmul", 2e-2, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[2, 3], 64]), c.weight("w", [40, 64], "q8", 0.125)) };
      }),
      opCase("split matmul q4 M=2 K=65 N=40 (3 blocks a row: half a scale word of padding)", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[2, 3], 65]), c.weight("w", [40, 65], "q4", 0.125)) };
      }),
      opCase("split matmul q4 M=3 K=64 N=40", "matmul", 1e-5, (c) => {
        return { y: ops.matmul(c.g, c.f32("x", [[3, 3], 64]), c.weight("w", [40, 64], "q4", 0.125)) };
      }),
      opCase("split embedding q4 [64, 31] (rows padded to a block), ids in every part", "embedding", 0, (c) => {
        const ids = c.i32("ids", [63, 0, 50, 51, 31, 52], [sym("T", 8)]);
        return { y: ops.embedding(c.g, ids, c.weight("table", [64, 31], "q4")) };
      }),
      opCase("split embedding q8 [40, 32], ids in every part", "embedding", 0, (c) => {
        const ids = c.i32("ids", [39, 0, 17, 16, 31, 32], [sym("T", 8)]);
        return { y: ops.embedding(c.g, ids, c.weight("table", [40, 32], "q8")) };
      }),
      opCase("split embedding f32 [40, 16], ids in every part", "embedding", 0, (c) => {
        const ids = c.i32("ids", [39, 0, 17, 16, 31, 32], [sym("T", 8)]);
        return { y: ops.embedding(c.g, ids, c.weight("table", [40, 16], "f32")) };
      }),
    ];
    try {
      for (const c of cases) {
        await t.step(c.name, async () => {
          const built = c.build();
          const plan = schedule(built.graph, [backend, reference]);
          const parts = plan.weights.find((w) => w.parts?.webgpu)?.parts?.webgpu;
          assert((parts?.length ?? 0) > 1, "the weight is split");
          await checkCase(c, backend, reference);
        });
      }
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: webgpu moe_experts grouped per expert is reproducible (same bits on every run)",
  ignore: WEBGPU_IGNORE,
  async fn() {
    // The grouped lists' order follows the device's atomics; the results must not (each value has one thread and a
    // fixed order, the slots of a token are summed in slot order).
    const backend = await webgpuBackend.create();
    const reference = await referenceBackend.create();
    try {
      const c = skewedMoeCase("bf16", 37, 8, 2, 72, 66);
      const runs: Float32Array[] = [];
      for (let i = 0; i < 3; i++) {
        runs.push((await runOpCase(c.build(), [backend, reference])).outputs.y as Float32Array);
      }
      assert(runs.every((y) => y.every((v, i) => Object.is(v, runs[0][i]))), "bitwise equal runs");
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: webgpu MLA split over the context (chunks forced small) ≡ reference; prefill stays one-pass",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    const reference = await referenceBackend.create();
    // Chunks of 16 positions (several per context, a last one partial), of 1 (raised to ctx / 32: the cap on
    // chunks), and 100 (past the 64-position tiles). Steps of ≤ 16 tokens whose longest context is over a chunk
    // split; the others (the 21-token prefill) take the one-pass kernel. [case, longest context, tokens]
    const cases: [OpCase, number, number][] = [
      [mlaCase("decode long", MLA_ODD, "f32", "f32", [70, 3], [1, 1]), 71, 2],
      [mlaCase("decode long", MLA_POW2, "q8", "bf16", [129, 64], [1, 1]), 130, 2],
      [mlaCase("decode long one sequence", MLA_POW2, "bf16", "f32", [200, 0], [1, 0]), 201, 1],
      [mlaCase("decode long, 2 tokens each", MLA_ODD, "f8e4m3", "f32", [65, 1], [2, 2]), 67, 4],
      [mlaCase("chunk after history", MLA_POW2, "q8", "f32", [11, 20], [6, 1]), 21, 7],
      [mlaCase("long prefill", MLA_ODD, "bf16", "f32", [0, 0], [12, 9]), 12, 21],
      // Mistral Small 4's dims (32 heads, latent 256 + rope 64, values 128): groups of 8 heads at full size.
      [
        mlaCase("decode MS4 dims", { H: 32, dn: 64, dr: 64, dv: 128, kvr: 256, bs: 16 }, "bf16", "bf16", [150, 90], [
          1,
          1,
        ]),
        151,
        2,
      ],
      // 10 heads: a chunk workgroup takes 8, so the second group has 2 and 6 idle places.
      [
        mlaCase("decode 10 heads", { H: 10, dn: 4, dr: 4, dv: 6, kvr: 8, bs: 4 }, "bf16", "f32", [70, 40], [1, 1]),
        71,
        2,
      ],
    ];
    try {
      for (const splitChunk of [16, 1, 100]) {
        const { adapter, dispatches } = await dispatchCountingAdapter();
        const backend = await webgpuBackend.create({ adapter, webgpuTuning: { splitChunk } } as never);
        try {
          for (const [c, longest, tokens] of cases) {
            await t.step(`${c.name} (chunks of ${splitChunk})`, async () => {
              dispatches.clear();
              await checkCase(c, backend, reference);
              const chunks = dispatchesOf(dispatches, "// mla_split chunk");
              assertEquals(chunks > 0, tokens <= 16 && longest > splitChunk, `split chunk dispatches: ${chunks}`);
            });
          }
        } finally {
          backend.dispose();
        }
      }
    } finally {
      reference.dispose();
    }
  },
});

Deno.test({
  name: "backend ops: webgpu tiled matmuls (matvec ≤ 8 rows, 64×64 GEMM) off the tiles, every dtype, f16 both ways",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    const reference = await referenceBackend.create();
    // K per dtype: off the GEMM's 16-steps where the format allows (q8 blocks are 32, NVFP4 16), q4 off its
    // 32-blocks; M and N off the 64-tiles and the matvec's 4 rows, M = 8 the matvec's last, 9 the GEMM's first.
    // A long K (second) gives the matvec several threads a row, whose sums meet in workgroup memory.
    const K: Record<string, number[]> = {
      f32: [37, 300],
      bf16: [37, 301],
      f16: [51, 257],
      f8e4m3: [37, 300],
      q8: [96, 288],
      nvfp4: [48, 272],
      q4: [65, 1050],
    };
    const shapes = [[1, 5, 0], [8, 13, 0], [9, 67, 0], [70, 130, 0], [1, 6, 1], [5, 9, 1], [12, 7, 1]];
    const cases = Object.entries(K).flatMap(([dt, ks]) =>
      shapes.map(([M, N, i]) => [M, N, ks[i]]).map(([M, N, k]) =>
        opCase(`matmul ${dt} M=${M} K=${k} N=${N}`, "matmul", 1e-5, (c) => {
          const x = c.f32("x", [[M, 72], k]);
          return { y: ops.matmul(c.g, x, c.weight("w", [N, k], dt as DType, 1 / Math.sqrt(k))) };
        })
      )
    );
    // A model's K (64 threads a row, one row a workgroup).
    cases.push(opCase("matmul bf16 M=3 K=4100 N=5", "matmul", 1e-5, (c) => {
      return { y: ops.matmul(c.g, c.f32("x", [[3, 8], 4100]), c.weight("w", [5, 4100], "bf16", 1 / 64)) };
    }));
    try {
      // shader-f16 (where the adapter has it: lavapipe does) and the core-WGSL fallback.
      for (const f16 of [true, false]) {
        const { adapter, dispatches } = await dispatchCountingAdapter();
        const backend = await webgpuBackend.create({ adapter, webgpuTuning: { f16 } } as never);
        const hasF16 = adapter.features.has("shader-f16");
        try {
          for (const c of cases) {
            await t.step(`${c.name} (f16 ${f16 ? "on" : "off"})`, async () => {
              dispatches.clear();
              await checkCase(c, backend, reference);
              const M = Number(/M=(\d+)/.exec(c.name)![1]), kind = M <= 8 ? "matvec" : "gemm";
              assertEquals(dispatchesOf(dispatches, `// matmul ${kind}`), 1, `${kind} dispatches`);
              assertEquals(dispatchesOf(dispatches, " batch 1\n"), M === 1 ? 1 : 0, "the batch-1 matvec");
              const f16Kernel = dispatchesOf(dispatches, `// matmul ${kind} f16 shader-f16`) > 0;
              assertEquals(f16Kernel, f16 && hasF16 && c.name.startsWith("matmul f16"), "shader-f16 kernel");
            });
          }
        } finally {
          backend.dispose();
        }
      }
    } finally {
      reference.dispose();
    }
  },
});
