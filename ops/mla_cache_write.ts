/**
 * `mla_cache_write`: stores each token's latent row `[ckv | kpe]` in the paged latent cache, in place, before
 * `mla_attention` reads it. Inputs: `ckv [T, kvr]`, `kpe [T, dr]`, `cache [numBlocks, blockSize, kvr + dr]`
 * (**written in place**, input 2), `seq i32 [T]`, `pos i32 [T]`, `blockTable i32 [S, maxBlocks]`. Token t goes to
 * block `blockTable[seq[t]][pos[t] / blockSize]`, row `pos[t] % blockSize`, rounded to the cache's dtype (a bf16
 * cache stores bf16, round to nearest even; the reference holds it as f32 but rounds all the same, so every backend
 * and the reference keep the same cache). Output `[T, kvr + dr]`: the rows as given (f32), so the op has a result
 * of its own.
 *
 * The write is its own op so that attention kernels only read the cache: on a GPU the scatter is one small kernel
 * and every attention variant (absorbed decode, split-context decode, naive prefill) is read-only. Index errors (a
 * sequence, position or block outside the cache) throw: a bad one would write outside the cache.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { mlaCacheWrite } from "./mla_cache_write.ts";
 * const g = new GraphBuilder();
 * const rows = mlaCacheWrite(g, {
 *   ckv: g.input("ckv", [3, 4], "f32"), kpe: g.input("kpe", [3, 2], "f32"), cache: g.state("cache", [8, 16, 6], "f32"),
 *   seq: g.input("seq", [3], "i32"), pos: g.input("pos", [3], "i32"), blockTable: g.input("bt", [1, 4], "i32"),
 * }); // [3, 6]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import {
  bytesOf,
  concreteDim,
  expectDim,
  expectDType,
  expectFloat,
  expectRank,
  type OpDef,
  type RefTensor,
  tensorBytes,
} from "./op.ts";

/**
 * The flat element offset of (sequence `s`, position `p`)'s row in a cache `[nb, bs, row]` through `bt [S, mb]`,
 * checked: the one addressing rule of the latent cache, shared by `mla_cache_write` and `mla_attention`.
 */
export function cacheSlot(bt: RefTensor, nb: number, bs: number, row: number, s: number, p: number): number {
  const [S, mb] = bt.shape;
  if (!(s >= 0 && s < S)) throw new RangeError(`mla: seq ${s} outside 0..${S - 1}`);
  if (!(p >= 0 && Math.floor(p / bs) < mb)) throw new RangeError(`mla: pos ${p} beyond ${mb} blocks`);
  const b = bt.data[s * mb + Math.floor(p / bs)];
  if (!(b >= 0 && b < nb)) throw new RangeError(`mla: block ${b} (seq ${s}, pos ${p}) outside 0..${nb - 1}`);
  return (b * bs + (p % bs)) * row;
}

/** Rounds f32 values in place to the nearest bf16 (ties to even; NaN stays NaN), as a bf16 store does. */
function roundToBf16(values: Float32Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    bits[i] = (u & 0x7fffffff) > 0x7f800000
      ? (u | 0x400000) & 0xffff0000
      : ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
}

/** The `mla_cache_write` op. Input 2 (the cache) is written in place. */
export const mlaCacheWriteOp: OpDef<Record<string, never>> = {
  name: "mla_cache_write",
  inputNames: ["ckv", "kpe", "cache", "seq", "pos", "blockTable"],
  writesInputs: [2],
  inferShape([ckv, kpe, cache, seq, pos, bt]) {
    expectRank("ckv", ckv, 2);
    expectRank("kpe", kpe, 2);
    expectRank("cache", cache, 3);
    expectRank("seq", seq, 1);
    expectRank("pos", pos, 1);
    expectRank("blockTable", bt, 2);
    for (const [n, x] of Object.entries({ ckv, kpe, cache })) expectFloat(n, x);
    for (const [n, x] of Object.entries({ seq, pos, blockTable: bt })) expectDType(n, x, "i32");
    const t = ckv.shape[0];
    for (const [n, x] of [["kpe", kpe], ["seq", seq], ["pos", pos]] as const) {
      expectDim(`tokens (${n} dim 0 vs ckv dim 0)`, x.shape[0], t);
    }
    const kvr = concreteDim("ckv width", ckv.shape[1]), dr = concreteDim("kpe width", kpe.shape[1]);
    for (let i = 0; i < 3; i++) concreteDim(`cache dim ${i}`, cache.shape[i]);
    expectDim("cache row width (kvr + dr)", cache.shape[2], kvr + dr);
    return { shape: [t, kvr + dr], dtype: "f32" };
  },
  reference([ckv, kpe, cache, seq, pos, bt], out) {
    const [T, kvr] = ckv.shape, dr = kpe.shape[1], [nb, bs, row] = cache.shape;
    for (let t = 0; t < T; t++) {
      const o = cacheSlot(bt, nb, bs, row, seq.data[t], pos.data[t]);
      out.data.set(ckv.data.subarray(t * kvr, (t + 1) * kvr), t * row);
      out.data.set(kpe.data.subarray(t * dr, (t + 1) * dr), t * row + kvr);
      const stored = cache.data.subarray(o, o + row);
      stored.set(out.data.subarray(t * row, (t + 1) * row));
      if (cache.dtype === "bf16") roundToBf16(stored as Float32Array);
    }
  },
  cost([ckv, kpe, cache, seq, pos], out) {
    const stored = bytesOf(out.shape[0] * out.shape[1], cache.dtype);
    const given = tensorBytes(ckv) + tensorBytes(kpe) + tensorBytes(seq) + tensorBytes(pos);
    return { flops: 0, bytes: given + stored + tensorBytes(out) };
  },
};

/** The tensors `mla_cache_write` reads (see the module doc for shapes). */
export type MlaCacheInputs = {
  ckv: Tensor;
  kpe: Tensor;
  cache: Tensor;
  seq: Tensor;
  pos: Tensor;
  blockTable: Tensor;
};

/** Stores the batch's `[ckv | kpe]` rows in `cache`; returns them. */
export function mlaCacheWrite(g: GraphBuilder, x: MlaCacheInputs, options: NodeOptions = {}): Tensor {
  return g.op(mlaCacheWriteOp, [x.ckv, x.kpe, x.cache, x.seq, x.pos, x.blockTable], {}, options);
}
