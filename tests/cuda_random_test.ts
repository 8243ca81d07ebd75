/**
 * The cuda backend's device-made preset weights are the host's, bit for bit: kernels/cuda/random.cuh (the one
 * source of the device generator) compiled for the host by clang-19 (tests/cuda_random_host.c) against
 * weights/random_source.ts and weights/codecs.ts — the uniform stream at any element index (past 2^32 too), the
 * bf16 / f16 / FP8 encoders on every kind of f32 (normal, subnormal, huge, infinite, NaN), whole FP8 tensors of
 * several blocks with their scales, and whole NVFP4 tensors (codes and folded block scales). The device compiles the same functions with round-to-nearest f64 intrinsics.
 *
 * @module
 */

import { assertEquals } from "./assert.ts";
import { fillUniformAt, RandomTensorSource } from "../weights/random_source.ts";
import { f32ToBf16, f32ToF16, f32ToF8e4m3 } from "../weights/codecs.ts";
import { mulberry32 } from "./fixtures.ts";
import { uniformWidth } from "../runtime/backends/cuda/device_weights.ts";
import { removeAtExit } from "./cuda_helpers.ts";

const SYMBOLS = {
  rnd_fill: { parameters: ["u32", "f64", "f64", "u64", "u32", "buffer"], result: "void" },
  rnd_encode: { parameters: ["i32", "buffer", "u32", "buffer"], result: "void" },
  rnd_fp8: { parameters: ["u32", "f64", "f64", "u64", "u64", "u32", "buffer", "buffer", "buffer"], result: "void" },
  rnd_nvfp4: { parameters: ["u32", "f64", "f64", "u64", "u64", "buffer", "buffer", "buffer"], result: "void" },
} as const;

async function build(): Promise<Deno.DynamicLibrary<typeof SYMBOLS> | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_cuda_random_" });
  removeAtExit(dir);
  const src = new URL("./cuda_random_host.c", import.meta.url).pathname;
  try {
    const r = await new Deno.Command("clang-19", {
      args: ["-shared", "-fPIC", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-o", `${dir}/r.so`, src],
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
    return Deno.dlopen(`${dir}/r.so`, SYMBOLS);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      console.log("cuda generator tests skipped: clang-19 is not installed");
      return undefined;
    }
    throw e;
  }
}

const lib = await build();

Deno.test({
  name: "cuda device weights: the uniform stream ≡ fillUniformAt at any index, for several recipes",
  ignore: !lib,
  fn() {
    const n = 50_000;
    for (
      const [state, first, mean, std] of [
        [0, 0, 0, 1],
        [0xdeadbeef, 12345, 1, 0.05 / Math.sqrt(3)],
        [7, 2 ** 32 + 3, 0, 1 / Math.sqrt(4096)],
        [123456789, 3 * 2 ** 33 - 17, -0.25, 2 / Math.sqrt(64)],
      ]
    ) {
      const want = new Float32Array(n), got = new Float32Array(n);
      fillUniformAt(want, state, first, mean, std);
      lib!.symbols.rnd_fill(state, mean, uniformWidth(std), BigInt(first), n, got);
      assertEquals(new Uint32Array(got.buffer), new Uint32Array(want.buffer), `state ${state} first ${first}`);
    }
  },
});

Deno.test({
  name: "cuda device weights: bf16, f16 and FP8 encoders ≡ weights/codecs.ts on every kind of f32",
  ignore: !lib,
  fn() {
    const rand = mulberry32(5), n = 200_000;
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = Math.floor(rand() * 2 ** 32) >>> 0;
    // Specials and boundaries: zeros, infinities, NaNs, the f16 / FP8 subnormal and saturation edges.
    const special = [
      0,
      0x80000000,
      0x7f800000,
      0xff800000,
      0x7fc00000,
      0x7f800001,
      0xffc00001,
      0x33800000,
      0x387fc000,
      0x38800000,
      0x3a800000,
      0x3b000000,
      0x43e00000,
      0x43dfffff,
      0x477fe000,
      0x477ff000,
      0x3b7fffff,
    ];
    bits.set(special);
    // Values near the encoders' rounding ties: random exponents around the normal ranges with low mantissas.
    for (let i = special.length; i < n / 2; i++) {
      bits[i] = (bits[i] & 0x80000000) | ((100 + (i % 60)) << 23) | (bits[i] & 0x1fffff);
    }
    const values = new Float32Array(bits.buffer);
    const got = new Uint16Array(n);
    for (
      const [kind, want] of [[0, f32ToBf16(values)], [1, f32ToF16(values)], [
        2,
        Uint16Array.from(f32ToF8e4m3(values)),
      ]] as const
    ) {
      lib!.symbols.rnd_encode(kind, bits, n, got);
      assertEquals(got, want, `encoder ${kind}`);
    }
  },
});

Deno.test({
  name: "cuda device weights: whole FP8 tensors (blocks of whole K-rows, amax/448 scales) ≡ RandomTensorSource",
  ignore: !lib,
  fn() {
    for (
      const [shape, runs, std] of [[[64, 96], 1, 0.1], [[8, 48, 32], 8, 1 / Math.sqrt(32)], [
        [30, 40],
        6,
        1e-3,
      ]] as const
    ) {
      const recipe = { state: 99 + runs, mean: 0, std };
      const n = shape.reduce((a, b) => a * b, 1), k = shape[shape.length - 1];
      const source = new RandomTensorSource({
        name: "w",
        shape,
        dtype: "f8e4m3",
        recipe,
        origin: "test",
        bytes: n + 4 * runs,
        runs,
      });
      const want = source.readSync(0, shape[0]);
      const codes = new Uint8Array(n), scales = new Float32Array(n / k), amax = new Uint32Array(runs);
      lib!.symbols.rnd_fp8(recipe.state, 0, uniformWidth(std), BigInt(n), BigInt(n / runs), k, amax, codes, scales);
      assertEquals(codes, want.data, `codes of [${shape}] in ${runs} blocks`);
      assertEquals(scales, want.scales, `scales of [${shape}] in ${runs} blocks`);
    }
  },
});

Deno.test({
  name:
    "cuda device weights: whole NVFP4 tensors (global-scale runs, f8 block scales, E2M1 codes) ≡ RandomTensorSource",
  ignore: !lib,
  fn() {
    for (
      const [shape, runs, std] of [[[32, 64], 1, 0.1], [[4, 24, 48], 8, 1 / Math.sqrt(48)], [[6, 32], 3, 3e-3]] as const
    ) {
      const recipe = { state: 7 + runs, mean: 0, std };
      const n = shape.reduce((a, b) => a * b, 1);
      const source = new RandomTensorSource({
        name: "w",
        shape,
        dtype: "nvfp4",
        recipe,
        origin: "test",
        bytes: n / 2 + n / 16 + 4 * runs,
        runs,
      });
      const want = source.readSync(0, shape[0]);
      const packed = new Uint8Array(n / 2), scales = new Float32Array(n / 16), amax = new Uint32Array(runs);
      lib!.symbols.rnd_nvfp4(recipe.state, 0, uniformWidth(std), BigInt(n), BigInt(n / runs), amax, packed, scales);
      assertEquals(packed, want.data, `codes of [${shape}] in ${runs} runs`);
      assertEquals(scales, want.scales, `folded scales of [${shape}] in ${runs} runs`);
    }
  },
});
