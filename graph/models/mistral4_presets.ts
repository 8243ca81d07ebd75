/**
 * Built-in Mistral 4 configurations (MODEL.md §6). All share the real vocabulary size, rope, YaRN, Llama-4
 * temperature and routing settings; only the widths differ.
 *
 * @module
 */
import type { Mistral4Config, Mistral4VisionConfig } from "./mistral4_config.ts";

/** Names accepted by `--model PRESET`. */
export type Mistral4PresetName = "tiny" | "demo" | "ms4-mini" | "ms4-medium" | "mistral-small-4";

/** The real model's settings every preset shares. */
function base(): Mistral4Config {
  return {
    model_type: "mistral4",
    vocab_size: 131072,
    hidden_size: 4096,
    num_hidden_layers: 36,
    num_attention_heads: 32,
    q_lora_rank: 1024,
    kv_lora_rank: 256,
    qk_nope_head_dim: 64,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    n_routed_experts: 128,
    num_experts_per_tok: 4,
    n_shared_experts: 1,
    moe_intermediate_size: 2048,
    intermediate_size: 12288,
    first_k_dense_replace: 0,
    n_group: 1,
    topk_group: 1,
    norm_topk_prob: true,
    routed_scaling_factor: 1,
    rms_norm_eps: 1e-6,
    latent_norm_eps: 1e-6,
    rope_theta: 10000,
    rope_interleave: true,
    rope_scaling: {
      type: "yarn",
      factor: 128,
      original_max_position_embeddings: 8192,
      beta_fast: 32,
      beta_slow: 1,
      mscale: 1,
      mscale_all_dim: 1,
      attention_factor: null,
      llama_4_scaling_beta: 0.1,
      llama_4_scaling_original_max_position_embeddings: 8192,
    },
    softmax_scale_mode: "plain",
    max_position_embeddings: 1048576,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 11,
    dtype: "bf16",
    quantization: null,
    vision_config: null,
  };
}

/** A Pixtral-style vision tower: patch 14, merge 2, max image 1540, as every vision preset uses. */
function vision(hidden: number, layers: number, heads: number, width: number): Mistral4VisionConfig {
  return {
    hidden_size: hidden,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    head_dim: hidden / heads,
    intermediate_size: width,
    patch_size: 14,
    image_size: 1540,
    spatial_merge_size: 2,
    num_channels: 3,
    rope_theta: 10000,
    layer_norm_eps: 1e-5,
    multimodal_projector_bias: false,
    image_token_id: 10,
    image_break_token_id: 12,
    image_end_token_id: 13,
  };
}

interface Widths {
  hidden: number;
  layers: number;
  heads: number;
  qLora: number;
  kvLora: number;
  nope: number;
  rope: number;
  v: number;
  experts: number;
  topK: number;
  width: number;
}

/** The text dimensions of Mistral-Small-4-119B-2603 (its config.json). */
const REAL: Widths = {
  hidden: 4096,
  layers: 36,
  heads: 32,
  qLora: 1024,
  kvLora: 256,
  nope: 64,
  rope: 64,
  v: 128,
  experts: 128,
  topK: 4,
  width: 2048,
};

function preset(w: Widths, vis: Mistral4VisionConfig | null, extra: Partial<Mistral4Config> = {}): Mistral4Config {
  return {
    ...base(),
    hidden_size: w.hidden,
    num_hidden_layers: w.layers,
    num_attention_heads: w.heads,
    q_lora_rank: w.qLora,
    kv_lora_rank: w.kvLora,
    qk_nope_head_dim: w.nope,
    qk_rope_head_dim: w.rope,
    v_head_dim: w.v,
    n_routed_experts: w.experts,
    num_experts_per_tok: w.topK,
    moe_intermediate_size: w.width,
    intermediate_size: 4 * w.width,
    vision_config: vis,
    ...extra,
  };
}

/**
 * The presets (MODEL.md §6, plus `ms4-medium`), freshly built on each access so callers may mutate their copy.
 *
 * @example
 * ```ts
 * const tiny = presets.tiny();
 * console.log(tiny.hidden_size); // 64
 * ```
 */
export const presets: Readonly<Record<Mistral4PresetName, () => Mistral4Config>> = {
  /** Unit tests: ≈17M parameters, mostly embedding and head. */
  "tiny": () =>
    preset(
      {
        hidden: 64,
        layers: 2,
        heads: 4,
        qLora: 32,
        kvLora: 32,
        nope: 16,
        rope: 16,
        v: 16,
        experts: 8,
        topK: 2,
        width: 32,
      },
      vision(32, 2, 2, 64),
    ),
  /** Server default: ≈80M parameters. */
  "demo": () =>
    preset(
      {
        hidden: 256,
        layers: 4,
        heads: 8,
        qLora: 128,
        kvLora: 64,
        nope: 32,
        rope: 32,
        v: 32,
        experts: 16,
        topK: 4,
        width: 128,
      },
      vision(64, 2, 4, 128),
    ),
  /** Benchmarks: 704,403,456 parameters, text only, real head dims. */
  "ms4-mini": () =>
    preset(
      {
        hidden: 1024,
        layers: 8,
        heads: 8,
        qLora: 384,
        kvLora: 256,
        nope: 64,
        rope: 64,
        v: 128,
        experts: 32,
        topK: 4,
        width: 512,
      },
      null,
    ),
  /**
   * The real model's dimensions (hidden 4096, 32 heads, 128 experts of width 2048, the real vocabulary) with 2
   * layers and no vision: ≈7.6B parameters, ≈8 GiB in q8 — past one wasm32 memory, for memory64 and multi-instance
   * runs on a CPU.
   */
  "ms4-medium": () => preset({ ...REAL, layers: 2 }, null, { intermediate_size: 12288 }),
  /** The real model: FP8 text linears with per-tensor scales, BF16 rest. */
  "mistral-small-4": () =>
    preset(REAL, vision(1024, 24, 16, 4096), {
      intermediate_size: 12288,
      quantization: { weight_dtype: "f8e4m3", activation_scheme: "static" },
    }),
};

/** True when `name` is a built-in preset. */
export function isPresetName(name: string): name is Mistral4PresetName {
  return Object.hasOwn(presets, name);
}

/**
 * A fresh copy of preset `name`; throws a message listing the presets when it is unknown.
 *
 * @example
 * ```ts
 * presetConfig("ms4-mini").num_hidden_layers; // 8
 * ```
 */
export function presetConfig(name: string): Mistral4Config {
  if (!isPresetName(name)) {
    throw new Error(`unknown preset "${name}"; presets: ${Object.keys(presets).join(", ")} (or pass a directory)`);
  }
  return presets[name]();
}
