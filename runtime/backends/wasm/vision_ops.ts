/**
 * The `wasm` compilers of the sampler and the vision ops (block-diagonal segment attention, patch merge).
 *
 * @module
 */

import { maxShape, type Node } from "../../../graph/ir.ts";
import { checkIndices } from "../../step_plan.ts";
import { type CompileContext, hostInts, lastOf, minRows, shapeOf, type Step } from "./compile.ts";

/** `sample`: one row per thread at a time (the kernel wants 8·V bytes of scratch per row). */
export function compileSample(c: CompileContext, node: Node): Step {
  const [logits, temps, topK, topP, uniform, maskRow, mask] = node.inputs;
  const V = maxShape(c.table[logits].shape)[1], threads = c.pool.threads;
  // The kernel wants 8·V bytes per row it samples; rows go in batches of one per thread.
  c.temp(8 * V * threads);
  return (s) => {
    const R = shapeOf(c, logits, s.vars)[0];
    for (let b = 0; b < R; b += threads) {
      const n = Math.min(threads, R - b), o = 4 * b;
      const args = [s.ptr[logits] + o * V, V, s.ptr[temps] + o, s.ptr[topK] + o, s.ptr[topP] + o, s.ptr[uniform] + o];
      // Mask rows index the whole mask tensor, so its pointer is not offset.
      const masks = [s.ptr[maskRow] + o, s.ptr[mask]];
      c.pool.parallelFor("sample", [...args, ...masks, s.ptr[node.id] + o, s.temp], n);
    }
  };
}

// Query rows per `seg_attention` work item: QB in kernels/wasm/vision.c.
const SEG_QB = 16;

/**
 * Block-diagonal attention (`attention`): work items are (≤ SEG_QB query rows of one segment, head), weighted by
 * their key count so the threads' shares of the cost-unit range carry equal work (see vision.c).
 */
export function compileSegAttention(c: CompileContext, node: Node): Step {
  const [q, k, v, seg] = node.inputs, scale = node.attrs.scale as number;
  const [Nmax, H, d] = maxShape(c.table[q].shape), dv = lastOf(maxShape(c.table[v].shape));
  // Every item holds at least one row: at most N·H items of 6 i32.
  c.temp(24 * Nmax * H);
  return (s) => {
    const N = shapeOf(c, q, s.vars)[0];
    if (N === 0) return;
    const items = c.k.i32(s.temp, 6 * N * H);
    const { count, cost } = segmentItems(hostInts(s, seg), H, items);
    const args = [s.ptr[q], s.ptr[k], s.ptr[v], s.ptr[node.id], H, d, dv, scale, s.temp, count];
    c.pool.parallelFor("seg_attention", args, cost, { minRows: minRows(8 * (d + dv)) });
  };
}

/**
 * Writes the work items of `segment` into `items` ({q0, q1, k0, k1, h, cost0} each) and returns their count and
 * total cost. An item costs one unit per 8 keys per query row, plus 4 for its setup. The kernel attends over
 * `[k0, k1)`, so each segment must be one contiguous run of rows (what `visionBatch` builds).
 */
export function segmentItems(segment: Int32Array, H: number, items: Int32Array): { count: number; cost: number } {
  const seen = new Set<number>();
  let count = 0, cost = 0;
  for (let k0 = 0, k1: number; k0 < segment.length; k0 = k1) {
    const id = segment[k0];
    if (seen.has(id)) {
      throw new RangeError(`attention: segment ${id} is not one contiguous run of rows (row ${k0}); wasm needs that`);
    }
    seen.add(id);
    for (k1 = k0 + 1; k1 < segment.length && segment[k1] === id;) k1++;
    // Blocks of equal size (no short tail block): ceil(len / SEG_QB) of them.
    const len = k1 - k0, blocks = Math.ceil(len / SEG_QB), rows = Math.ceil(len / blocks);
    for (let q0 = k0; q0 < k1; q0 += rows) {
      const q1 = Math.min(k1, q0 + rows);
      for (let h = 0; h < H; h++) {
        items.set([q0, q1, k0, k1, h, cost], 6 * count++);
        cost += (q1 - q0) * Math.ceil(len / 8) + 4;
      }
    }
  }
  return { count, cost };
}

/**
 * `attention_rows`: the queries of some batch rows against the keys of the whole batch (the first P rows of `k`,
 * `v`), through the same kernel: work items are (≤ SEG_QB consecutive queries of one segment, head) over that
 * segment's key run, so each query row computes exactly what it does in `attention` over the batch.
 */
export function compileRowAttention(c: CompileContext, node: Node): Step {
  const [q, k, v, seg, rows] = node.inputs, scale = node.attrs.scale as number;
  const [Qmax, H, d] = maxShape(c.table[q].shape), dv = lastOf(maxShape(c.table[v].shape));
  c.temp(24 * Qmax * H);
  return (s) => {
    const Q = shapeOf(c, q, s.vars)[0];
    if (Q === 0) return;
    const items = c.k.i32(s.temp, 6 * Q * H);
    const { count, cost } = rowItems(hostInts(s, seg), hostInts(s, rows), H, items);
    const args = [s.ptr[q], s.ptr[k], s.ptr[v], s.ptr[node.id], H, d, dv, scale, s.temp, count];
    c.pool.parallelFor("seg_attention", args, cost, { minRows: minRows(8 * (d + dv)) });
  };
}

/**
 * Writes the work items of queries at batch rows `rows` into `items` ({q0, q1, k0, k1, h, cost0}, q0 and q1 in
 * query order, k0 and k1 the segment's key run) and returns their count and total cost (as {@link segmentItems}).
 */
export function rowItems(
  segment: Int32Array,
  rows: Int32Array,
  H: number,
  items: Int32Array,
): { count: number; cost: number } {
  checkIndices(rows, segment.length, "attention_rows: row");
  const runs = new Map<number, [number, number]>(); // segment id → its key rows [k0, k1)
  for (let k0 = 0, k1: number; k0 < segment.length; k0 = k1) {
    const id = segment[k0];
    if (runs.has(id)) {
      throw new RangeError(`attention: segment ${id} is not one contiguous run of rows (row ${k0}); wasm needs that`);
    }
    for (k1 = k0 + 1; k1 < segment.length && segment[k1] === id;) k1++;
    runs.set(id, [k0, k1]);
  }
  let count = 0, cost = 0;
  for (let i0 = 0, i1: number; i0 < rows.length; i0 = i1) {
    const id = segment[rows[i0]], [k0, k1] = runs.get(id)!;
    for (i1 = i0 + 1; i1 < rows.length && segment[rows[i1]] === id;) i1++;
    // Queries of one segment in a row, in blocks of equal size (≤ SEG_QB).
    const len = i1 - i0, blocks = Math.ceil(len / SEG_QB), per = Math.ceil(len / blocks);
    for (let q0 = i0; q0 < i1; q0 += per) {
      const q1 = Math.min(i1, q0 + per);
      for (let h = 0; h < H; h++) {
        items.set([q0, q1, k0, k1, h, cost], 6 * count++);
        cost += (q1 - q0) * Math.ceil((k1 - k0) / 8) + 4;
      }
    }
  }
  return { count, cost };
}

/** `patch_merge`: a channel-major gather of `index`'s rows; indices are checked first, as for `gather_rows`. */
export function compilePatchMerge(c: CompileContext, node: Node): Step {
  const [x, index] = node.inputs;
  const C = lastOf(maxShape(c.table[x].shape)), K = lastOf(maxShape(c.table[index].shape));
  return (s) => {
    const P = shapeOf(c, x, s.vars)[0], M = shapeOf(c, index, s.vars)[0];
    checkIndices(hostInts(s, index), P, "patch_merge: row");
    const args = [s.ptr[x], C, s.ptr[index], K, s.ptr[node.id]];
    c.pool.parallelFor("patch_merge", args, M, { minRows: minRows(C * K) });
  };
}
