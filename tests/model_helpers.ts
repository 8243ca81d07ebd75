/**
 * Whole-model checks shared by the model tests of every backend: logits rows, relative errors, the paged cache's
 * consistency (prefill(N) ≡ prefill(N−1) + decode(1)), a batch of two ≡ two single runs, greedy decoding.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import type { Model } from "../engine/model.ts";

/** The presets' vocabulary. */
export const VOCAB = 131072;
/** The prompt the model tests run. */
export const PROMPT = [1, 3, 1500, 2201, 77_000, 4, 1100, 1200, 9000, 1042, 1043];

/** Row `r` of logits `[rows, VOCAB]`. */
export function row(logits: Float32Array, r: number): Float32Array {
  return logits.subarray(r * VOCAB, (r + 1) * VOCAB);
}

/** Relative L2 error of `a` against `b`. */
export function relErr(a: Float32Array, b: Float32Array): number {
  let err = 0, norm = 0;
  for (let i = 0; i < a.length; i++) {
    err += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return Math.sqrt(err / Math.max(norm, 1e-30));
}

/** Fails when the relative L2 error of `a` against `b` reaches `tol`. */
export function assertClose(a: Float32Array, b: Float32Array, tol: number, what: string): void {
  assertEquals(a.length, b.length, what);
  const e = relErr(a, b);
  assert(e < tol, `${what}: relative error ${e} ≥ ${tol}`);
}

/** prefill(N) ≡ forward's last row, then decode(1) ≡ the next row, through a scattered block table. */
export async function checkCacheConsistency(m: Model, tol: number): Promise<void> {
  const whole = await m.forward(PROMPT);
  const seq = m.pool.newSequence();
  assert(m.pool.grow(seq, PROMPT.length));
  // Scatter the blocks: the step must follow the block table, not assume contiguity.
  seq.blockTable.reverse();
  const n = PROMPT.length - 1;
  const range = [...Array(n).keys()];
  const prefill = await m.step({
    ids: PROMPT.slice(0, n),
    pos: range,
    seq: range.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: [n - 1],
  });
  assertClose(prefill, row(whole, n - 1), tol, "prefill last row");
  const decode = await m.step({
    ids: [PROMPT[n]],
    pos: [n],
    seq: [0],
    blockTables: [seq.blockTable],
    logitRows: [0],
  });
  assertClose(decode, row(whole, n), tol, "decode row");
  m.pool.release(seq);
}

/** Two sequences interleaved in one step give each one's logits of a run alone. */
export async function checkBatch(m: Model, tol: number): Promise<void> {
  const a = PROMPT.slice(0, 7);
  const b = [1, 3, 500, 600, 700, 4];
  const single = [await m.forward(a), await m.forward(b)];
  const sa = m.pool.newSequence(), sb = m.pool.newSequence();
  assert(m.pool.grow(sa, a.length) && m.pool.grow(sb, b.length));
  // Interleave the two sequences' tokens in one step.
  const ids: number[] = [], pos: number[] = [], seqIdx: number[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i < b.length) ids.push(b[i]), pos.push(i), seqIdx.push(1);
    if (i < a.length) ids.push(a[i]), pos.push(i), seqIdx.push(0);
  }
  const lastA = seqIdx.lastIndexOf(0), lastB = seqIdx.lastIndexOf(1);
  const batched = await m.step({
    ids,
    pos,
    seq: seqIdx,
    blockTables: [sa.blockTable, sb.blockTable],
    logitRows: [lastA, lastB],
  });
  assertClose(row(batched, 0), row(single[0], a.length - 1), tol, "sequence a");
  assertClose(row(batched, 1), row(single[1], b.length - 1), tol, "sequence b");
  m.pool.release(sa);
  m.pool.release(sb);
}

/** `n` greedy tokens after `prompt` (prefill, then one decode step per token). */
export async function greedy(m: Model, prompt: readonly number[], n: number): Promise<number[]> {
  const seq = m.pool.newSequence();
  assert(m.pool.grow(seq, prompt.length + n));
  const argmax = (x: Float32Array) => x.reduce((best, v, i) => v > x[best] ? i : best, 0);
  const out: number[] = [];
  let logits = await m.step({
    ids: prompt,
    pos: prompt.map((_, i) => i),
    seq: prompt.map(() => 0),
    blockTables: [seq.blockTable],
    logitRows: [prompt.length - 1],
  });
  for (let i = 0; i < n; i++) {
    out.push(argmax(logits));
    if (i === n - 1) break;
    const step = { ids: [out[i]], pos: [prompt.length + i], seq: [0], blockTables: [seq.blockTable], logitRows: [0] };
    logits = await m.step(step);
  }
  m.pool.release(seq);
  return out;
}
