/**
 * `rope`: rotary position embedding on interleaved pairs: pair i = elements (2i, 2i+1) of the last dim is rotated
 * by angle `pos · invFreq[i]`, and cos/sin are scaled by `magnitude` (YaRN's attention factor; 1 for Mistral
 * Small 4). `x [T, Dr]` or `[T, H, Dr]` with `Dr = 2 · invFreq.length`; `positions i32 [T]` → same shape as x.
 *
 * Two-dimensional rope (vision: rows and columns) uses `positions i32 [T, P]` and `pairAxis`, the position
 * column each pair reads (e.g. 16 pairs on rows then 16 on columns).
 *
 * Angles are formed in f32 (`fround(fround(θ) · pos)`) as transformers does, so the reference matches the
 * checkpoint's behaviour at large positions; cos and sin are then exact.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { rope } from "./rope.ts";
 * const g = new GraphBuilder();
 * const x = g.input("q_pe", [5, 4, 16], "f32");
 * const y = rope(g, x, g.input("pos", [5], "i32"), { theta: 1e4 }); // [5, 4, 16]
 * ```
 *
 * @module
 */

import type { GraphBuilder, NodeOptions, Tensor } from "../graph/builder.ts";
import { numel } from "../graph/ir.ts";
import { concreteDim, expectDim, expectDType, expectFloat, expectRank, ioBytes, lastDim, type OpDef } from "./op.ts";
import { ropeInvFreq, type YarnConfig, yarnMagnitude } from "./yarn.ts";

/**
 * `invFreq`: per-pair angular speed (length Dr / 2); `magnitude`: cos/sin factor; `pairAxis`: for 2-D
 * positions, the position column of each pair (empty for 1-D positions).
 */
export type RopeAttrs = { invFreq: number[]; magnitude: number; pairAxis: number[] };

/** The `rope` op. */
export const ropeOp: OpDef<RopeAttrs> = {
  name: "rope",
  inputNames: ["x", "positions"],
  inferShape([x, pos], { invFreq, magnitude, pairAxis }) {
    expectFloat("x", x);
    expectRank("x", x, [2, 3]);
    expectDType("positions", pos, "i32");
    expectRank("positions", pos, [1, 2]);
    expectDim("tokens (x dim 0 vs positions dim 0)", x.shape[0], pos.shape[0]);
    const dr = concreteDim("last dim of x", lastDim(x.shape));
    if (!Array.isArray(invFreq) || invFreq.length * 2 !== dr) {
      throw new Error(`invFreq must have ${dr / 2} entries (last dim ${dr}), got ${invFreq?.length}`);
    }
    if (typeof magnitude !== "number") throw new Error("magnitude must be a number");
    if (pos.shape.length === 1 && pairAxis.length !== 0) throw new Error("pairAxis needs positions [T, P]");
    if (pos.shape.length === 2) {
      const p = concreteDim("positions dim 1", pos.shape[1]);
      if (pairAxis.length !== invFreq.length || pairAxis.some((a) => !Number.isInteger(a) || a < 0 || a >= p)) {
        throw new Error(`pairAxis must give a column in 0..${p - 1} for each of ${invFreq.length} pairs`);
      }
    }
    return { shape: [...x.shape], dtype: x.dtype };
  },
  reference([x, pos], out, { invFreq, magnitude, pairAxis }) {
    const t = x.shape[0];
    const dr = x.shape[x.shape.length - 1];
    const heads = numel(x.shape) / (t * dr);
    const p = pos.shape.length === 2 ? pos.shape[1] : 1;
    const half = dr / 2;
    const cos = new Float64Array(half), sin = new Float64Array(half);
    const theta = invFreq.map(Math.fround);
    for (let ti = 0; ti < t; ti++) {
      for (let i = 0; i < half; i++) {
        const position = pos.data[ti * p + (p === 1 ? 0 : pairAxis[i])];
        const angle = Math.fround(theta[i] * position);
        cos[i] = Math.cos(angle) * magnitude;
        sin[i] = Math.sin(angle) * magnitude;
      }
      for (let h = 0; h < heads; h++) {
        const o = (ti * heads + h) * dr;
        for (let i = 0; i < half; i++) {
          const a = x.data[o + 2 * i], b = x.data[o + 2 * i + 1];
          out.data[o + 2 * i] = a * cos[i] - b * sin[i];
          out.data[o + 2 * i + 1] = a * sin[i] + b * cos[i];
        }
      }
    }
  },
  cost(inputs, out) {
    return { flops: 3 * numel(out.shape), bytes: ioBytes(inputs, out) };
  },
};

/** Options of {@link rope}: a frequency table, or the rope config to compute it from. */
export type RopeOptions = NodeOptions & {
  /** Precomputed per-pair speeds; otherwise computed from `theta` (and `yarn`). */
  invFreq?: number[];
  theta?: number;
  yarn?: YarnConfig;
  /** Overrides the YaRN magnitude. */
  magnitude?: number;
  pairAxis?: number[];
};

/** Rotates interleaved pairs of the last dim of `x` by position. */
export function rope(g: GraphBuilder, x: Tensor, positions: Tensor, options: RopeOptions): Tensor {
  const { invFreq, theta, yarn, magnitude, pairAxis = [], ...node } = options;
  const dr = x.shape[x.shape.length - 1];
  let table = invFreq;
  if (!table) {
    if (theta === undefined || typeof dr !== "number") {
      throw new Error("rope: pass invFreq, or theta with a concrete Dr");
    }
    table = ropeInvFreq({ dim: dr, theta, yarn });
  }
  const attrs: RopeAttrs = { invFreq: table, magnitude: magnitude ?? yarnMagnitude(yarn), pairAxis };
  return g.op(ropeOp, [x, positions], attrs, node);
}
