/**
 * RoPE frequency tables: plain (`θ_i = base^(-2i/dim)`) and YaRN (NTK-by-parts interpolation), plus YaRN's cos/sin
 * magnitude factor. Mirrors transformers' `_compute_yarn_parameters` (with `truncate`, the default) so the table
 * equals `fixtures/model/derived_yarn_and_scales.json` for the Mistral Small 4 config.
 *
 * @example
 * ```ts
 * import { ropeInvFreq, yarnMagnitude } from "./yarn.ts";
 * const yarn = { factor: 128, originalMaxPositionEmbeddings: 8192, betaFast: 32, betaSlow: 1 };
 * const magnitude = yarnMagnitude({ ...yarn, mscale: 1, mscaleAllDim: 1 }); // 1.0 (1.485 when a key is missing)
 * const invFreq = ropeInvFreq({ dim: 64, theta: 1e4, yarn }); // 32 angles per position step
 * ```
 *
 * @module
 */

/**
 * YaRN settings as read from the checkpoint config. `mscale` / `mscaleAllDim` are optional because a config may
 * lack them, and that changes the result (missing → the magnitude becomes `0.1·ln(factor) + 1`).
 */
export type YarnConfig = {
  factor: number;
  originalMaxPositionEmbeddings: number;
  betaFast: number;
  betaSlow: number;
  mscale?: number;
  mscaleAllDim?: number;
  /** `attention_factor` when the config sets it explicitly: overrides the mscale ratio. */
  attentionFactor?: number;
  /** Round the correction range to whole dims (transformers' default `truncate: true`). */
  truncate?: boolean;
};

/** Options of {@link ropeInvFreq}. */
export type RopeFrequencyOptions = { dim: number; theta: number; yarn?: YarnConfig };

/** YaRN's magnitude helper: `0.1·mscale·ln(scale) + 1` above scale 1. */
export function yarnGetMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** The factor cos and sin are multiplied by; 1 without YaRN. */
export function yarnMagnitude(yarn: YarnConfig | undefined): number {
  if (!yarn) return 1;
  if (yarn.attentionFactor !== undefined) return yarn.attentionFactor;
  // Python truthiness in transformers: a missing or zero key falls back to the plain form.
  if (yarn.mscale && yarn.mscaleAllDim) {
    return yarnGetMscale(yarn.factor, yarn.mscale) / yarnGetMscale(yarn.factor, yarn.mscaleAllDim);
  }
  return yarnGetMscale(yarn.factor);
}

/** The dim index at which a frequency completes `rotations` turns over the original context. */
function correctionDim(rotations: number, dim: number, base: number, maxPos: number): number {
  return (dim * Math.log(maxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

/** The per-pair angular speeds θ_i (`dim / 2` of them), f64. */
export function ropeInvFreq({ dim, theta, yarn }: RopeFrequencyOptions): number[] {
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0) throw new Error(`rope dim must be even, got ${dim}`);
  const half = dim / 2;
  const f = Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / dim));
  if (!yarn || yarn.factor <= 1) return f;
  const { factor, originalMaxPositionEmbeddings: maxPos, betaFast, betaSlow, truncate = true } = yarn;
  let low = correctionDim(betaFast, dim, theta, maxPos);
  let high = correctionDim(betaSlow, dim, theta, maxPos);
  if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  return f.map((fi, i) => {
    // r = 0: keep the original (extrapolated) speed; r = 1: interpolate by `factor`.
    const r = Math.min(Math.max((i - low) / (high - low), 0), 1);
    return (fi / factor) * r + fi * (1 - r);
  });
}
