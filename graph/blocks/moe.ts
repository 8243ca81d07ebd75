/**
 * Mixture-of-experts block (MODEL.md §1, MoE): router logits in f32, softmax top-k (`moe_topk`: ids) with
 * renormalised weights (`moe_gate`), the grouped routed experts (`moe_experts`, f32 accumulation), plus the
 * always-on shared expert.
 *
 * @example
 * ```ts
 * // inside a model's build(): h += moe(g, x, { prefix: "layers.0", … })
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import { add } from "../../ops/add.ts";
import { matmul } from "../../ops/matmul.ts";
import { moeExperts } from "../../ops/moe_experts.ts";
import { moeGate } from "../../ops/moe_gate.ts";
import { moeTopK } from "../../ops/moe_topk.ts";
import { swigluMlp } from "./swiglu.ts";

/** Sizes and dtypes of one MoE layer. */
export type MoeOptions = {
  /** Layer prefix: weights `${prefix}.moe.router`, `${prefix}.moe.gate_up`, …, `${prefix}.shared.*`. */
  prefix: string;
  layer?: number;
  hidden: number;
  experts: number;
  topK: number;
  /** Routed expert width F. */
  width: number;
  /** Shared experts (their widths add up: one SwiGLU of width shared·F); 0 for none. */
  shared: number;
  /** Stored dtype of the routed experts' weights. */
  linearDtype: DType;
  /** Stored dtype of the shared expert's weights (default `linearDtype`). */
  sharedDtype?: DType;
  routerDtype: DType;
};

/** `x [T, D]` (already normed) → `[T, D]`. */
export function moe(g: GraphBuilder, x: Tensor, o: MoeOptions): Tensor {
  const { prefix: p, layer } = o;
  const at = (name: string) => ({ name: `${p}.${name}`, layer });
  const router = g.weight(`${p}.moe.router`, [o.experts, o.hidden], o.routerDtype);
  const logits = matmul(g, x, router, at("moe.logits")); // [T, E]
  const ids = moeTopK(g, logits, { topK: o.topK, ...at("moe.route") }); // i32 [T, k]
  const weights = moeGate(g, logits, ids, at("moe.gate")); // [T, k]
  const gateUp = g.weight(`${p}.moe.gate_up`, [o.experts, 2 * o.width, o.hidden], o.linearDtype);
  const down = g.weight(`${p}.moe.down`, [o.experts, o.hidden, o.width], o.linearDtype);
  const routed = moeExperts(g, x, ids, weights, gateUp, down, at("moe.routed")); // [T, D]
  if (o.shared === 0) return routed;
  const shared = swigluMlp(g, x, {
    prefix: `${p}.shared`,
    hidden: o.hidden,
    width: o.shared * o.width,
    dtype: o.sharedDtype ?? o.linearDtype,
    layer,
  });
  return add(g, routed, shared, at("moe.out"));
}
