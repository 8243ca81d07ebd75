/**
 * Seeded random weights for the canonical tensor set: presets run without a checkpoint, and `make-checkpoint`
 * writes the same values to disk. Each tensor draws from its own stream seeded by (seed, canonical name), so adding
 * or removing a tensor never changes the others, and values are produced already rounded to their stored dtype, so
 * a checkpoint written from them loads back bit-identical. {@link randomWeightSources} gives them as row-chunk
 * sources (nothing generated until read); {@link randomCanonicalWeights} as whole tensors, from the same generator.
 *
 * Scaling keeps a forward pass in a realistic range through many layers: linears have std 1/sqrt(fan_in) (output
 * variance ≈ input variance), norms are 1 ± 0.05, the embedding has std 1 (it is rms-normed before use), the router
 * gives N(0, 1) logits (routing varies by token), and the head gives logits with a spread of about 2.
 *
 * ## The generator, exactly (what a device kernel must reproduce)
 *
 * All integer arithmetic is on unsigned 32-bit words, wrapping (`imul` = the low 32 bits of the product).
 * 1. Stream state: `state = tensorSeed(seed, name)` (FNV-1a over the UTF-8 name, seeded with `seed · 0x9e3779b1`,
 *    then murmur3's finaliser; see {@link tensorSeed}). Each source's `random.state` carries it.
 * 2. Element `i` (row-major over the whole canonical tensor, from 0) takes `a = state + (i + 1) · 0x6d2b79f5` and
 *    mulberry32's output hash: `t = imul(a ^ (a >>> 15), a | 1); t ^= t + imul(t ^ (t >>> 7), t | 61);
 *    h = t ^ (t >>> 14)`.
 * 3. Its value is `f32(mean + (h − 2^31) · w)` with `w = std · √12 / 2^32`: `√12`, `std · √12`, the product and
 *    the sum are each IEEE f64 operations (round to nearest even; `/ 2^32` and `h − 2^31` are exact), and the one
 *    rounding to f32 is round to nearest even. (Doing these steps in f32 instead changes the last bit of about a
 *    third of the elements: a device without f64 must emulate them.) `mean` and `std` are the recipe's f64 numbers.
 * 4. Stored dtype: bf16 / f16 round the f32 to nearest even. f8e4m3: the tensor splits into equal contiguous
 *    blocks of whole K-rows, one per scale of the coarsest layout that stores it (one per source linear, gate and
 *    up apart; one per expert for routed experts, HF keeping one for gate ‖ up), each with `s = f32(amax / 448)`
 *    (1 when amax is 0; amax over the block's f32 values) and codes `e4m3(f32(x / s))` (f64 division, RNE,
 *    saturating at ±448). nvfp4: the tensor splits into equal runs of whole K-rows, one per source linear (the
 *    canonical `.global_scale`'s elements), each with `g = f32(2688 / amax)` (1 for zeros), and per 16 values
 *    (largest magnitude `bmax`) `c = e4m3(f32(f32(bmax / 6) · g))`, `eff = f32(e4m3value(c) / g)` and codes
 *    `e2m1(x / eff)` with `encodeE2m1`'s boundaries (0 where eff is 0); the chunk's folded scale is `eff`.
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
import { FLOAT_BYTES, type FloatDType, NVFP4_BLOCK } from "./codecs.ts";
import type { CanonicalWeight } from "./load.ts";
import { RandomTensorSource, tensorSeed } from "./random_source.ts";
import { leadingRows } from "./source.ts";
import { broadcastIndex, numel } from "./transforms.ts";

export { fillUniform, fillUniformAt, RandomTensorSource, tensorSeed } from "./random_source.ts";

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
  /** The preset's name, for sources' `origin` (`preset tiny seed 0`). */
  preset?: string;
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

/** A random canonical weight's generator, and for FP8 the shapes of its canonical and quantisation scales. */
interface Planned {
  source: RandomTensorSource;
  /** FP8: the canonical `.scale` shape, and the (possibly coarser) blocks the values were quantised in. */
  scaleShape?: readonly number[];
  blockShape?: readonly number[];
}

/** The random weights of a config: the weights of the group, and how each is made. */
function plan(config: Mistral4Config, options: RandomWeightsOptions) {
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
  const origin = `${options.preset ? `preset ${options.preset}` : "random weights"} seed ${options.seed}`;
  const make = (t: CanonicalTensor): Planned => {
    const n = numel(t.shape), recipe = { state: tensorSeed(options.seed, t.name), ...distribution(t, c) };
    const spec = { name: t.name, shape: t.shape, dtype: t.dtype, recipe, origin };
    if (t.dtype === "f8e4m3") {
      const scaleShape = byName.get(`${t.name}.scale`)?.shape ?? [1];
      const blockShape = coarse.get(`${t.name}.scale`) ?? scaleShape;
      const source = new RandomTensorSource({ ...spec, bytes: n + 4 * numel(scaleShape), runs: numel(blockShape) });
      return { source, scaleShape, blockShape };
    }
    if (t.dtype === "nvfp4") {
      // One global scale per source linear, as a real checkpoint has (the canonical `.global_scale` shape).
      const runs = numel(byName.get(`${t.name}.global_scale`)!.shape);
      return { source: new RandomTensorSource({ ...spec, bytes: n / 2 + n / NVFP4_BLOCK + 4 * runs, runs }) };
    }
    return { source: new RandomTensorSource({ ...spec, bytes: n * (FLOAT_BYTES[t.dtype as FloatDType] ?? 0) }) };
  };
  return { config: c, tensors, byName, make };
}

/** What {@link randomWeightSources} returns. */
export interface RandomWeightSources {
  /** The config the weights are for (after {@link configForDtype}). */
  config: Mistral4Config;
  /** One row-chunk source per canonical weight of the group, in canonical order; each carries its `random` recipe. */
  sources: Map<string, RandomTensorSource>;
}

/**
 * The random weights of `config` as row-chunk sources: nothing is generated until a chunk is read, and a chunk's
 * values are exactly those rows of {@link randomCanonicalWeights}' weight (FP8 and NVFP4 scales row-local). FP8
 * blocks and NVFP4 runs find their absolute maximum with a generation pass the first time a chunk needs it.
 *
 * @example
 * ```ts
 * import { presetConfig } from "../graph/models/mistral4.ts";
 * const { sources } = randomWeightSources(presetConfig("tiny"), { seed: 0, dtype: "f8e4m3" });
 * const chunk = await sources.get("layers.1.moe.gate_up")!.read(0, 2); // experts 0 and 1
 * ```
 */
export function randomWeightSources(config: Mistral4Config, options: RandomWeightsOptions): RandomWeightSources {
  const p = plan(config, options);
  return { config: p.config, sources: new Map(p.tensors.map((t) => [t.name, p.make(t).source])) };
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
 * A lazy source of random canonical weights, for writers that produce one tensor at a time: each whole tensor is
 * one chunk of its {@link randomWeightSources} source, with the scales put back in canonical form.
 *
 * @example
 * ```ts
 * import { presetConfig } from "../graph/models/mistral4.ts";
 * const src = randomWeightSource(presetConfig("tiny"), { seed: 0 });
 * const norm = src.generate("norm"); // bf16, [64]
 * ```
 */
export function randomWeightSource(config: Mistral4Config, options: RandomWeightsOptions): RandomWeightSource {
  const { config: c, tensors, byName, make } = plan(config, options);
  const generate = (name: string): CanonicalWeight => {
    const t = byName.get(name);
    if (!t || t.kind !== "weight") throw new Error(`random weights: no canonical weight "${name}"`);
    const { source, scaleShape, blockShape } = make(t);
    const whole = source.readSync(0, leadingRows(t.shape));
    const w: CanonicalWeight = { name, shape: [...t.shape], dtype: t.dtype, data: whole.data };
    if (t.dtype === "f8e4m3") {
      const blocks = source.runScales();
      w.scales = new Float32Array(numel(scaleShape!));
      for (let i = 0; i < w.scales.length; i++) w.scales[i] = blocks[broadcastIndex(i, scaleShape!, blockShape!)];
    } else if (t.dtype === "nvfp4") {
      w.scales = whole.scales;
      w.globalScales = source.runScales();
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
