/**
 * Re-encoding a weight source into the graph's weight dtype chunk by chunk, with the values `convertWeight` gives
 * the whole weight (bit-identical after decoding). Float targets, q8 and q4 are row-local. FP8 (one scale per tensor, or
 * per expert of a 3-D tensor) and NVFP4 (one global scale likewise) depend on a run's absolute maximum: an expert
 * lies inside every chunk that touches it, so 3-D tensors stay one pass; a 2-D tensor read in more than one chunk
 * is read twice, a first pass over the source for its maximum (kept: one number), then the chunks themselves.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import { chunkRows, chunkToF32, kDim, scratchF32 } from "./chunks.ts";
import {
  absMax,
  encodeFp8Scaled,
  f32ToBytes,
  type FloatDType,
  fp8BlockScale,
  NVFP4_BLOCK,
  nvfp4BlockScale,
  nvfp4GlobalScale,
  Q8_BLOCK,
  quantizeNvfp4Blocks,
  quantizeQ4,
  quantizeQ8,
} from "./codecs.ts";
import { leadingRows, rowElements, type WeightChunk, type WeightSource } from "./source.ts";

const FLOATS: readonly DType[] = ["f32", "bf16", "f16"];

/** `source` as chunks of a quantised or float `dtype`; see {@link convertSource}. */
class ConvertedSource implements WeightSource {
  readonly name: string;
  readonly shape: readonly number[];
  readonly bytes: number;
  readonly origin: string;
  readonly #rows: number;
  readonly #rowElems: number;
  readonly #k: number;
  /** Elements per FP8 block / NVFP4 global-scale run: one expert of a 3-D tensor, else the whole tensor. */
  readonly #run: number;
  /** The whole tensor's absolute maximum, from a first pass, when a run spans chunks. */
  #amax?: Promise<number>;

  constructor(readonly source: WeightSource, readonly dtype: DType, runs?: number) {
    const { name, shape } = source;
    this.name = name;
    this.shape = shape;
    this.bytes = source.bytes;
    this.origin = source.origin;
    this.#rows = leadingRows(shape);
    this.#rowElems = rowElements(shape);
    this.#k = kDim(shape);
    this.#run = shape.length === 3 ? this.#rowElems : this.#rows * this.#rowElems;
    if (runs !== undefined) {
      const kRows = (this.#rows * this.#rowElems) / this.#k;
      if (!Number.isInteger(runs) || runs <= 0 || kRows % runs !== 0) {
        throw new RangeError(`convertSource: ${name}'s ${kRows} rows do not split into ${runs} scale runs`);
      }
      this.#run = (this.#rows * this.#rowElems) / runs;
    }
    if (dtype === "q8" && this.#k % Q8_BLOCK !== 0) {
      throw new RangeError(`quantizeQ8: input dim ${this.#k} is not a multiple of ${Q8_BLOCK}`);
    }
    if (dtype === "nvfp4" && this.#k % NVFP4_BLOCK !== 0) {
      throw new RangeError(`nvfp4: ${name} has ${this.#k} columns; NVFP4 needs a multiple of ${NVFP4_BLOCK}`);
    }
    if (!FLOATS.includes(dtype) && !["q8", "q4", "f8e4m3", "nvfp4"].includes(dtype)) {
      throw new RangeError(`convertSource: ${name} cannot be converted to ${dtype}`);
    }
  }

  async read(row0: number, rows: number): Promise<WeightChunk> {
    if (!FLOATS.includes(this.dtype) && this.shape.length < 2 && rows !== this.#rows) {
      throw new RangeError(`${this.name}: a 1-D tensor converted to ${this.dtype} is read whole`);
    }
    // Decoded into scratch: nothing below awaits before the values are re-encoded (the amax pass decodes with
    // its own buffer).
    const quantised = this.dtype === "f8e4m3" || this.dtype === "nvfp4";
    const amax = quantised && this.#run > rows * this.#rowElems ? await this.#wholeAmax() : 0;
    const chunk = await this.source.read(row0, rows);
    const values = chunkToF32(chunk, scratchF32(chunk.rows * this.#rowElems, 1));
    const shape = [rows, ...this.shape.slice(1)], dtype = this.dtype, k = this.#k;
    if (FLOATS.includes(dtype)) return { row0, rows, shape, dtype, data: f32ToBytes(values, dtype as FloatDType) };
    if (dtype === "q8") {
      const q = quantizeQ8(values, values.length / k, k);
      return { row0, rows, shape, dtype, data: new Uint8Array(q.values.buffer), scales: q.scales };
    }
    if (dtype === "q4") {
      const q = quantizeQ4(values, values.length / k, k);
      return { row0, rows, shape, dtype, data: q.packed, scales: q.scales };
    }
    const fp8 = dtype === "f8e4m3", n = values.length, e0 = row0 * this.#rowElems;
    const data = new Uint8Array(fp8 ? n : n / 2), scales = new Float32Array(fp8 ? n / k : n / NVFP4_BLOCK);
    const codes = fp8 ? undefined : new Uint8Array(n / NVFP4_BLOCK);
    const globals = fp8 ? undefined : new Float32Array(n / k);
    for (let r = Math.floor(e0 / this.#run); r * this.#run < e0 + n; r++) {
      const lo = Math.max(e0, r * this.#run) - e0, hi = Math.min(e0 + n, (r + 1) * this.#run) - e0;
      const part = values.subarray(lo, hi);
      // A run wholly inside this chunk has its maximum here; one that is not is the whole tensor (first pass).
      const m = hi - lo === this.#run ? absMax(part) : amax;
      if (fp8) {
        const s = fp8BlockScale(m);
        encodeFp8Scaled(part, s, data.subarray(lo, hi));
        scales.fill(s, lo / k, hi / k);
        continue;
      }
      const g = nvfp4GlobalScale(m), [b0, b1] = [lo / NVFP4_BLOCK, hi / NVFP4_BLOCK];
      quantizeNvfp4Blocks(part, g, data.subarray(lo / 2, hi / 2), codes!.subarray(b0, b1));
      for (let b = b0; b < b1; b++) scales[b] = nvfp4BlockScale(codes![b], g);
      globals!.fill(g, lo / k, hi / k);
    }
    return fp8
      ? { row0, rows, shape, dtype, data, scales }
      : { row0, rows, shape, dtype, data, scales, globalScales: globals };
  }

  /** The first pass: every chunk of the source decoded once for the tensor's absolute maximum. */
  #wholeAmax(): Promise<number> {
    this.#amax ??= (async () => {
      let amax = 0;
      for (const { row0, rows } of chunkRows(this.source)) {
        const chunk = await this.source.read(row0, rows);
        amax = absMax(chunkToF32(chunk, scratchF32(rows * this.#rowElems, 2)), amax);
      }
      return amax;
    })();
    return this.#amax;
  }
}

/**
 * `source` as chunks of `dtype` (f32, bf16, f16, f8e4m3, q8, q4 or nvfp4), each decoding to exactly the rows of
 * `weightToF32(convertWeight(whole, dtype))`; the source itself when it already has that dtype. `runs` (FP8 and
 * NVFP4) splits the tensor into that many equal runs of K-rows, each with its own scale (one per source linear, as a
 * checkpoint quantises them: a fused gate ‖ up's halves apart); default one per expert of a 3-D tensor, else one. FP8 and NVFP4 of a
 * tensor that is not 3-D, read in several chunks, read the source twice (module docs). A converted source carries
 * no `random` recipe: its values are no longer the generator's.
 *
 * @example
 * ```ts ignore
 * const q8 = convertSource(sources.get("layers.0.attn.wq_a")!, "q8");
 * for (const { row0, rows } of chunkRows(q8)) upload(await q8.read(row0, rows));
 * ```
 */
export function convertSource(source: WeightSource, dtype: DType, runs?: number): WeightSource {
  return source.dtype === dtype ? source : new ConvertedSource(source, dtype, runs);
}
