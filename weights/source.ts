/**
 * Weights as streams of row chunks: how a checkpoint or a preset hands each tensor to a backend without the host
 * ever holding the model. A {@link WeightSource} is one canonical weight; `read(row0, rows)` gives rows of its
 * leading dimension (the experts of an `[E, 2F, D]` tensor, the output rows of a linear), with the scales of
 * exactly those rows, so every conversion and every backend layout can work one chunk at a time.
 *
 * Scales in a chunk are always **row-local** (a "K-row" is one row of the last dimension, `numel / K` of them):
 * - `f8e4m3`: one f32 scale per K-row (`W = code · scale`): the checkpoint's per-tensor or per-block scales
 *   expanded, so a chunk needs nothing outside itself.
 * - `q8`: int8 values, one f32 scale per 32 values along K per K-row (`ceil(K / 32)` per K-row).
 * - `q4`: split-nibble blocks of 16 bytes per 32 values along K (`quantizeQ4`), the last padded, with one f16-valued
 *   scale per block per K-row, as q8 counts them.
 * - `nvfp4`: E2M1 codes two per byte (even element in the low nibble), one f32 scale per 16 values per K-row,
 *   already divided by its linear's global scale (`nvfp4BlockScale`), so `W = e2m1 · scale`.
 * - float dtypes: no scales.
 *
 * A preset's random weights also say how they were made ({@link RandomRecipe}), so a GPU backend can generate them
 * on the device, bit-identical to the host generator of `weights/random.ts`.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";

/** Rows `[row0, row0 + rows)` of a weight's leading dimension. */
export interface WeightChunk {
  /** First leading-dimension row. */
  row0: number;
  /** Leading-dimension rows in this chunk. */
  rows: number;
  /** `[rows, ...shape.slice(1)]`. */
  shape: number[];
  /** Element dtype of `data` (see the module docs for the scales each carries). */
  dtype: DType;
  /** Little-endian elements, in a buffer the consumer may keep or reuse. */
  data: Uint8Array;
  /** Row-local scales (module docs); absent for float dtypes. */
  scales?: Float32Array;
  /**
   * NVFP4 only: the global scale (the divisor `weight_global_scale`) of each K-row's source linear, one per K-row,
   * so a backend that keeps the f8 block codes (`unfoldNvfp4Scales`) can store the weight as released.
   */
  globalScales?: Float32Array;
}

/**
 * How a preset's random weight is made, for devices that generate it themselves. Element `i` (row-major over the
 * whole tensor) is `mean + (h(state + (i + 1) · 0x6d2b79f5 mod 2^32) − 2^31) · std · √12 / 2^32` computed in f64
 * and rounded once to f32, `h` being mulberry32's output hash, then rounded to `dtype` as the host does (RNE for
 * bf16/f16; FP8 and NVFP4 quantised per block by their absolute maximum). `weights/random.ts` documents every step
 * exactly (`fillUniformAt`).
 */
export interface RandomRecipe {
  /** Stream state before the first element (`tensorSeed(seed, name)`). */
  state: number;
  /** Mean of the uniform distribution (an f64). */
  mean: number;
  /** Standard deviation of the uniform distribution (an f64): values span mean ± √3·std. */
  std: number;
  /** f8e4m3 / nvfp4: the quantisation runs (FP8 blocks, NVFP4 global-scale runs), equal runs of whole K-rows. */
  runs?: number;
}

/** One canonical weight, readable in row chunks. */
export interface WeightSource {
  /** Canonical name. */
  readonly name: string;
  /** Canonical shape (NVFP4: elements, not bytes). */
  readonly shape: readonly number[];
  /** The dtype chunks come in. */
  readonly dtype: DType;
  /** Bytes of the tensor as its origin stores it (codes and scales), for progress and memory bounds. */
  readonly bytes: number;
  /** Where it comes from, for messages: the checkpoint file(s), or `preset <name> seed <n>`. */
  readonly origin: string;
  /** Set for a preset's seeded random weights. */
  readonly random?: RandomRecipe;
  /**
   * Rows `[row0, row0 + rows)` of the leading dimension. Callers read each row once, in increasing order, and may
   * not hold two chunks of one source at once; a checkpoint error rejects with a `CheckpointError` naming the tensor
   * and the file.
   */
  read(row0: number, rows: number): Promise<WeightChunk>;
}

/** Leading-dimension rows of `shape` (1 for a scalar). */
export function leadingRows(shape: readonly number[]): number {
  return shape.length === 0 ? 1 : shape[0];
}

/** Elements per leading-dimension row of `shape`. */
export function rowElements(shape: readonly number[]): number {
  return shape.slice(1).reduce((a, b) => a * b, 1);
}
