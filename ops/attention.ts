/**
 * `attention`: plain (non-causal) multi-head attention over one packed batch of independent groups, as the vision
 * encoder needs: `q [N, H, d]`, `k [N, H, d]`, `v [N, H, dv]`, `segment i32 [N]` → `[N, H, dv]`. Row i attends
 * to every row j with `segment[j] = segment[i]` (block-diagonal: a patch sees only the patches of its own image),
 * scores `scale · q·k`, softmax in f64. Each segment's rows must be one contiguous run (as `visionBatch` packs
 * images): the reference does not need it, but the `wasm` kernel attends over row ranges and refuses other layouts.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { sym } from "../graph/ir.ts";
 * import { attention } from "./attention.ts";
 * const g = new GraphBuilder();
 * const P = sym("P", 64);
 * const [q, k, v] = ["q", "k", "v"].map((n) => g.input(n, [P, 2, 16], "f32"));
 * const y = attention(g, { q, k, v, segment: g.input("segment", [P], "i32") }, { scale: 0.25 }); // [P, 2, 16]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import {
  concreteDim,
  expectDim,
  expectDType,
  expectFloat,
  expectRank,
  ioBytes,
  type OpDef,
  type RefTensor,
} from "./op.ts";

/** `scale`: the softmax scale (1/√d for the vision encoder). */
export type AttentionAttrs = { scale: number };

/** The `attention` op. */
export const attentionOp: OpDef<AttentionAttrs> = {
  name: "attention",
  inputNames: ["q", "k", "v", "segment"],
  inferShape([q, k, v, segment], { scale }) {
    for (const [n, t] of [["q", q], ["k", k], ["v", v]] as const) {
      expectFloat(n, t);
      expectRank(n, t, 3);
    }
    expectDType("segment", segment, "i32");
    expectRank("segment", segment, 1);
    for (let i = 0; i < 2; i++) {
      expectDim(`q vs k dim ${i}`, q.shape[i], k.shape[i]);
      expectDim(`q vs v dim ${i}`, q.shape[i], v.shape[i]);
    }
    expectDim("q vs k head dim", q.shape[2], k.shape[2]);
    expectDim("rows (q vs segment)", q.shape[0], segment.shape[0]);
    concreteDim("heads", q.shape[1]);
    if (typeof scale !== "number" || !(scale > 0)) throw new Error(`scale must be a number > 0, got ${scale}`);
    return { shape: [q.shape[0], q.shape[1], v.shape[2]], dtype: q.dtype };
  },
  reference([q, k, v, segment], out, { scale }) {
    const [n, heads] = q.shape;
    const args = { q, k, v, segment, out, scale, scores: new Float64Array(n), acc: new Float64Array(v.shape[2]) };
    for (let i = 0; i < n; i++) for (let h = 0; h < heads; h++) attendRow(args, i, i, h);
  },
  cost(inputs, out) {
    // Upper bound: one segment holding every row.
    const [n, heads, d] = inputs[0].shape, dv = inputs[2].shape[2];
    return { flops: 2 * n * n * heads * (d + dv), bytes: ioBytes(inputs, out) };
  },
};

/** What {@link attendRow} reads and writes: the op's tensors, the scale, and per-row f64 scratch. */
export type AttendRowArgs = {
  q: RefTensor;
  k: RefTensor;
  v: RefTensor;
  segment: RefTensor;
  out: RefTensor;
  scale: number;
  scores: Float64Array;
  acc: Float64Array;
};

/**
 * The reference of one query row and head: `q` row `qi` attends to the key rows `j < segment` length whose segment
 * is `segment[row]` (`row`: the query's row in the batch), in f64, written to `out` row `qi`. Shared by `attention`
 * and `attention_rows`, so the two agree bit for bit.
 */
export function attendRow(a: AttendRowArgs, qi: number, row: number, h: number): void {
  const { q, k, v, out, scale, scores, acc } = a, seg = a.segment.data;
  const heads = q.shape[1], d = q.shape[2], dv = v.shape[2], n = seg.length;
  const qo = (qi * heads + h) * d;
  let max = -Infinity;
  for (let j = 0; j < n; j++) {
    if (seg[j] !== seg[row]) continue;
    const ko = (j * heads + h) * d;
    let s = 0;
    for (let c = 0; c < d; c++) s += q.data[qo + c] * k.data[ko + c];
    scores[j] = s * scale;
    if (scores[j] > max) max = scores[j];
  }
  acc.fill(0);
  let sum = 0;
  for (let j = 0; j < n; j++) {
    if (seg[j] !== seg[row]) continue;
    const p = Math.exp(scores[j] - max);
    sum += p;
    const vo = (j * heads + h) * dv;
    for (let c = 0; c < dv; c++) acc[c] += p * v.data[vo + c];
  }
  const oo = (qi * heads + h) * dv;
  for (let c = 0; c < dv; c++) out.data[oo + c] = acc[c] / sum;
}

/** The tensors of one {@link attention} call. */
export type AttentionInputs = { q: Tensor; k: Tensor; v: Tensor; segment: Tensor };

/** Non-causal attention within segments. */
export function attention(g: GraphBuilder, x: AttentionInputs, options: NodeOptions & AttentionAttrs): Tensor {
  const { scale, ...node } = options;
  return g.op(attentionOp, [x.q, x.k, x.v, x.segment], { scale }, node);
}
