/**
 * Mistral 4 (Mistral Small 4) configuration: the `Mistral4Config` type with Hugging Face key names, and its readers
 * for a transformers `config.json` (`mistral3` wrapper or bare `mistral4`) and a Mistral `params.json`.
 *
 * Every value MODEL.md marks likely/unconfirmed is a field here, read from the checkpoint; kernels get them through
 * the graph, never as constants.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { CheckpointError } from "../checkpoint_error.ts";

/**
 * YaRN rope scaling (HF `rope_parameters` / `rope_scaling` with `type: "yarn"`) plus the Llama-4 query temperature.
 * `mscale` / `mscale_all_dim` are `null` when the checkpoint omits them: that changes the cos/sin magnitude
 * (see `yarnMagnitude` in graph/blocks/rope.ts), so absence is kept, not defaulted.
 */
export interface Mistral4RopeScaling {
  /** Always "yarn" (the only scaling this family ships with). */
  type: "yarn";
  /** Context extension factor s (128 for the real model). */
  factor: number;
  /** Pre-extension context length (8192). */
  original_max_position_embeddings: number;
  /** Fast correction boundary in rotations (32). */
  beta_fast: number;
  /** Slow correction boundary in rotations (1). */
  beta_slow: number;
  /** YaRN magnitude numerator coefficient, or null when absent. */
  mscale: number | null;
  /** YaRN magnitude denominator coefficient (also DeepSeek's softmax mscale), or null when absent. */
  mscale_all_dim: number | null;
  /** Explicit cos/sin magnitude (transformers `attention_factor`); null = derive from mscale keys. */
  attention_factor: number | null;
  /** Llama-4 query temperature β: q *= 1 + β·ln(1 + floor(p / period)); 0 disables it. */
  llama_4_scaling_beta: number;
  /** Temperature period (params.json `llama_4_scaling.original_max_position_embeddings`; HF reuses YaRN's). */
  llama_4_scaling_original_max_position_embeddings: number;
}

/**
 * Softmax scale of MLA scores. `plain`: 1/sqrt(qk_head_dim) (Mistral's code; the default). `deepseek_yarn`:
 * mscale²/sqrt(qk_head_dim) with mscale = 0.1·mscale_all_dim·ln(factor) + 1 (DeepSeek / vLLM `apply_yarn_scaling`).
 */
export type SoftmaxScaleMode = "plain" | "deepseek_yarn";

/** Every {@link SoftmaxScaleMode}, the default first. */
export const SOFTMAX_SCALE_MODES: readonly SoftmaxScaleMode[] = ["plain", "deepseek_yarn"];

/**
 * `value` checked as a {@link SoftmaxScaleMode}; anything else throws a RangeError naming `key`, the value and the
 * accepted values (an unknown mode must not fall back to plain: that would silently change the model).
 *
 * @example
 * ```ts
 * softmaxScaleMode("deepseek_yarn", "--softmax-scale"); // "deepseek_yarn"
 * softmaxScaleMode("mscale", "--softmax-scale"); // throws: --softmax-scale: unknown value "mscale" (accepted: …)
 * ```
 */
export function softmaxScaleMode(value: unknown, key: string): SoftmaxScaleMode {
  if (SOFTMAX_SCALE_MODES.includes(value as SoftmaxScaleMode)) return value as SoftmaxScaleMode;
  const accepted = SOFTMAX_SCALE_MODES.map((m) => `"${m}"`).join(", ");
  throw new RangeError(`${key}: unknown value ${JSON.stringify(value)} (accepted: ${accepted})`);
}

/**
 * The softmax scale a transformers config asks for with a Tramontane `softmax_scale_mode` key (in `text_config` or
 * at the top), checked; undefined when it has none.
 */
function explicitSoftmaxScale(text: Json, top: Json, where: string): SoftmaxScaleMode | undefined {
  const [key, value] = text.softmax_scale_mode !== undefined
    ? [top === text ? "softmax_scale_mode" : "text_config.softmax_scale_mode", text.softmax_scale_mode]
    : ["softmax_scale_mode", top.softmax_scale_mode];
  if (value === undefined) return undefined;
  try {
    return softmaxScaleMode(value, key);
  } catch (e) {
    bad(where, (e as Error).message);
  }
}

/** `key` of `obj` as a boolean flag: absent is false, a non-boolean is an error naming it. */
function flag(obj: Json, key: string, where: string): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") bad(where, `"${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Pixtral-style vision encoder and projector (HF `vision_config` of a `mistral3` checkpoint). */
export interface Mistral4VisionConfig {
  /** Encoder width (1024). */
  hidden_size: number;
  /** Encoder depth (24). */
  num_hidden_layers: number;
  /** Encoder heads (16). */
  num_attention_heads: number;
  /** Per-head width (hidden_size / heads = 64). */
  head_dim: number;
  /** SwiGLU width (4096). */
  intermediate_size: number;
  /** Patch side in pixels (14). */
  patch_size: number;
  /** Longest image side before downscaling (1540). */
  image_size: number;
  /** Patch-merge side (2: 2×2 patches → one token). */
  spatial_merge_size: number;
  /** Input channels (3). */
  num_channels: number;
  /** 2-D rope base (1e4). */
  rope_theta: number;
  /** RMSNorm epsilon inside the encoder (1e-5). */
  layer_norm_eps: number;
  /** Whether projector linears carry biases (HF `multimodal_projector_bias`, Mistral `adapter_bias`). */
  multimodal_projector_bias: boolean;
  /** `[IMG]` token id (10). */
  image_token_id: number;
  /** `[IMG_BREAK]` token id (12). */
  image_break_token_id: number;
  /** `[IMG_END]` token id (13). */
  image_end_token_id: number;
}

/**
 * The groups of text linears a checkpoint quantises or leaves alone as a whole: attention (the five MLA
 * projections), the SwiGLU of leading dense layers, the shared experts, the routed experts.
 */
export type Mistral4LinearGroup = NonNullable<Mistral4Quantization["linears"]>[number];

/** Every {@link Mistral4LinearGroup}, in the order `Mistral4Quantization.linears` lists them. */
export const LINEAR_GROUPS: readonly Mistral4LinearGroup[] = [
  "attention",
  "dense_mlp",
  "shared_experts",
  "routed_experts",
];

/** Weight quantisation of the checkpoint's text linears (embeddings, norms, head, router, vision stay `dtype`). */
export interface Mistral4Quantization {
  /** Element type of quantised linears. */
  weight_dtype: Extract<DType, "f8e4m3" | "nvfp4">;
  /**
   * `static`: activation scales are shipped beside the weights (FP8 `activation_scale`; NVFP4 W4A4
   * `input_global_scale`); `dynamic`: none are. Weight-only kernels ignore them either way.
   */
  activation_scheme: "static" | "dynamic";
  /**
   * NVFP4 only: the groups of text linears stored as NVFP4, from the compressed-tensors `ignore` list; the others
   * are `dtype`. The real NVFP4 release keeps attention BF16. Absent: every text linear (FP8 checkpoints).
   */
  linears?: ("attention" | "dense_mlp" | "shared_experts" | "routed_experts")[];
}

/**
 * Whether `config`'s checkpoint stores the text linears of `group` quantised (`config.quantization.weight_dtype`)
 * rather than in `config.dtype`.
 */
export function isQuantizedLinear(config: Mistral4Config, group: Mistral4LinearGroup): boolean {
  const q = config.quantization;
  return q !== null && (q.linears ?? LINEAR_GROUPS).includes(group);
}

/** The Mistral 4 text decoder plus optional vision tower, with HF `mistral4` key names. */
export interface Mistral4Config {
  /** Family key in `graph/models/mod.ts`. */
  model_type: "mistral4";
  /** Vocabulary size V (131072). */
  vocab_size: number;
  /** Residual width D (4096). */
  hidden_size: number;
  /** Decoder layers (36). */
  num_hidden_layers: number;
  /** Attention heads H (32; L). */
  num_attention_heads: number;
  /** Query low-rank width (1024). */
  q_lora_rank: number;
  /** Latent (compressed KV) width (256). */
  kv_lora_rank: number;
  /** Per-head query/key width without rope (64; L). */
  qk_nope_head_dim: number;
  /** Per-head rope width, shared key (64; L). */
  qk_rope_head_dim: number;
  /** Per-head value width (128; L). */
  v_head_dim: number;
  /** Routed experts E (128). */
  n_routed_experts: number;
  /** Experts per token, top-k (4). */
  num_experts_per_tok: number;
  /** Always-on shared experts (1). */
  n_shared_experts: number;
  /** Routed (and per-shared) expert width F. */
  moe_intermediate_size: number;
  /** Width of dense MLP layers, used only for the first `first_k_dense_replace` layers. */
  intermediate_size: number;
  /** Leading dense (non-MoE) layers (0 for the real model). */
  first_k_dense_replace: number;
  /** Expert groups for group-limited routing (1: none). */
  n_group: number;
  /** Groups kept per token (1). */
  topk_group: number;
  /** Renormalise the top-k probabilities. */
  norm_topk_prob: boolean;
  /** Multiplier on routed weights (1.0). */
  routed_scaling_factor: number;
  /** Epsilon of the residual-stream norms (1e-6; L). */
  rms_norm_eps: number;
  /** Epsilon of the two latent norms (q_a, kv_a): transformers builds them with its 1e-6 default. */
  latent_norm_eps: number;
  /** Rope base (1e4; L). */
  rope_theta: number;
  /** Rope pairs (2i, 2i+1) when true (the real checkpoint), half-split otherwise. */
  rope_interleave: boolean;
  /** YaRN + Llama-4 temperature, or null for plain rope. */
  rope_scaling: Mistral4RopeScaling | null;
  /** MLA softmax scale (MODEL.md §1.7's open question; default plain). */
  softmax_scale_mode: SoftmaxScaleMode;
  /** Longest context the checkpoint advertises (1,048,576). */
  max_position_embeddings: number;
  /** lm_head shares the embedding table (false; L). */
  tie_word_embeddings: boolean;
  /** `<s>` (1). */
  bos_token_id: number;
  /** `</s>` (2). */
  eos_token_id: number;
  /** `<pad>` (11). */
  pad_token_id: number;
  /** Element type of unquantised weights (bf16). */
  dtype: DType;
  /** Quantised text linears, or null when every weight is `dtype`. */
  quantization: Mistral4Quantization | null;
  /** Vision tower and projector, or null for a text-only model. */
  vision_config: Mistral4VisionConfig | null;
  /**
   * Set for an EAGLE draft head (`graph/models/eagle.ts`, MODEL.md §7): the checkpoint has `eagle_linear` (Mistral)
   * or `fc` (HF) and no embedding or head of its own; absent or null for a decoder.
   */
  eagle?: EagleSettings | null;
}

/** What sets an EAGLE draft's checkpoint apart from a decoder's (see `graph/models/eagle.ts`). */
export interface EagleSettings {
  /**
   * Index of the draft's first layer in its checkpoint's tensor names: 0, or the target's layer count when the
   * release numbers the draft's layers after the target's (`layers.36.…`); canonical names always start at 0.
   */
  layer_offset: number;
}

/**
 * Whether layer `i` (canonical, from 0) has a dense FFN: its index in the checkpoint's numbering (a draft's layers
 * continue after the target's: `i + eagle.layer_offset`, as vLLM numbers them from `start_layer_id`) is below
 * `first_k_dense_replace`.
 */
export function isDenseLayer(c: Mistral4Config, i: number): boolean {
  return i + (c.eagle?.layer_offset ?? 0) < c.first_k_dense_replace;
}

type Json = Record<string, unknown>;

/** Throws a CheckpointError("bad_config") naming `where`; used by both readers. */
function bad(where: string, message: string): never {
  throw new CheckpointError({ kind: "bad_config", message: `${where}: ${message}`, file: where });
}

function num(obj: Json, key: string, where: string, fallback?: number): number {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    bad(where, `missing number "${key}"`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) bad(where, `"${key}" must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function optNum(obj: Json, key: string, where: string): number | null {
  return obj[key] === undefined || obj[key] === null ? null : num(obj, key, where);
}

function firstId(v: unknown, fallback: number): number {
  if (Array.isArray(v)) return typeof v[0] === "number" ? v[0] : fallback;
  return typeof v === "number" ? v : fallback;
}

function dtypeOf(name: unknown): DType {
  if (name === "float32") return "f32";
  if (name === "float16") return "f16";
  return "bf16";
}

/**
 * HF `quantization_config` → ours: FP8 per-tensor, and NVFP4 compressed-tensors (resolved against `c`'s module
 * names by {@link compressedTensorsQuantization}).
 */
function hfQuantization(q: unknown, c: Mistral4Config, where: string): Mistral4Quantization | null {
  if (q === undefined || q === null) return null;
  const qc = q as Json;
  const method = String(qc.quant_method ?? "").replaceAll("_", "-");
  const activation = qc.activation_scheme === "dynamic" ? "dynamic" : "static";
  if (method === "fp8") {
    if (qc.weight_block_size) bad(where, "block-wise FP8 (weight_block_size) is not supported; use per-tensor FP8");
    return { weight_dtype: "f8e4m3", activation_scheme: activation };
  }
  if (method === "compressed-tensors") return compressedTensorsQuantization(qc, c, where);
  if (method === "modelopt") {
    bad(where, "ModelOpt NVFP4 (weight_scale_2, input_scale) is not supported; use the compressed-tensors checkpoint");
  }
  bad(where, `unsupported quant_method "${method}" (supported: fp8, compressed-tensors nvfp4)`);
}

/**
 * A compressed-tensors `ignore` entry as a predicate on module names: `re:` is Python's `re.match` (anchored at the
 * start only), anything else an exact name.
 */
function ignoreRule(entry: unknown, where: string): (module: string) => boolean {
  if (typeof entry !== "string") bad(where, `quantization_config.ignore: ${JSON.stringify(entry)} is not a string`);
  if (!entry.startsWith("re:")) return (m) => m === entry;
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${entry.slice(3)})`);
  } catch (e) {
    bad(where, `quantization_config.ignore: bad regex "${entry}" (${(e as Error).message})`);
  }
  return (m) => re.test(m);
}

/**
 * The module names one text linear may have in an `ignore` list: the HF names under each prefix a runtime uses
 * (transformers' `model.language_model.`, vLLM's `model.` for both layouts, the older `language_model.model.`) and
 * the Mistral-native name. Each entry is `[hf suffix, mistral suffix]` after `layers.{i}.`.
 */
const GROUP_MODULES: Readonly<Record<Mistral4LinearGroup, (c: Mistral4Config) => [string, string][]>> = {
  attention: () => MLA.map(([h, m]) => [`self_attn.${h}`, `attention.${m}`]),
  dense_mlp: () => SWIGLU.map(([h, m]) => [`mlp.${h}`, `feed_forward.${m}`]),
  shared_experts: () => SWIGLU.map(([h, m]) => [`mlp.shared_experts.${h}`, `shared_experts.${m}`]),
  routed_experts: (c) =>
    Array.from({ length: c.n_routed_experts }, (_, e) => e).flatMap((e) =>
      SWIGLU.map(([h, m]): [string, string] => [`mlp.experts.${e}.${h}`, `experts.${e}.${m}`])
    ),
};
const MLA: [string, string][] = [
  ["q_a_proj", "wq_a"],
  ["q_b_proj", "wq_b"],
  ["kv_a_proj_with_mqa", "wkv_a_with_mqa"],
  ["kv_b_proj", "wkv_b"],
  ["o_proj", "wo"],
];
const SWIGLU: [string, string][] = [["gate_proj", "w1"], ["up_proj", "w3"], ["down_proj", "w2"]];
const HF_LAYER_PREFIXES = ["model.language_model.layers", "model.layers", "language_model.model.layers"];

/**
 * A compressed-tensors `quantization_config` (`quant_method: "compressed-tensors"`, in `config.json` or, for the
 * Mistral-native NVFP4 release, in `params.json`) → ours. Only `nvfp4-pack-quantized` with `Linear` targets is
 * accepted: E2M1 weights, f8e4m3 scales per 16 inputs, one f32 global scale per linear. The `ignore` list is
 * resolved into whole groups of text linears (every layer, every expert alike, else an error); `lm_head` must be
 * ignored. Routers and embeddings are no `Linear`, so they are never quantised whatever the list says.
 */
export function compressedTensorsQuantization(
  qc: Record<string, unknown>,
  c: Mistral4Config,
  where: string,
): Mistral4Quantization {
  const groups = Object.entries((qc.config_groups ?? {}) as Record<string, Json>);
  if (!groups.length) bad(where, "compressed-tensors quantization_config has no config_groups");
  let activations: boolean | undefined;
  for (const [key, g] of groups) {
    const at = `quantization_config.config_groups.${key}`;
    const format = String(g.format ?? qc.format ?? "");
    if (format !== "nvfp4-pack-quantized") {
      bad(where, `${at}: format "${format}" is not supported (only nvfp4-pack-quantized NVFP4)`);
    }
    const w = (g.weights ?? {}) as Json;
    if (w.num_bits !== 4 || (w.type ?? "float") !== "float" || w.group_size !== 16) {
      bad(where, `${at}.weights must be NVFP4 (num_bits 4, type float, group_size 16), got ${JSON.stringify(w)}`);
    }
    if (w.symmetric === false) bad(where, `${at}.weights: asymmetric NVFP4 (zero points) is not supported`);
    const targets = g.targets;
    if (!Array.isArray(targets) || targets.length !== 1 || targets[0] !== "Linear") {
      bad(where, `${at}.targets ${JSON.stringify(targets)} is not supported (only ["Linear"])`);
    }
    const a = g.input_activations !== undefined && g.input_activations !== null;
    if (activations !== undefined && activations !== a) bad(where, "config_groups disagree on input_activations");
    activations = a;
  }
  const ignore = (qc.ignore ?? []) as unknown[];
  if (!Array.isArray(ignore)) bad(where, "quantization_config.ignore is not a list");
  const rules = ignore.map((e) => ignoreRule(e, where));
  const ignored = (names: string[]) => names.some((n) => rules.some((r) => r(n)));
  if (!ignored(["lm_head", "language_model.lm_head", "output"])) {
    bad(where, "quantization_config quantises lm_head (not in ignore); only text decoder linears may be NVFP4");
  }
  const linears = LINEAR_GROUPS.filter((group) => {
    let quantized: string | undefined, kept: string | undefined;
    for (let i = 0; i < c.num_hidden_layers; i++) {
      for (const [h, m] of GROUP_MODULES[group](c)) {
        const names = [...HF_LAYER_PREFIXES.map((p) => `${p}.${i}.${h}`), `layers.${i}.${m}`];
        if (ignored(names)) kept ??= names[0];
        else quantized ??= names[0];
      }
    }
    if (quantized && kept) {
      bad(
        where,
        `quantization_config.ignore keeps ${kept} unquantised but not ${quantized}; only whole groups of` +
          ` linears (${LINEAR_GROUPS.join(", ")}) may differ`,
      );
    }
    return kept === undefined;
  });
  return { weight_dtype: "nvfp4", activation_scheme: activations ? "static" : "dynamic", linears };
}

/** HF rope dict (`rope_parameters` or legacy `rope_scaling`) → ours, plus the softmax mode its keys imply. */
function hfRope(text: Json, where: string): { theta: number; scaling: Mistral4RopeScaling | null; deepseek: boolean } {
  const rp = (text.rope_parameters ?? text.rope_scaling ?? null) as Json | null;
  const theta = num(rp ?? {}, "rope_theta", where, num(text, "rope_theta", where, 10000));
  const kind = rp ? String(rp.rope_type ?? rp.type ?? "default") : "default";
  if (kind === "default") return { theta, scaling: null, deepseek: false };
  if (kind !== "yarn" && kind !== "deepseek_yarn") bad(where, `unsupported rope type "${kind}" (expected yarn)`);
  const original = num(rp!, "original_max_position_embeddings", where);
  return {
    theta,
    scaling: {
      type: "yarn",
      factor: num(rp!, "factor", where),
      original_max_position_embeddings: original,
      beta_fast: num(rp!, "beta_fast", where, 32),
      beta_slow: num(rp!, "beta_slow", where, 1),
      mscale: optNum(rp!, "mscale", where),
      mscale_all_dim: optNum(rp!, "mscale_all_dim", where),
      attention_factor: optNum(rp!, "attention_factor", where),
      llama_4_scaling_beta: num(rp!, "llama_4_scaling_beta", where, 0),
      llama_4_scaling_original_max_position_embeddings: original,
    },
    // vLLM's Mistral conversion carries params.json `apply_scale` as `apply_yarn_scaling`.
    deepseek: flag(rp!, "apply_yarn_scaling", where),
  };
}

function hfVision(v: Json, top: Json, where: string): Mistral4VisionConfig {
  const hidden = num(v, "hidden_size", where);
  const heads = num(v, "num_attention_heads", where);
  return {
    hidden_size: hidden,
    num_hidden_layers: num(v, "num_hidden_layers", where),
    num_attention_heads: heads,
    head_dim: num(v, "head_dim", where, hidden / heads),
    intermediate_size: num(v, "intermediate_size", where),
    patch_size: num(v, "patch_size", where),
    image_size: num(v, "image_size", where),
    spatial_merge_size: num(top, "spatial_merge_size", where, 2),
    num_channels: num(v, "num_channels", where, 3),
    rope_theta: num(v, "rope_theta", where, 10000),
    layer_norm_eps: num(v, "layer_norm_eps", where, 1e-5),
    multimodal_projector_bias: top.multimodal_projector_bias === true,
    image_token_id: num(top, "image_token_id", where, num(top, "image_token_index", where, 10)),
    image_break_token_id: num(top, "image_break_token_id", where, 12),
    image_end_token_id: num(top, "image_end_token_id", where, 13),
  };
}

/**
 * Reads a transformers `config.json`: a `mistral3` wrapper (`text_config` of type `mistral4` + `vision_config`) or a
 * bare `mistral4` text config. An optional `softmax_scale_mode` key (a Tramontane extension: `"plain"` or
 * `"deepseek_yarn"`; any other value is an error) overrides the default.
 *
 * @example
 * ```ts ignore
 * const config = configFromHF(JSON.parse(await Deno.readTextFile("ckpt/config.json")));
 * console.log(config.num_hidden_layers); // 36
 * ```
 */
export function configFromHF(json: Record<string, unknown>, where = "config.json"): Mistral4Config {
  const top = json as Json;
  const wrapped = top.model_type === "mistral3" || top.text_config !== undefined;
  const text = (wrapped ? top.text_config : top) as Json | undefined;
  if (!text || typeof text !== "object") bad(where, "mistral3 config has no text_config");
  if (text.model_type !== undefined && text.model_type !== "mistral4") {
    bad(where, `text model_type is "${text.model_type}", expected "mistral4"`);
  }
  const rope = hfRope(text, where);
  const explicitMode = explicitSoftmaxScale(text, top, where);
  const c: Mistral4Config = {
    model_type: "mistral4",
    vocab_size: num(text, "vocab_size", where),
    hidden_size: num(text, "hidden_size", where),
    num_hidden_layers: num(text, "num_hidden_layers", where),
    num_attention_heads: num(text, "num_attention_heads", where),
    q_lora_rank: num(text, "q_lora_rank", where),
    kv_lora_rank: num(text, "kv_lora_rank", where),
    qk_nope_head_dim: num(text, "qk_nope_head_dim", where),
    qk_rope_head_dim: num(text, "qk_rope_head_dim", where),
    v_head_dim: num(text, "v_head_dim", where),
    n_routed_experts: num(text, "n_routed_experts", where),
    num_experts_per_tok: num(text, "num_experts_per_tok", where),
    n_shared_experts: num(text, "n_shared_experts", where, 0),
    moe_intermediate_size: num(text, "moe_intermediate_size", where),
    intermediate_size: num(text, "intermediate_size", where, 0),
    first_k_dense_replace: num(text, "first_k_dense_replace", where, 0),
    n_group: num(text, "n_group", where, 1),
    topk_group: num(text, "topk_group", where, 1),
    norm_topk_prob: text.norm_topk_prob !== false,
    routed_scaling_factor: num(text, "routed_scaling_factor", where, 1),
    rms_norm_eps: num(text, "rms_norm_eps", where, 1e-6),
    latent_norm_eps: 1e-6,
    rope_theta: rope.theta,
    rope_interleave: text.rope_interleave !== false,
    rope_scaling: rope.scaling,
    softmax_scale_mode: explicitMode ?? (rope.deepseek ? "deepseek_yarn" : "plain"),
    max_position_embeddings: num(text, "max_position_embeddings", where, 1048576),
    tie_word_embeddings: (text.tie_word_embeddings ?? top.tie_word_embeddings) === true,
    bos_token_id: firstId(text.bos_token_id, 1),
    eos_token_id: firstId(text.eos_token_id, 2),
    pad_token_id: firstId(text.pad_token_id, 11),
    dtype: dtypeOf(text.dtype ?? text.torch_dtype ?? top.dtype ?? top.torch_dtype),
    quantization: null,
    vision_config: wrapped && top.vision_config ? hfVision(top.vision_config as Json, top, where) : null,
  };
  // The ignore list of a compressed-tensors config is resolved against the module names the rest implies.
  c.quantization = hfQuantization(top.quantization_config ?? text.quantization_config, c, where);
  return validate(c, where);
}

/**
 * Reads a Mistral `params.json` (keys `dim`, `n_layers`, `n_heads`, `moe {num_experts, …}`,
 * `yarn {factor, original_max_position_embeddings, beta, alpha, apply_scale}`, `llama_4_scaling {beta, …}`,
 * `quantization {qformat_weight}`, `vision_encoder {…}`).
 *
 * `yarn.apply_scale: true` selects the DeepSeek softmax scale, as vLLM and SGLang read it.
 *
 * @example
 * ```ts ignore
 * const config = configFromParams(JSON.parse(await Deno.readTextFile("ckpt/params.json")));
 * console.log(config.softmax_scale_mode); // "plain"
 * ```
 */
export function configFromParams(json: Record<string, unknown>, where = "params.json"): Mistral4Config {
  const p = json as Json;
  const moe = p.moe as Json | undefined;
  if (!moe) bad(where, 'no "moe" section: not a Mistral 4 checkpoint');
  const yarn = p.yarn as Json | undefined;
  const l4 = (p.llama_4_scaling ?? {}) as Json;
  const original = yarn ? num(yarn, "original_max_position_embeddings", where) : 0;
  // FP8: Mistral's own `quantization {qformat_weight}`. NVFP4: a compressed-tensors config, as `quantization_config`
  // (the real release) or passed through `quantization` (vLLM accepts both).
  const quant = p.quantization as Json | undefined;
  const ct = (p.quantization_config ?? (quant?.quant_method !== undefined ? quant : undefined)) as Json | undefined;
  if (quant && !ct && quant.qformat_weight !== "fp8_e4m3") {
    bad(where, `unsupported qformat_weight ${quant.qformat_weight}`);
  }
  const ve = p.vision_encoder as Json | undefined;
  const c: Mistral4Config = {
    model_type: "mistral4",
    vocab_size: num(p, "vocab_size", where),
    hidden_size: num(p, "dim", where),
    num_hidden_layers: num(p, "n_layers", where),
    num_attention_heads: num(p, "n_heads", where),
    q_lora_rank: num(p, "q_lora_rank", where),
    kv_lora_rank: num(p, "kv_lora_rank", where),
    qk_nope_head_dim: num(p, "qk_nope_head_dim", where),
    qk_rope_head_dim: num(p, "qk_rope_head_dim", where),
    v_head_dim: num(p, "v_head_dim", where),
    n_routed_experts: num(moe, "num_experts", where),
    num_experts_per_tok: num(moe, "num_experts_per_tok", where),
    n_shared_experts: num(moe, "num_shared_experts", where, 0),
    moe_intermediate_size: num(moe, "expert_hidden_dim", where),
    intermediate_size: num(p, "hidden_dim", where, 0),
    first_k_dense_replace: num(moe, "first_k_dense_replace", where, 0),
    n_group: num(moe, "num_expert_groups", where, 1),
    topk_group: num(moe, "num_expert_groups_per_tok", where, 1),
    norm_topk_prob: true,
    routed_scaling_factor: num(moe, "routed_scale", where, 1),
    rms_norm_eps: num(p, "norm_eps", where, 1e-6),
    latent_norm_eps: 1e-6,
    rope_theta: num(p, "rope_theta", where, 10000),
    rope_interleave: true,
    rope_scaling: yarn
      ? {
        type: "yarn",
        factor: num(yarn, "factor", where),
        original_max_position_embeddings: original,
        beta_fast: num(yarn, "beta", where, 32),
        beta_slow: num(yarn, "alpha", where, 1),
        // Mistral's code has no cos/sin magnitude; both keys 1 make the transformers formula give exactly 1.
        mscale: 1,
        mscale_all_dim: 1,
        attention_factor: null,
        llama_4_scaling_beta: num(l4, "beta", where, 0),
        llama_4_scaling_original_max_position_embeddings: num(l4, "original_max_position_embeddings", where, original),
      }
      : null,
    softmax_scale_mode: yarn && flag(yarn, "apply_scale", where) ? "deepseek_yarn" : "plain",
    max_position_embeddings: num(p, "max_position_embeddings", where, num(p, "max_seq_len", where, 1048576)),
    tie_word_embeddings: p.tied_embeddings === true,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 11,
    dtype: "bf16",
    quantization: !ct && quant ? { weight_dtype: "f8e4m3", activation_scheme: "static" } : null,
    vision_config: ve ? paramsVision(ve, where) : null,
  };
  if (ct) {
    const method = String(ct.quant_method ?? "").replaceAll("_", "-");
    if (method !== "compressed-tensors") bad(where, `unsupported quantization_config quant_method "${method}"`);
    c.quantization = compressedTensorsQuantization(ct, c, where);
  }
  return validate(c, where);
}

/**
 * MODEL.md §1.7: a `params.json` shipped beside a transformers `config.json` decides the softmax scale through
 * `yarn.apply_scale` when config.json says nothing about it (no `softmax_scale_mode`, no `apply_yarn_scaling`).
 * Returns `config`, its `softmax_scale_mode` updated in place.
 */
export function withParamsSoftmaxScale(
  config: Mistral4Config,
  hf: Record<string, unknown>,
  params: Record<string, unknown> | null | undefined,
  where = "params.json",
): Mistral4Config {
  const text = (hf.text_config ?? hf) as Json;
  const rp = (text.rope_parameters ?? text.rope_scaling ?? {}) as Json;
  const explicit = text.softmax_scale_mode ?? hf.softmax_scale_mode ?? rp.apply_yarn_scaling;
  const yarn = params?.yarn as Json | undefined;
  if (explicit === undefined && yarn && flag(yarn, "apply_scale", where)) config.softmax_scale_mode = "deepseek_yarn";
  return config;
}

function paramsVision(ve: Json, where: string): Mistral4VisionConfig {
  const hidden = num(ve, "hidden_size", where);
  const heads = num(ve, "num_attention_heads", where);
  return {
    hidden_size: hidden,
    num_hidden_layers: num(ve, "num_hidden_layers", where),
    num_attention_heads: heads,
    head_dim: num(ve, "head_dim", where, hidden / heads),
    intermediate_size: num(ve, "intermediate_size", where),
    patch_size: num(ve, "patch_size", where),
    image_size: num(ve, "max_image_size", where, num(ve, "image_size", where)),
    spatial_merge_size: num(ve, "spatial_merge_size", where, 1),
    num_channels: num(ve, "num_channels", where, 3),
    rope_theta: num(ve, "rope_theta", where, 10000),
    layer_norm_eps: 1e-5,
    multimodal_projector_bias: ve.adapter_bias === true,
    image_token_id: num(ve, "image_token_id", where, 10),
    image_break_token_id: num(ve, "image_break_token_id", where, 12),
    image_end_token_id: num(ve, "image_end_token_id", where, 13),
  };
}

/** Checks the invariants the graph relies on; returns the config unchanged. */
export function validate(c: Mistral4Config, where = "config"): Mistral4Config {
  const positive = [
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "n_routed_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
  ] as const;
  for (const k of positive) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) bad(where, `"${k}" must be a positive integer, got ${c[k]}`);
  }
  if (c.qk_rope_head_dim % 2 !== 0) bad(where, "qk_rope_head_dim must be even (rope rotates pairs)");
  if (c.num_experts_per_tok > c.n_routed_experts) bad(where, "num_experts_per_tok exceeds n_routed_experts");
  if (c.n_group !== 1 || c.topk_group !== 1) bad(where, "group-limited routing (n_group > 1) is not supported");
  if (c.first_k_dense_replace > 0 && c.intermediate_size <= 0) {
    bad(where, "first_k_dense_replace > 0 needs intermediate_size for the dense layers");
  }
  return c;
}
