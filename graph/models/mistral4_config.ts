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
import { CheckpointError } from "../../runtime/weights/errors.ts";

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

/** Weight quantisation of the checkpoint's text linears (embeddings, norms, head, router, vision stay `dtype`). */
export interface Mistral4Quantization {
  /** Element type of quantised linears. */
  weight_dtype: Extract<DType, "f8e4m3" | "nvfp4">;
  /** Static activation scales shipped (`activation_scale`); weight-only kernels ignore them. */
  activation_scheme: "static" | "dynamic";
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

/** HF `quantization_config` → ours; FP8 per-tensor and NVFP4 compressed-tensors are recognised. */
function hfQuantization(q: unknown, where: string): Mistral4Quantization | null {
  if (q === undefined || q === null) return null;
  const qc = q as Json;
  const method = String(qc.quant_method ?? "");
  const activation = qc.activation_scheme === "dynamic" ? "dynamic" : "static";
  if (method === "fp8") {
    if (qc.weight_block_size) bad(where, "block-wise FP8 (weight_block_size) is not supported; use per-tensor FP8");
    return { weight_dtype: "f8e4m3", activation_scheme: activation };
  }
  if (method === "compressed-tensors" || method === "modelopt") {
    return { weight_dtype: "nvfp4", activation_scheme: activation };
  }
  bad(where, `unsupported quant_method "${method}" (supported: fp8, compressed-tensors nvfp4)`);
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
    deepseek: rp!.apply_yarn_scaling === true,
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
 * bare `mistral4` text config. An optional `softmax_scale_mode` key (a Tramontane extension) overrides the default.
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
  const explicitMode = text.softmax_scale_mode ?? top.softmax_scale_mode;
  return validate({
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
    softmax_scale_mode: explicitMode === "deepseek_yarn" || (explicitMode === undefined && rope.deepseek)
      ? "deepseek_yarn"
      : "plain",
    max_position_embeddings: num(text, "max_position_embeddings", where, 1048576),
    tie_word_embeddings: (text.tie_word_embeddings ?? top.tie_word_embeddings) === true,
    bos_token_id: firstId(text.bos_token_id, 1),
    eos_token_id: firstId(text.eos_token_id, 2),
    pad_token_id: firstId(text.pad_token_id, 11),
    dtype: dtypeOf(text.dtype ?? text.torch_dtype ?? top.dtype ?? top.torch_dtype),
    quantization: hfQuantization(top.quantization_config ?? text.quantization_config, where),
    vision_config: wrapped && top.vision_config ? hfVision(top.vision_config as Json, top, where) : null,
  }, where);
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
  const quant = p.quantization as Json | undefined;
  if (quant && quant.qformat_weight !== "fp8_e4m3") bad(where, `unsupported qformat_weight ${quant.qformat_weight}`);
  const ve = p.vision_encoder as Json | undefined;
  return validate({
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
    softmax_scale_mode: yarn?.apply_scale === true ? "deepseek_yarn" : "plain",
    max_position_embeddings: num(p, "max_position_embeddings", where, num(p, "max_seq_len", where, 1048576)),
    tie_word_embeddings: p.tied_embeddings === true,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 11,
    dtype: "bf16",
    quantization: quant ? { weight_dtype: "f8e4m3", activation_scheme: "static" } : null,
    vision_config: ve ? paramsVision(ve, where) : null,
  }, where);
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
