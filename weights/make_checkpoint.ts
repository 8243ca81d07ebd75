/**
 * Writes a random-weight checkpoint in a real on-disk layout, so every loader path (names, prefixes, fused experts,
 * FP8 scales, shards) can be exercised without downloading the real model. The weights are
 * `randomCanonicalWeights`' values with the load transforms inverted, so loading the result gives them back
 * bit-identical. Tensors are generated and written one at a time.
 *
 * - `hf`: `config.json` (a `mistral3` wrapper with `vision_config`, or a bare `mistral4` text config) and
 *   `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`; fused 3-D experts; FP8 as
 *   `weight_scale_inv` scalars (`[E,1,1]` for experts) plus static `activation_scale`s.
 * - `mistral`: `params.json` and `consolidated.safetensors` (sharded with an index when over the shard size);
 *   per-expert `w1/w2/w3`; FP8 as `qscale_weight` plus `qscale_act`.
 * - NVFP4 in either layout: a compressed-tensors `quantization_config` (in `config.json`, or in `params.json` as the
 *   real release has it) whose `ignore` list keeps what `quantization.linears` leaves out; each quantised linear as
 *   `weight_packed` / `weight_scale` / `weight_global_scale` plus W4A4 `input_global_scale`; HF experts per expert.
 * - Either layout: `generation_config.json` (`max_new_tokens` 256 for random weights, which never end an answer) and
 *   the `tekken.json` given as `tokenizerJson`, so the directory serves as it is.
 *
 * @module
 */

import { basename, join } from "node:path";
import type { DType } from "../graph/dtype.ts";
import { familyOfHF, resolveModel } from "../graph/models/mod.ts";
import {
  type CanonicalTensor,
  canonicalTensors,
  type CheckpointLayout,
  type CheckpointTensor,
  checkpointTensors,
  configFromHF,
  configFromParams,
  isQuantizedLinear,
  LINEAR_GROUPS,
  type Mistral4Config,
  type Mistral4LinearGroup,
  storedShape,
} from "../graph/models/mistral4.ts";
import { FLOAT_BYTES, type FloatDType, unfoldNvfp4Scales } from "./codecs.ts";
import { CheckpointError } from "./errors.ts";
import type { CanonicalWeight } from "./load.ts";
import { broadcastIndex, copyBlock, ropeHfRow } from "./transforms.ts";
import { configForDtype, type RandomDType, randomWeightSource } from "./random.ts";
import { GENERATION_CONFIG, generationConfigJson, RANDOM_MAX_NEW_TOKENS } from "./generation_config.ts";
import { type TensorToWrite, writeSafetensors, writeShardedSafetensors } from "./safetensors_writer.ts";

/** Options of {@link makeCheckpoint}. */
export interface MakeCheckpointOptions {
  /** Model configuration (a preset or one read from a config file). */
  config: Mistral4Config;
  /** Output directory (created; must not already hold a checkpoint unless `force`). */
  out: string;
  /** Stored dtype (see `configForDtype`); default the config's (its quantisation when it has one, else f32 or bf16). */
  dtype?: RandomDType;
  /** Seed of the random weights (default 0). */
  seed?: number;
  /** File layout (default `hf`). */
  layout?: CheckpointLayout;
  /** Largest shard in bytes (default 5 GB, as transformers' `save_pretrained`). */
  maxShardBytes?: number;
  /** Replace checkpoint files already in `out`. */
  force?: boolean;
  /**
   * Canonical weights to write instead of random ones (every weight of the config's group `all`, in the stored
   * dtypes `config` declares): re-exports a loaded checkpoint in another layout. `seed` is then unused.
   */
  weights?: ReadonlyMap<string, CanonicalWeight>;
  /** The text of a `tekken.json` to write beside the weights (the CLI passes the tokenizer the model was made with). */
  tokenizerJson?: string;
  /**
   * `max_new_tokens` of the `generation_config.json` written (the server's answer length when a request sets none).
   * Default {@link RANDOM_MAX_NEW_TOKENS} for random weights, which never end an answer, and none for given weights.
   */
  maxNewTokens?: number | null;
}

/** What {@link makeCheckpoint} wrote. */
export interface MakeCheckpointResult {
  /** The config written (after the dtype choice); `loadCanonicalWeights` reads it back equal. */
  config: Mistral4Config;
  /** Layout written. */
  layout: CheckpointLayout;
  /** Every file written with its size, config first. */
  files: { path: string; bytes: number }[];
  /** Sum of file sizes. */
  totalBytes: number;
  /** Parameters (canonical weights, vision included; scales not counted). */
  params: number;
}

/** Bytes of generated canonical weights kept for reuse: one canonical feeds several files' tensors. */
const CACHE_BYTES = 512 * 2 ** 20;

const HF_DTYPE: Partial<Record<DType, string>> = { f32: "float32", bf16: "bfloat16", f16: "float16" };

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * `ignore` entries keeping each group of text linears unquantised: HF module names, which vLLM also uses for the
 * Mistral-native layout (the real release's `params.json` names its modules so).
 */
const KEEP: Readonly<Record<Mistral4LinearGroup, string>> = {
  attention: "re:.*self_attn.*",
  dense_mlp: "re:.*mlp\\.(gate|up|down)_proj$",
  shared_experts: "re:.*mlp\\.shared_experts\\..*",
  routed_experts: "re:.*mlp\\.experts\\..*",
};

/** An NVFP4 args block of compressed-tensors (`tensor_group`: f8 scales per 16 under one global scale). */
function fp4Args(dynamic: boolean | "local"): Record<string, unknown> {
  return {
    num_bits: 4,
    type: "float",
    symmetric: true,
    group_size: 16,
    strategy: "tensor_group",
    block_structure: null,
    dynamic,
    actorder: null,
    scale_dtype: dynamic === false ? "torch.float8_e4m3fn" : null,
    zp_dtype: null,
    observer: dynamic === false ? "memoryless_minmax" : "static_minmax",
    observer_kwargs: {},
  };
}

/**
 * The compressed-tensors `quantization_config` of an NVFP4 config, as llm-compressor writes it (`nvfp4-pack-quantized`,
 * one `Linear` group, W4A4 when activation scales are shipped). The `ignore` list names the head, the router, the
 * vision tower in `layout`'s module names and every group of text linears left unquantised.
 */
export function compressedTensorsConfigJson(c: Mistral4Config, layout: CheckpointLayout): Record<string, unknown> {
  const q = c.quantization!;
  const vision = !c.vision_config
    ? []
    : layout === "hf"
    ? ["re:.*vision_tower.*", "re:.*multi_modal_projector.*"]
    : ["re:vision_encoder.*", "re:vision_language_adapter.*", "re:patch_merger.*"];
  return {
    quant_method: "compressed-tensors",
    format: "nvfp4-pack-quantized",
    quantization_status: "compressed",
    config_groups: {
      group_0: {
        targets: ["Linear"],
        format: "nvfp4-pack-quantized",
        weights: fp4Args(false),
        input_activations: q.activation_scheme === "static" ? fp4Args("local") : null,
        output_activations: null,
      },
    },
    ignore: [
      "lm_head",
      "re:.*mlp.gate$",
      ...LINEAR_GROUPS.filter((g) => !isQuantizedLinear(c, g)).map((g) => KEEP[g]),
      ...vision,
    ],
    kv_cache_scheme: null,
    sparsity_config: {},
    transform_config: {},
  };
}

/** The transformers `config.json` for `c`: a `mistral3` wrapper when it has vision, else a bare `mistral4`. */
export function hfConfigJson(c: Mistral4Config): Record<string, unknown> {
  const r = c.rope_scaling;
  const text: Record<string, unknown> = {
    model_type: "mistral4",
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    moe_intermediate_size: c.moe_intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: c.num_attention_heads,
    n_shared_experts: c.n_shared_experts,
    n_routed_experts: c.n_routed_experts,
    routed_scaling_factor: c.routed_scaling_factor,
    kv_lora_rank: c.kv_lora_rank,
    q_lora_rank: c.q_lora_rank,
    qk_rope_head_dim: c.qk_rope_head_dim,
    v_head_dim: c.v_head_dim,
    qk_nope_head_dim: c.qk_nope_head_dim,
    n_group: c.n_group,
    topk_group: c.topk_group,
    num_experts_per_tok: c.num_experts_per_tok,
    first_k_dense_replace: c.first_k_dense_replace,
    norm_topk_prob: c.norm_topk_prob,
    hidden_act: "silu",
    max_position_embeddings: c.max_position_embeddings,
    rms_norm_eps: c.rms_norm_eps,
    pad_token_id: c.pad_token_id,
    bos_token_id: c.bos_token_id,
    eos_token_id: c.eos_token_id,
    tie_word_embeddings: c.tie_word_embeddings,
    rope_interleave: c.rope_interleave,
    torch_dtype: HF_DTYPE[c.dtype],
  };
  if (!r) text.rope_theta = c.rope_theta;
  else {
    const rp: Record<string, unknown> = {
      type: "yarn",
      rope_type: "yarn",
      rope_theta: c.rope_theta,
      factor: r.factor,
      original_max_position_embeddings: r.original_max_position_embeddings,
      max_position_embeddings: c.max_position_embeddings,
      beta_fast: r.beta_fast,
      beta_slow: r.beta_slow,
      llama_4_scaling_beta: r.llama_4_scaling_beta,
    };
    if (r.mscale !== null) rp.mscale = r.mscale;
    if (r.mscale_all_dim !== null) rp.mscale_all_dim = r.mscale_all_dim;
    if (r.attention_factor !== null) rp.attention_factor = r.attention_factor;
    text.rope_parameters = rp;
  }
  if (c.softmax_scale_mode !== "plain") text.softmax_scale_mode = c.softmax_scale_mode; // a Tramontane key
  const quant = c.quantization?.weight_dtype === "nvfp4" ? compressedTensorsConfigJson(c, "hf") : c.quantization && {
    activation_scheme: c.quantization.activation_scheme,
    dequantize: false,
    modules_to_not_convert: c.vision_config ? ["model.vision_tower", "model.multi_modal_projector", "lm_head"] : [
      "lm_head",
    ],
    quant_method: "fp8",
    weight_block_size: null,
  };
  const v = c.vision_config;
  if (!v) return { architectures: ["Mistral4ForCausalLM"], ...text, ...(quant ? { quantization_config: quant } : {}) };
  const vision: Record<string, unknown> = {
    model_type: "pixtral",
    hidden_size: v.hidden_size,
    intermediate_size: v.intermediate_size,
    num_hidden_layers: v.num_hidden_layers,
    num_attention_heads: v.num_attention_heads,
    head_dim: v.head_dim,
    num_channels: v.num_channels,
    image_size: v.image_size,
    patch_size: v.patch_size,
    rope_theta: v.rope_theta,
    hidden_act: "silu",
  };
  if (v.layer_norm_eps !== 1e-5) vision.layer_norm_eps = v.layer_norm_eps;
  const top: Record<string, unknown> = {
    architectures: ["Mistral3ForConditionalGeneration"],
    model_type: "mistral3",
    image_token_index: v.image_token_id,
    spatial_merge_size: v.spatial_merge_size,
    multimodal_projector_bias: v.multimodal_projector_bias,
    projector_hidden_act: "gelu",
    vision_feature_layer: -1,
    torch_dtype: HF_DTYPE[c.dtype],
  };
  // Not keys of the real config; written only when they differ from the defaults the reader assumes.
  if (v.image_break_token_id !== 12) top.image_break_token_id = v.image_break_token_id;
  if (v.image_end_token_id !== 13) top.image_end_token_id = v.image_end_token_id;
  if (quant) top.quantization_config = quant;
  return { ...top, text_config: text, vision_config: vision };
}

/** The Mistral `params.json` for `c` (its dtype is not a key: loaders take it from the tensors). */
export function mistralParamsJson(c: Mistral4Config): Record<string, unknown> {
  const r = c.rope_scaling, v = c.vision_config;
  const p: Record<string, unknown> = {
    dim: c.hidden_size,
    n_layers: c.num_hidden_layers,
    head_dim: c.qk_nope_head_dim + c.qk_rope_head_dim,
    hidden_dim: c.intermediate_size,
    n_heads: c.num_attention_heads,
    n_kv_heads: c.num_attention_heads,
    rope_theta: c.rope_theta,
    norm_eps: c.rms_norm_eps,
    vocab_size: c.vocab_size,
    tied_embeddings: c.tie_word_embeddings,
    max_position_embeddings: c.max_position_embeddings,
    q_lora_rank: c.q_lora_rank,
    qk_rope_head_dim: c.qk_rope_head_dim,
    qk_nope_head_dim: c.qk_nope_head_dim,
    kv_lora_rank: c.kv_lora_rank,
    v_head_dim: c.v_head_dim,
  };
  if (r) {
    p.llama_4_scaling = {
      original_max_position_embeddings: r.llama_4_scaling_original_max_position_embeddings,
      beta: r.llama_4_scaling_beta,
    };
    p.yarn = {
      original_max_position_embeddings: r.original_max_position_embeddings,
      factor: r.factor,
      apply_scale: c.softmax_scale_mode === "deepseek_yarn",
      beta: r.beta_fast,
      alpha: r.beta_slow,
    };
  }
  if (c.quantization?.weight_dtype === "nvfp4") p.quantization_config = compressedTensorsConfigJson(c, "mistral");
  else if (c.quantization) p.quantization = { qformat_weight: "fp8_e4m3", qscheme_act: "TENSOR" };
  p.moe = {
    expert_parallel: 1,
    route_every_n: 1,
    first_k_dense_replace: c.first_k_dense_replace,
    num_experts: c.n_routed_experts,
    num_experts_per_tok: c.num_experts_per_tok,
    num_expert_groups: c.n_group,
    num_expert_groups_per_tok: c.topk_group,
    routed_scale: c.routed_scaling_factor,
    expert_hidden_dim: c.moe_intermediate_size,
    num_shared_experts: c.n_shared_experts,
  };
  if (v) {
    p.vision_encoder = {
      image_token_id: v.image_token_id,
      image_break_token_id: v.image_break_token_id,
      image_end_token_id: v.image_end_token_id,
      intermediate_size: v.intermediate_size,
      num_hidden_layers: v.num_hidden_layers,
      num_attention_heads: v.num_attention_heads,
      mm_projector_id: "patch_merge",
      spatial_merge_size: v.spatial_merge_size,
      hidden_size: v.hidden_size,
      num_channels: v.num_channels,
      image_size: v.image_size,
      max_image_size: v.image_size,
      patch_size: v.patch_size,
      rope_theta: v.rope_theta,
      add_pre_mm_projector_layer_norm: true,
      adapter_bias: v.multimodal_projector_bias,
    };
    if (v.head_dim !== v.hidden_size / v.num_attention_heads) {
      (p.vision_encoder as Record<string, unknown>).head_dim = v.head_dim;
    }
  }
  return p;
}

/** Paths where `a` and `b` differ (plain JSON-like values). */
function differences(a: unknown, b: unknown, path = ""): string[] {
  if (a === b) return [];
  if (a && b && typeof a === "object" && typeof b === "object") {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) =>
      differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k)
    );
  }
  return [`${path} (${JSON.stringify(b)} would read back as ${JSON.stringify(a)})`];
}

/** The config file of `layout` for `c`, refusing a config the file cannot express (it would load differently). */
export function configFile(
  c: Mistral4Config,
  layout: CheckpointLayout,
): { name: string; json: Record<string, unknown> } {
  const json = layout === "hf" ? hfConfigJson(c) : mistralParamsJson(c);
  const back = layout === "hf" ? configFromHF(json) : { ...configFromParams(json), dtype: c.dtype };
  // A draft head's `eagle` settings come from its tensors (eagle_linear / fc and the layer names), not its config.
  const { eagle: _eagle, ...decoder } = c;
  const diff = differences(back, decoder);
  if (diff.length) {
    const name = layout === "hf" ? "config.json" : "params.json";
    throw new Error(
      `${name} cannot express this config: ${diff.join("; ")}${layout === "mistral" ? "; try --layout hf" : ""}`,
    );
  }
  return { name: layout === "hf" ? "config.json" : "params.json", json };
}

/**
 * The config named by `--model`: a preset, a checkpoint directory, or a `config.json` / `params.json` file.
 *
 * @example
 * ```ts ignore
 * const config = await configFromSpec("tiny");
 * ```
 */
export async function configFromSpec(spec: string): Promise<Mistral4Config> {
  if (!spec.endsWith(".json")) return (await resolveModel(spec)).config;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await Deno.readTextFile(spec));
  } catch (e) {
    throw new CheckpointError({
      kind: "bad_config",
      file: spec,
      message: `${spec}: cannot read (${(e as Error).message})`,
    });
  }
  return basename(spec) === "params.json" ? configFromParams(json, spec) : familyOfHF(json).configFromHF(json, spec);
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The bytes of canonical tensor `t` held by its weight `w`: the weight itself, or one of its scale tensors. */
function canonicalBytes(t: CanonicalTensor, w: CanonicalWeight): Uint8Array {
  if (t.kind === "weight") return w.data;
  if (w.dtype !== "nvfp4") return bytesOf(w.scales!);
  // NVFP4 keeps folded block scales: the stored f8 codes come back exactly through the global scales.
  return t.name.endsWith(".global_scale") ? bytesOf(w.globalScales!) : unfoldNvfp4Scales(w.scales!, w.globalScales!);
}

/** A checkpoint tensor's bytes from its canonical weight: the load transform run backwards. */
function checkpointBytes(s: CheckpointTensor, t: CanonicalTensor, w: CanonicalWeight): Uint8Array {
  const data = canonicalBytes(t, w), shape = storedShape(t);
  const elem = data.byteLength / numel(shape);
  const out = new Uint8Array(numel(s.shape) * elem);
  const tr = s.transform;
  if (tr.kind === "copy") out.set(data);
  else if (tr.kind === "place") copyBlock(data, shape, out, s.shape, tr.offset, elem, false);
  else if (tr.kind === "rope_unpermute") {
    const rows = t.shape[0], row = data.byteLength / rows;
    for (let r = 0; r < rows; r++) out.set(data.subarray(r * row, (r + 1) * row), ropeHfRow(r, rows, tr.heads) * row);
  } else {
    const seen = new Uint8Array(out.length / elem);
    for (let i = 0; i < numel(t.shape); i++) {
      const j = broadcastIndex(i, t.shape, s.shape), v = data.subarray(i * elem, (i + 1) * elem);
      if (!seen[j]) out.set(v, j * elem);
      else if (!v.every((b, k) => b === out[j * elem + k])) {
        throw new Error(`${s.checkpointName}: ${t.name} has different values where this layout stores one`);
      }
      seen[j] = 1;
    }
  }
  return out;
}

/**
 * Static activation scales a real checkpoint ships beside each quantised weight (loaders ignore them): FP8
 * `activation_scale` / `qscale_act`, NVFP4 W4A4 `input_global_scale`.
 */
function activationScales(c: Mistral4Config, layout: CheckpointLayout, sources: CheckpointTensor[]): TensorToWrite[] {
  if (c.quantization?.activation_scheme !== "static") return [];
  const one = new Uint8Array(new Float32Array([1]).buffer);
  if (c.quantization.weight_dtype === "nvfp4") {
    return sources.filter((s) => s.checkpointName.endsWith(".weight_packed")).map((s) => ({
      name: s.checkpointName.replace(/\.weight_packed$/, ".input_global_scale"),
      dtype: "f32" as const,
      shape: [1],
      data: one,
    }));
  }
  return sources.filter((s) => s.dtype === "f8e4m3").map((s) => {
    const n = s.checkpointName;
    const name = layout === "mistral"
      ? n.replace(/\.weight$/, ".qscale_act")
      : n.endsWith(".weight")
      ? n.replace(/\.weight$/, ".activation_scale")
      : `${n}_activation_scale`;
    return { name, dtype: "f32" as const, shape: [], data: one };
  });
}

/** A lookup of given canonical weights, checked against the config's declaration of each. */
function givenWeight(
  weights: ReadonlyMap<string, CanonicalWeight>,
  canon: ReadonlyMap<string, CanonicalTensor>,
): (name: string) => CanonicalWeight {
  return (name) => {
    const w = weights.get(name), t = canon.get(name)!;
    if (!w) throw new Error(`makeCheckpoint: no weight "${name}" among the given weights`);
    if (w.dtype !== t.dtype || w.shape.join() !== t.shape.join()) {
      throw new Error(
        `makeCheckpoint: ${name} is ${w.dtype} [${w.shape}], the config declares ${t.dtype} [${t.shape}]`,
      );
    }
    return w;
  };
}

async function prepareDir(out: string, force: boolean): Promise<void> {
  await Deno.mkdir(out, { recursive: true });
  const stale: string[] = [];
  for await (const e of Deno.readDir(out)) {
    if (/\.safetensors$|safetensors\.index\.json$|^(config|params|generation_config|tekken)\.json$/.test(e.name)) {
      stale.push(e.name);
    }
  }
  if (!stale.length) return;
  if (!force) {
    throw new Error(
      `${out} already holds checkpoint files (${stale.slice(0, 3).join(", ")}…); pass --force or another --out`,
    );
  }
  for (const n of stale) await Deno.remove(join(out, n));
}

/**
 * Writes a random-weight checkpoint (module docs) and returns what it wrote.
 *
 * @example
 * ```ts ignore
 * import { presetConfig } from "../graph/models/mistral4.ts";
 * const r = await makeCheckpoint({ config: presetConfig("tiny"), out: "/tmp/tiny", dtype: "f8e4m3" });
 * console.log(r.files.map((f) => f.path));
 * ```
 */
export async function makeCheckpoint(options: MakeCheckpointOptions): Promise<MakeCheckpointResult> {
  const layout = options.layout ?? "hf";
  const base = options.config;
  const dtype = options.dtype ?? base.quantization?.weight_dtype ?? (base.dtype === "f32" ? "f32" : "bf16");
  const config = configForDtype(base, dtype);
  const { name: cfgName, json } = configFile(config, layout);
  const src = randomWeightSource(config, { seed: options.seed ?? 0, group: "all" });
  const canon = new Map(canonicalTensors(config).map((t) => [t.name, t]));
  const generate = options.weights ? givenWeight(options.weights, canon) : src.generate;
  const sources = checkpointTensors(config, layout);

  // Canonical weights are generated on first use and kept (LRU, bounded) while their checkpoint tensors are written.
  const cache = new Map<string, CanonicalWeight>();
  let cached = 0;
  const weight = (name: string): CanonicalWeight => {
    let w = cache.get(name);
    if (w) cache.delete(name);
    else {
      w = generate(name);
      cached += w.data.byteLength;
    }
    cache.set(name, w);
    for (const [k, v] of cache) {
      if (cached <= CACHE_BYTES || k === name) break;
      cache.delete(k);
      cached -= v.data.byteLength;
    }
    return w;
  };
  const tensors: TensorToWrite[] = sources.map((s) => {
    const t = canon.get(s.canonicalName)!;
    return {
      name: s.checkpointName,
      dtype: s.dtype,
      // A listed `[]` is any one-element shape: FP8 checkpoints store scalars, compressed-tensors `[1]`.
      shape: s.shape.length === 0 && s.checkpointName.endsWith(".weight_global_scale") ? [1] : s.shape,
      data: () => checkpointBytes(s, t, weight(t.kind === "scale" ? t.scaleOf! : t.name)),
    };
  });
  tensors.push(...activationScales(config, layout, sources));

  await prepareDir(options.out, options.force ?? false);
  const maxShardBytes = options.maxShardBytes ?? 5e9;
  const metadata = { format: "pt" };
  let paths: string[];
  const total = tensors.reduce(
    (a, t) => a + numel(t.shape) * (t.dtype === "u8" ? 1 : FLOAT_BYTES[t.dtype as FloatDType]),
    0,
  );
  if (layout === "mistral" && total <= maxShardBytes) {
    const path = join(options.out, "consolidated.safetensors");
    await writeSafetensors(path, tensors, metadata);
    paths = [path];
  } else {
    const prefix = layout === "hf" ? "model" : "consolidated";
    const r = await writeShardedSafetensors(options.out, tensors, { maxShardBytes, metadata, prefix });
    paths = [...r.files, r.index];
  }
  const cfgPath = join(options.out, cfgName);
  await Deno.writeTextFile(cfgPath, JSON.stringify(json, null, 2) + "\n");
  const genPath = join(options.out, GENERATION_CONFIG);
  const maxNew = options.maxNewTokens !== undefined
    ? options.maxNewTokens
    : options.weights
    ? null
    : RANDOM_MAX_NEW_TOKENS;
  await Deno.writeTextFile(genPath, JSON.stringify(generationConfigJson(config, maxNew), null, 2) + "\n");
  const extra = [genPath];
  if (options.tokenizerJson !== undefined) {
    const tokPath = join(options.out, "tekken.json");
    await Deno.writeTextFile(tokPath, options.tokenizerJson);
    extra.push(tokPath);
  }
  const files = [];
  for (const path of [cfgPath, ...extra, ...paths]) files.push({ path, bytes: (await Deno.stat(path)).size });
  const params = src.tensors.reduce((a, t) => a + numel(t.shape), 0);
  return { config, layout, files, totalBytes: files.reduce((a, f) => a + f.bytes, 0), params };
}
