/**
 * Rope wiring for Mistral 4: the frequency table (YaRN when configured) and cos/sin magnitude as op attributes,
 * the Llama-4 query temperature, and the MLA softmax scale. The formulas live in `ops/yarn.ts` and
 * `ops/attn_temperature.ts`; this file only maps config fields onto them, so every MODEL.md L/U value stays a
 * config field.
 *
 * @example
 * ```ts
 * import { presetConfig } from "../models/mistral4_presets.ts";
 * import { ropeTable, softmaxScale } from "./rope.ts";
 * const c = presetConfig("mistral-small-4");
 * ropeTable(c).invFreq.length; // 32
 * softmaxScale(c); // 0.0883883… (plain 1/sqrt(128))
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { Mistral4Config } from "../models/mistral4_config.ts";
import { attnTemperature } from "../../ops/attn_temperature.ts";
import { rope } from "../../ops/rope.ts";
import { ropeInvFreq, type YarnConfig, yarnGetMscale, yarnMagnitude } from "../../ops/yarn.ts";

/** Per-pair angular speeds and the cos/sin magnitude: exactly the `rope` op's attributes. */
export type RopeTable = { invFreq: number[]; magnitude: number };

/** The config's YaRN settings in the ops' terms; undefined for plain rope. Absent mscale keys stay absent. */
export function yarnConfig(c: Mistral4Config): YarnConfig | undefined {
  const s = c.rope_scaling;
  if (!s) return undefined;
  const y: YarnConfig = {
    factor: s.factor,
    originalMaxPositionEmbeddings: s.original_max_position_embeddings,
    betaFast: s.beta_fast,
    betaSlow: s.beta_slow,
  };
  if (s.mscale !== null) y.mscale = s.mscale;
  if (s.mscale_all_dim !== null) y.mscaleAllDim = s.mscale_all_dim;
  if (s.attention_factor !== null) y.attentionFactor = s.attention_factor;
  return y;
}

/** The text rope table over `qk_rope_head_dim` (identical for q and the shared k). */
export function ropeTable(c: Mistral4Config): RopeTable {
  const yarn = yarnConfig(c);
  return {
    invFreq: ropeInvFreq({ dim: c.qk_rope_head_dim, theta: c.rope_theta, yarn }),
    magnitude: yarnMagnitude(yarn),
  };
}

/** Llama-4 temperature settings, or null when β is 0 or absent (the node is then left out). */
export function queryTemperature(c: Mistral4Config): { beta: number; original: number } | null {
  const s = c.rope_scaling;
  if (!s || s.llama_4_scaling_beta === 0) return null;
  return { beta: s.llama_4_scaling_beta, original: s.llama_4_scaling_original_max_position_embeddings };
}

/**
 * MLA softmax scale. `plain`: 1/sqrt(dn + dr). `deepseek_yarn`: times mscale² with
 * mscale = 0.1·mscale_all_dim·ln(factor) + 1 (an absent or zero mscale_all_dim leaves it plain, as DeepSeek's code).
 */
export function softmaxScale(c: Mistral4Config): number {
  const plain = 1 / Math.sqrt(c.qk_nope_head_dim + c.qk_rope_head_dim);
  const s = c.rope_scaling;
  if (c.softmax_scale_mode !== "deepseek_yarn" || !s || !s.mscale_all_dim) return plain;
  const m = yarnGetMscale(s.factor, s.mscale_all_dim);
  return plain * m * m;
}

/** Node name and layer of a helper's result. */
export type RopeNode = { name: string; layer?: number };

/** Rotates interleaved pairs of `x [T, Dr]` or `[T, H, Dr]` at absolute positions `pos [T]`. */
export function applyRope(g: GraphBuilder, x: Tensor, pos: Tensor, table: RopeTable, node: RopeNode): Tensor {
  return rope(g, x, pos, { invFreq: table.invFreq, magnitude: table.magnitude, ...node });
}

/** Scales the query by the Llama-4 temperature at each token's position; returns `q` when disabled. */
export function applyTemperature(
  g: GraphBuilder,
  q: Tensor,
  pos: Tensor,
  temperature: { beta: number; original: number } | null,
  node: RopeNode,
): Tensor {
  return temperature ? attnTemperature(g, q, pos, { ...temperature, ...node }) : q;
}
