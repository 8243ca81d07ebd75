/**
 * The seeded generator behind preset weights, one row chunk at a time: a counter-based stream (element `i` needs
 * only the start state and `i`, see `random.ts` for the exact recipe), so any rows can be made without the rows
 * before them. FP8 and NVFP4 tensors are quantised by the absolute maximum of a block or run; that maximum is found
 * by a generation pass over the block (nothing stored) the first time a chunk needs it, and kept (one number per
 * block).
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { scratchF32 } from "./chunks.ts";
import {
  absMax,
  encodeFp8Scaled,
  f32ToBytes,
  FLOAT_BYTES,
  type FloatDType,
  fp8BlockScale,
  NVFP4_BLOCK,
  nvfp4BlockScale,
  nvfp4GlobalScale,
  quantizeNvfp4Blocks,
} from "./codecs.ts";
import { leadingRows, type RandomRecipe, rowElements, type WeightChunk, type WeightSource } from "./source.ts";

/** mulberry32's state increment (the Weyl sequence step). */
const STEP = 0x6d2b79f5;

/** 32-bit FNV-1a of the name mixed with the seed through murmur3's finaliser: one stream per (seed, name). */
export function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1);
  for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Fills `out` with elements `firstIndex, firstIndex + 1, …` of the uniform stream that starts at `state` (mean
 * `mean`, standard deviation `std`): element `i` is what {@link fillUniform} writes at index `i`, bit for bit.
 *
 * @example
 * ```ts
 * const whole = new Float32Array(10), tail = new Float32Array(4);
 * fillUniformAt(whole, 7, 0, 0, 1);
 * fillUniformAt(tail, 7, 6, 0, 1); // tail equals whole.subarray(6)
 * ```
 */
export function fillUniformAt(out: Float32Array, state: number, firstIndex: number, mean: number, std: number): void {
  const width = std * Math.sqrt(12) / 4294967296; // uniform on [-√3·std, √3·std] has standard deviation std
  let a = (state + Math.imul(firstIndex, STEP)) >>> 0; // the state before element firstIndex
  for (let i = 0; i < out.length; i++) {
    a = (a + STEP) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = mean + (((t ^ (t >>> 14)) >>> 0) - 2147483648) * width;
  }
}

/**
 * Fills `out` with uniform values of mean `mean` and std `std` from mulberry32. Uniform rather than normal: it is
 * several times faster than Box-Muller and its bounded range uses the FP8 grid well; the scale is what matters.
 */
export function fillUniform(out: Float32Array, state: number, mean: number, std: number): void {
  fillUniformAt(out, state, 0, mean, std);
}

/** What one random tensor is: its recipe, and how its dtype quantises it. */
export interface RandomTensorSpec {
  /** Canonical name. */
  name: string;
  /** Canonical shape. */
  shape: readonly number[];
  /** f32, bf16, f16, f8e4m3 or nvfp4. */
  dtype: DType;
  /** The stream and distribution of its values. */
  recipe: RandomRecipe;
  /** For messages (`preset tiny seed 0`). */
  origin: string;
  /** Bytes a checkpoint stores for it (codes and scales). */
  bytes: number;
  /**
   * f8e4m3: the quantisation blocks, equal contiguous runs of whole K-rows, each with scale absmax/448. nvfp4: the
   * global-scale runs (448·6/absmax each). Default 1.
   */
  runs?: number;
}

/** Elements per amax pass batch: bounded scratch whatever the block size. */
const PASS = 1 << 16;

/**
 * One random weight as a row-chunk source; also readable synchronously (`readSync`), which the whole-tensor API in
 * `random.ts` builds on, so there is one generator.
 *
 * @example
 * ```ts
 * const s = new RandomTensorSource({
 *   name: "w", shape: [4, 32], dtype: "f8e4m3", recipe: { state: 1, mean: 0, std: 0.1 }, origin: "test", bytes: 132,
 * });
 * s.readSync(2, 2).scales; // Float32Array [s, s]: the tensor's one scale, per K-row
 * ```
 */
export class RandomTensorSource implements WeightSource {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly bytes: number;
  readonly origin: string;
  readonly random: RandomRecipe;
  readonly #rows: number;
  readonly #rowElems: number;
  readonly #k: number;
  /** Elements per quantisation run (FP8 block, NVFP4 global-scale run). */
  readonly #run: number;
  /** Scale of each run (FP8 multiplier, NVFP4 global divisor); NaN until first needed. */
  readonly #runScales: Float32Array;

  /** Checks the shape suits the dtype (NVFP4: K a multiple of 16; runs of whole K-rows); generates nothing. */
  constructor(spec: RandomTensorSpec) {
    const { name, shape, dtype } = spec;
    this.name = name;
    this.shape = [...shape];
    this.dtype = dtype;
    this.bytes = spec.bytes;
    this.origin = spec.origin;
    this.random = { ...spec.recipe };
    this.#rows = leadingRows(shape);
    this.#rowElems = rowElements(shape);
    this.#k = shape.length === 0 ? 1 : shape[shape.length - 1];
    const numel = this.#rows * this.#rowElems, kRows = numel / this.#k, runs = spec.runs ?? 1;
    if (dtype === "nvfp4") {
      if (this.#k % NVFP4_BLOCK !== 0) {
        throw new RangeError(`nvfp4: ${name} has ${this.#k} columns; NVFP4 needs a multiple of ${NVFP4_BLOCK}`);
      }
      if (!Number.isInteger(runs) || runs <= 0 || kRows % runs !== 0) {
        throw new RangeError(`nvfp4: ${name}'s ${kRows} rows do not split into ${runs} global-scale runs`);
      }
    } else if (dtype === "f8e4m3") {
      if (!Number.isInteger(runs) || runs <= 0 || kRows % runs !== 0) {
        throw new RangeError(`random weights: ${name}'s ${kRows} rows do not split into ${runs} FP8 blocks`);
      }
    } else if (!(dtype in FLOAT_BYTES)) {
      throw new RangeError(`random weights: ${name} has dtype ${dtype}; use f32, bf16, f8e4m3 or nvfp4`);
    }
    this.#run = numel / runs;
    // A device generating FP8 or NVFP4 itself needs the block (run) count too.
    if (dtype === "f8e4m3" || dtype === "nvfp4") this.random = { ...this.random, runs };
    this.#runScales = new Float32Array(runs).fill(NaN);
  }

  /** Rows `[row0, row0 + rows)`, generated now (async only to fit the contract). */
  read(row0: number, rows: number): Promise<WeightChunk> {
    try {
      return Promise.resolve(this.readSync(row0, rows));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Rows `[row0, row0 + rows)` in the source's dtype, with row-local scales (`source.ts`). */
  readSync(row0: number, rows: number): WeightChunk {
    if (!(Number.isInteger(row0) && Number.isInteger(rows) && row0 >= 0 && rows >= 1 && row0 + rows <= this.#rows)) {
      throw new RangeError(`${this.name}: rows [${row0}, ${row0 + rows}) outside its ${this.#rows}`);
    }
    const quantised = this.dtype === "f8e4m3" || this.dtype === "nvfp4";
    if (quantised && this.shape.length < 2 && rows !== this.#rows) {
      throw new RangeError(`${this.name}: a 1-D quantised tensor is read whole`);
    }
    // Generated into scratch: the chunk returned holds only the encoded values.
    const e0 = row0 * this.#rowElems, values = scratchF32(rows * this.#rowElems, 0);
    const { state, mean, std } = this.random;
    fillUniformAt(values, state, e0, mean, std);
    const shape = [rows, ...this.shape.slice(1)];
    if (!quantised) return { row0, rows, shape, dtype: this.dtype, data: f32ToBytes(values, this.dtype as FloatDType) };
    const fp8 = this.dtype === "f8e4m3", n = values.length, k = this.#k;
    const data = new Uint8Array(fp8 ? n : n / 2), scales = new Float32Array(fp8 ? n / k : n / NVFP4_BLOCK);
    const codes = fp8 ? undefined : new Uint8Array(n / NVFP4_BLOCK);
    const globals = fp8 ? undefined : new Float32Array(n / k);
    for (let r = Math.floor(e0 / this.#run); r * this.#run < e0 + n; r++) {
      // The part of run r inside the chunk: whole K-rows, so whole 16-blocks too.
      const lo = Math.max(e0, r * this.#run) - e0, hi = Math.min(e0 + n, (r + 1) * this.#run) - e0;
      const s = this.#runScale(r), part = values.subarray(lo, hi);
      if (fp8) {
        encodeFp8Scaled(part, s, data.subarray(lo, hi));
        scales.fill(s, lo / k, hi / k);
        continue;
      }
      const [b0, b1] = [lo / NVFP4_BLOCK, hi / NVFP4_BLOCK];
      quantizeNvfp4Blocks(part, s, data.subarray(lo / 2, hi / 2), codes!.subarray(b0, b1));
      for (let b = b0; b < b1; b++) scales[b] = nvfp4BlockScale(codes![b], s);
      globals!.fill(s, lo / k, hi / k);
    }
    const chunk: WeightChunk = { row0, rows, shape, dtype: this.dtype, data, scales };
    if (globals) chunk.globalScales = globals;
    return chunk;
  }

  /** Every run's scale (FP8: the block multipliers; NVFP4: the global divisors), computing those not yet known. */
  runScales(): Float32Array {
    for (let r = 0; r < this.#runScales.length; r++) this.#runScale(r);
    return this.#runScales.slice();
  }

  /** Scale of run `r`: its absolute maximum found by a generation pass (bounded scratch), then kept. */
  #runScale(r: number): number {
    if (!Number.isNaN(this.#runScales[r])) return this.#runScales[r];
    const { state, mean, std } = this.random, scratch = new Float32Array(Math.min(PASS, this.#run));
    let amax = 0;
    for (let i = 0; i < this.#run; i += scratch.length) {
      const part = scratch.subarray(0, Math.min(scratch.length, this.#run - i));
      fillUniformAt(part, state, r * this.#run + i, mean, std);
      amax = absMax(part, amax);
    }
    this.#runScales[r] = this.dtype === "f8e4m3" ? fp8BlockScale(amax) : nvfp4GlobalScale(amax);
    return this.#runScales[r];
  }
}
