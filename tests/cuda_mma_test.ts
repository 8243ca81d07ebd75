/**
 * The tensor-core helper of the cuda kernels (kernels/cuda/common.cuh `mma_bf16_16816`, one m16n8k16 bf16 mma with
 * f32 accumulation) as tests/cuda_host_shim.cpp emulates it: kernel `mma_probe` (kernels/cuda/matmul_mma.cu) packs
 * A, B and C into the PTX ISA's fragments, lane by lane, and unpacks D the same way; run on the CPU through the
 * fake driver's kernel launcher, D must be the plain product A·B + C. Integer matrices (every value distinct, sums
 * exact) catch any misplaced element; random bf16 values check the f32 sum. The fragment layout itself is only
 * proved against a tensor core by running `mma_probe` on a GPU (bench/cuda_check.sh stage 1 runs the op table,
 * whose prefill matmuls take this path).
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";
import { fakeLibcuda } from "./cuda_helpers.ts";
import { mulberry32 } from "./fixtures.ts";

const path = await fakeLibcuda({ kernels: true });
const lib = path
  ? Deno.dlopen(path, {
    shim_launch: { parameters: ["buffer", "u32", "u32", "u32", "u32", "u32", "buffer"], result: "i32" },
  })
  : undefined;

/** D = A·B + C through one `mma_probe` launch (one warp), host pointers in the argument block. */
function probe(A: Float32Array, B: Float32Array, C: Float32Array): Float32Array {
  const D = new Float32Array(128), args = new DataView(new ArrayBuffer(128));
  [A, B, C, D].forEach((m, i) =>
    args.setBigUint64(8 * i, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(m))), true)
  );
  const rc = lib!.symbols.shim_launch(new TextEncoder().encode("mma_probe\0"), 1, 1, 1, 32, 0, args.buffer);
  assertEquals(rc, 0, "shim_launch mma_probe");
  return D;
}

/** A·B + C in f64 (A 16 × 16, B 16 × 8 k-major, C 16 × 8), and Σ|terms| per output for the f32 bound. */
function reference(A: Float32Array, B: Float32Array, C: Float32Array): { d: Float64Array; mag: Float64Array } {
  const d = new Float64Array(128), mag = new Float64Array(128);
  for (let r = 0; r < 16; r++) {
    for (let n = 0; n < 8; n++) {
      let s = C[r * 8 + n], m = Math.abs(s);
      for (let k = 0; k < 16; k++) s += A[r * 16 + k] * B[k * 8 + n], m += Math.abs(A[r * 16 + k] * B[k * 8 + n]);
      d[r * 8 + n] = s, mag[r * 8 + n] = m;
    }
  }
  return { d, mag };
}

/** f32 values rounded to bf16 (truncated to the top 16 bits, so exact in bf16). */
const bf16 = (a: Float32Array) => {
  const u = new Uint32Array(a.buffer);
  for (let i = 0; i < u.length; i++) u[i] &= 0xffff0000;
  return a;
};

Deno.test({
  name: "cuda mma_bf16_16816 on the CPU: integer A·B + C ≡ the exact product (every element in its fragment place)",
  ignore: !lib,
  fn() {
    // A[r][k] = r·16 + k − 128 and B[k][n] = (k·8 + n)·3 − 191: all distinct, |sums| < 2^24, so exact in f32.
    const A = Float32Array.from({ length: 256 }, (_, i) => i - 128);
    const B = Float32Array.from({ length: 128 }, (_, i) => i * 3 - 191);
    const C = Float32Array.from({ length: 128 }, (_, i) => 1000 * (i % 7) - i);
    const got = probe(A, B, C), want = reference(A, B, C).d;
    assertEquals(Array.from(got), Array.from(want));
  },
});

Deno.test({
  name: "cuda mma_bf16_16816 on the CPU: random bf16 A·B + f32 C ≡ the f64 product within f32 summation",
  ignore: !lib,
  fn() {
    const rnd = mulberry32(15);
    for (let trial = 0; trial < 4; trial++) {
      const A = bf16(Float32Array.from({ length: 256 }, () => (rnd() - 0.5) * 2 ** (trial * 3 - 4)));
      const B = bf16(Float32Array.from({ length: 128 }, () => rnd() * 2 - 1));
      const C = Float32Array.from({ length: 128 }, () => trial === 0 ? 0 : rnd() - 0.5);
      const got = probe(A, B, C), { d, mag } = reference(A, B, C);
      for (let i = 0; i < 128; i++) {
        // 17 f32 additions: each rounds by at most 2^-24 of a partial sum ≤ Σ|terms|.
        assert(Math.abs(got[i] - d[i]) <= 17 * 2 ** -24 * mag[i], `trial ${trial} D[${i}] ${got[i]} vs ${d[i]}`);
      }
    }
  },
});
