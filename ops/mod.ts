/**
 * The op registry: every op by name, and the typed builder helpers re-exported. Adding an op = one file in
 * `ops/` + one line here (static imports, no reflection).
 *
 * @example
 * ```ts
 * import { REGISTRY } from "./mod.ts";
 * REGISTRY.get("rms_norm")?.inputNames; // ["x", "w"]
 * ```
 *
 * @module
 */

import type { OpDef } from "./op.ts";
import { addOp } from "./add.ts";
import { attentionOp } from "./attention.ts";
import { attentionRowsOp } from "./attention_rows.ts";
import { attnTemperatureOp } from "./attn_temperature.ts";
import { concatOp } from "./concat.ts";
import { embeddingOp } from "./embedding.ts";
import { gatherRowsOp } from "./gather_rows.ts";
import { geluOp } from "./gelu.ts";
import { matmulOp } from "./matmul.ts";
import { mlaAttentionOp } from "./mla_attention.ts";
import { moeExpertsOp } from "./moe_experts.ts";
import { mlaCacheWriteOp } from "./mla_cache_write.ts";
import { moeGateOp } from "./moe_gate.ts";
import { moeTopKOp } from "./moe_topk.ts";
import { mulOp } from "./mul.ts";
import { patchMergeOp } from "./patch_merge.ts";
import { reshapeOp } from "./reshape.ts";
import { rmsNormOp } from "./rms_norm.ts";
import { ropeOp } from "./rope.ts";
import { sampleOp } from "./sample.ts";
import { scatterRowsOp } from "./scatter_rows.ts";
import { sliceOp } from "./slice.ts";
import { swigluOp } from "./swiglu.ts";
import { writeRowsOp } from "./write_rows.ts";

// deno-lint-ignore no-explicit-any
const ALL: OpDef<any>[] = [
  addOp,
  attentionOp,
  attentionRowsOp,
  attnTemperatureOp,
  concatOp,
  embeddingOp,
  gatherRowsOp,
  geluOp,
  matmulOp,
  mlaAttentionOp,
  moeExpertsOp,
  mlaCacheWriteOp,
  moeGateOp,
  moeTopKOp,
  mulOp,
  patchMergeOp,
  reshapeOp,
  rmsNormOp,
  ropeOp,
  sampleOp,
  scatterRowsOp,
  sliceOp,
  swigluOp,
  writeRowsOp,
];

/** Every op, by `OpDef.name`. */
// deno-lint-ignore no-explicit-any
export const REGISTRY: ReadonlyMap<string, OpDef<any>> = new Map(ALL.map((d) => [d.name, d]));

/** The op named `name`; throws when it is unknown. */
// deno-lint-ignore no-explicit-any
export function getOp(name: string): OpDef<any> {
  const def = REGISTRY.get(name);
  if (!def) throw new Error(`unknown op "${name}" (known: ${[...REGISTRY.keys()].join(", ")})`);
  return def;
}

export type { ConcreteType, Cost, OpDef, RefData, RefTensor } from "./op.ts";
export { add } from "./add.ts";
export { attention, type AttentionAttrs, type AttentionInputs } from "./attention.ts";
export { attentionRows, type AttentionRowsInputs } from "./attention_rows.ts";
export { attnTemperature, type AttnTemperatureAttrs } from "./attn_temperature.ts";
export { concat } from "./concat.ts";
export { embedding, type EmbeddingAttrs } from "./embedding.ts";
export { gatherRows } from "./gather_rows.ts";
export { gelu } from "./gelu.ts";
export { matmul } from "./matmul.ts";
export { mlaAttention, type MlaAttentionAttrs, type MlaInputs, type MlaOptions } from "./mla_attention.ts";
export { moeExperts } from "./moe_experts.ts";
export { moeGate } from "./moe_gate.ts";
export { moeTopK, type MoeTopKAttrs } from "./moe_topk.ts";
export { type MlaCacheInputs, mlaCacheWrite } from "./mla_cache_write.ts";
export { mul } from "./mul.ts";
export { patchMerge } from "./patch_merge.ts";
export { reshape, type ReshapeAttrs } from "./reshape.ts";
export { rmsNorm, type RmsNormAttrs } from "./rms_norm.ts";
export { rope, type RopeAttrs, type RopeOptions } from "./rope.ts";
export { type RopeFrequencyOptions, ropeInvFreq, type YarnConfig, yarnMagnitude } from "./yarn.ts";
export { maskWords, sample, type SampleInputs, sampleRow } from "./sample.ts";
export { scatterRows } from "./scatter_rows.ts";
export { slice, type SliceAttrs } from "./slice.ts";
export { swiglu } from "./swiglu.ts";
export { writeRows } from "./write_rows.ts";
