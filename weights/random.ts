/**
 * Seeded random weights for the canonical tensor set: presets run without a checkpoint, and `make-checkpoint`
 * writes the same values to disk. Each tensor draws from its own stream seeded by (seed, canonical name), so adding
 * or removing a tensor never changes the others, and values are produced already rounded to their stored dtype, so
 * a checkpoint written from them loads back bit-identical.
 *
 * Scaling keeps a forward pass in a realistic range through many layers: linears have std 1/sqrt(fan_in) (output
 * variance ≈ input variance), norms are 1 ± 0.05, the embedding has std 1 (it is rms-normed before use), the router
 * gives N(0, 1) logits (routing varies by token), and the head gives logits with a spread of about 2.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import {
  type CanonicalTensor,
  canonicalTensors,
  checkpointTensors,
  LINEAR_GROUPS,
  type Mistral4Config,
  type Mistral4LinearGroup,
} from "../graph/models/mistral4.ts";
import { f32ToBytes, type FloatDType, quantizeFp8 } from "./codecs.ts";
import { nvfp4Weight } from "./convert.ts";
import { broadcastIndex, type CanonicalWeight } from "./load.ts";

/** The dtypes random weights (and `make-checkpoint --dtype`) can be produced in. */
export type RandomDType = "f32" | "bf16" | "f8e4m3" | "nvfp4";

/**
 * The text linears the NVFP4 release (`mistralai/Mistral-Small-4-119B-2603-NVFP4`) quantises: every expert
 * (routed and shared, and dense MLPs, which its recipe would take too); attention stays BF16.
 */
export const NVFP4_RELEASE_LINEARS: readonly Mistral4LinearGroup[] = ["dense_mlp", "shared_experts", "routed_experts"];

/** Options of {@link randomCanonicalWeights}. */
export interface RandomWeightsOptions {
  /** Base seed; each tensor's stream is seeded by (seed, tensor name). */
  seed: number;
  /** Checkpoint dtype (see {@link configForDtype}); default the config's own. */
  dtype?: DType;
  /** `text` (default): the decoder only; `all`: with the vision tower and projector. */
  group?: "text" | "all";
}

/**
 * The config of a checkpoint stored in `dtype`: `f32` / `bf16` make every weight that dtype (no quantisation);
 * `f8e4m3` quantises the text linears (per-tensor FP8 with static activation scales, as the official checkpoint);
 * `nvfp4` quantises the linears the NVFP4 release does (W4A4 compressed-tensors, attention kept; a config already
 * NVFP4 keeps its own choice). The rest stays in the config's dtype. Build the graph from this config so its
 * declared dtypes match the weights.
 *
 * @example
 * ```ts
 * import { presetConfig } from "../graph/models/mistral4.ts";
 * configForDtype(presetConfig("tiny"), "f8e4m3").quantization; // { weight_dtype: "f8e4m3", … }
 * ```
 */
export function configForDtype(config: Mistral4Config, dtype?: DType): Mistral4Config {
  if (dtype === undefined) return config;
  if (dtype === "f32" || dtype === "bf16") return { ...config, dtype, quantization: null };
  const dt = config.dtype === "f32" || config.dtype === "bf16" ? config.dtype : "bf16";
  if (dtype === "f8e4m3") {
    return { ...config, dtype: dt, quantization: { weight_dtype: "f8e4m3", activation_scheme: "static" } };
  }
  if (dtype === "nvfp4") {
    const q = config.quantization?.weight_dtype === "nvfp4" ? config.quantization : null;
    const linears = LINEAR_GROUPS.filter((g) => (q?.linears ?? NVFP4_RELEASE_LINEARS).includes(g));
    return {
      ...config,
      dtype: dt,
      quantization: { weight_dtype: "nvfp4", activation_scheme: q?.activation_scheme ?? "static", linears },
    };
  }
  throw new RangeError(`random weights: dtype ${dtype} is not supported (use f32, bf16, f8e4m3 or nvfp4)`);
}

/** 32-bit FNV-1a of the name mixed with the seed through murmur3's finaliser: one stream per (seed, name). */
export function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1);
  for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Fills `out` with uniform values of mean `mean` and std `std` from mulberry32. Uniform rather than normal: it is
 * several times faster than Box-Muller and its bounded range uses the FP8 grid well; the scale is what matters.
 */
function fillUniform(out: Float32Array, state: number, mean: number, std: number): void {
  const width = std * Math.sqrt(12) / 4294967296; // uniform on [-√3·std, √3·std] has standard deviation std
  let a = state >>> 0;
  for (let i = 0; i < out.length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = mean + (((t ^ (t >>> 14)) >>> 0) - 2147483648) * width;
  }
}

/** Mean and std of one canonical weight, by its role (module docs). */
function distribution(t: CanonicalTensor, config: Mistral4Config): { mean: number; std: number } {
  const n = t.name;
  const D = config.hidden_size;
  const head = 2 / Math.sqrt(D); // logits = rms-normed h (unit rms) · W: std ≈ 2
  if (n === "lm_head" || (n === "embed" && config.tie_word_embeddings)) return { mean: 0, std: head };
  if (n === "embed") return { mean: 0, std: 1 };
  if (n.endsWith(".bias")) return { mean: 0, std: 0.02 };
  if (t.shape.length === 1) return { mean: 1, std: 0.05 / Math.sqrt(3) }; // norms: 1 ± 0.05
  const fanIn = t.shape.length === 4 ? t.shape.slice(1).reduce((a, b) => a * b, 1) : t.shape[t.shape.length - 1];
  return { mean: 0, std: 1 / Math.sqrt(fanIn) }; // linears, experts, router, patch conv
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The random weights of one config: the weights of a group and a generator for each, one tensor at a time. */
export interface RandomWeightSource {
  /** The config the weights are for (after {@link configForDtype}). */
  config: Mistral4Config;
  /** Canonical weights (not scales) of the group, in canonical order. */
  tensors: CanonicalTensor[];
  /** Generates one canonical weight (with its FP8 or NVFP4 scales); deterministic, independent of the others. */
  generate(name: string): CanonicalWeight;
}

/**
 * A lazy source of random canonical weights, for writers that produce one tensor at a time.
 *
 * @example
 * ```ts
 * import { presetConfig } from "../graph/models/mistral4.ts";
 * const src = randomWeightSource(presetConfig("tiny"), { seed: 0 });
 * const norm = src.generate("norm"); // bf16, [64]
 * ```
 */
export function randomWeightSource(config: Mistral4Config, options: RandomWeightsOptions): RandomWeightSource {
  const c = configForDtype(config, options.dtype);
  const all = canonicalTensors(c);
  const byName = new Map(all.map((t) => [t.name, t]));
  // A scale that some layout stores coarser than the canonical shape (HF's one scale per expert for gate ‖ up) must
  // be chosen at that granularity, or that layout could not hold it.
  const coarse = new Map<string, readonly number[]>();
  if (c.quantization) {
    for (const s of checkpointTensors(c, "hf")) {
      if (s.transform.kind === "broadcast") coarse.set(s.canonicalName, s.shape);
    }
  }
  const tensors = all.filter((t) => t.kind === "weight" && (options.group === "all" || t.group === "text"));
  const generate = (name: string): CanonicalWeight => {
    const t = byName.get(name);
    if (!t || t.kind !== "weight") throw new Error(`random weights: no canonical weight "${name}"`);
    const values = new Float32Array(numel(t.shape));
    const { mean, std } = distribution(t, c);
    fillUniform(values, tensorSeed(options.seed, name), mean, std);
    const w: CanonicalWeight = { name, shape: [...t.shape], dtype: t.dtype, data: new Uint8Array() };
    if (t.dtype === "f8e4m3") {
      const scale = byName.get(`${name}.scale`);
      const scaleShape = scale?.shape ?? [1];
      const blockShape = coarse.get(`${name}.scale`) ?? scaleShape;
      const q = quantizeFp8(values, numel(blockShape));
      w.data = q.codes;
      w.scales = new Float32Array(numel(scaleShape));
      for (let i = 0; i < w.scales.length; i++) w.scales[i] = q.scales[broadcastIndex(i, scaleShape, blockShape)];
    } else if (t.dtype === "nvfp4") {
      // One global scale per source linear, as a real checkpoint has (the canonical `.global_scale` shape).
      return nvfp4Weight(name, t.shape, values, byName.get(`${name}.global_scale`)!.shape.reduce((a, b) => a * b, 1));
    } else if (t.dtype === "f32" || t.dtype === "bf16" || t.dtype === "f16") {
      w.data = f32ToBytes(values, t.dtype as FloatDType);
    } else {
      throw new RangeError(`random weights: ${name} has dtype ${t.dtype}; use f32, bf16, f8e4m3 or nvfp4`);
    }
    return w;
  };
  return { config: c, tensors, generate };
}

/**
 * Deterministic random canonical weights for `config` (a preset, usually), in their stored dtype: bf16/f32 values
 * are rounded, FP8 weights are codes with one scale per block (absmax/448) as `canonicalTensors` declares, NVFP4
 * weights E2M1 codes with folded block scales and one global scale per source linear.
 *
 * @example
 * ```ts
 * import { presetConfig } from "../graph/models/mistral4.ts";
 * const weights = randomCanonicalWeights(presetConfig("tiny"), { seed: 0, dtype: "f8e4m3" });
 * weights.get("layers.0.attn.wq_a")!.scales; // Float32Array [s]
 * ```
 */
export function randomCanonicalWeights(
  config: Mistral4Config,
  options: RandomWeightsOptions,
): Map<string, CanonicalWeight> {
  const src = randomWeightSource(config, options);
  return new Map(src.tensors.map((t) => [t.name, src.generate(t.name)]));
}
