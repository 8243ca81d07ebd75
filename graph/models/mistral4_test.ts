import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "../../tests/assert.ts";
import { fixtureJson, mulberry32 } from "../../tests/fixtures.ts";
import { GraphBuilder } from "../builder.ts";
import { numel } from "../ir.ts";
import { attnTemperatureScale } from "../../ops/attn_temperature.ts";
import { CheckpointError } from "../../weights/errors.ts";
import { runGraph } from "../../runtime/execute.ts";
import { referenceBackend } from "../../runtime/backends/reference.ts";
import { queryTemperature, ropeTable, softmaxScale } from "../blocks/rope.ts";
import { inspectModel } from "../inspect.ts";
import {
  build,
  cacheBytesPerToken,
  canonicalTensors,
  type CheckpointLayout,
  checkpointTensors,
  configFromHF,
  configFromParams,
  LINEAR_GROUPS,
  type Mistral4Config,
  type Mistral4IOOptions,
  type Mistral4Quantization,
  normalizeCheckpointName,
  presetConfig,
  softmaxScaleMode,
  storedShape,
} from "./mistral4.ts";
import { families, resolveModel } from "./mod.ts";

const IO: Mistral4IOOptions = { maxTokens: 16, maxSeqs: 2, numBlocks: 8, blockSize: 4, maxBlocksPerSeq: 4 };

function graphOf(config: Mistral4Config, io: Partial<Mistral4IOOptions> = {}) {
  const g = new GraphBuilder();
  build(g, config, { ...IO, ...io });
  return g.build();
}

/** Parameters as the graph declares them (text only: the vision graph does not exist yet). */
function graphParams(config: Mistral4Config): number {
  return graphOf(config).weights.reduce((n, w) => n + numel(w.shape as number[]), 0);
}

Deno.test("mistral-small-4: text parameters and latent cache match MODEL.md exactly", () => {
  const c = presetConfig("mistral-small-4");
  assertEquals(graphParams(c), 118_972_826_624);
  assertEquals(cacheBytesPerToken(c), 23_040);
});

Deno.test("presets: ms4-mini exact, tiny ≈ 17M, demo ≈ 80M", () => {
  assertEquals(graphParams(presetConfig("ms4-mini")), 704_403_456);
  const tiny = graphParams(presetConfig("tiny")), demo = graphParams(presetConfig("demo"));
  assert(tiny > 16.5e6 && tiny < 17.5e6, `tiny ${tiny}`);
  assert(demo > 70e6 && demo < 85e6, `demo ${demo}`);
  assertThrows(() => presetConfig("huge"), Error, "presets: tiny, demo, ms4-mini, ms4-medium, mistral-small-4");
});

Deno.test("vision tensor list: ≈0.43B for the real tower", () => {
  const vision = canonicalTensors(presetConfig("mistral-small-4"))
    .filter((t) => t.group === "vision").reduce((n, t) => n + numel(t.shape), 0);
  // conv 602,112 + ln_pre + 24 × (4·1024² + 3·1024·4096 + 2·1024) + norm + merger + 1024→4096 + 4096²
  assertEquals(vision, 428_472_320);
});

/** A transformers config.json for the real checkpoint, written by hand from the public configs. */
const HF_TEXT = {
  model_type: "mistral4",
  vocab_size: 131072,
  hidden_size: 4096,
  intermediate_size: 12288,
  moe_intermediate_size: 2048,
  num_hidden_layers: 36,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  n_shared_experts: 1,
  n_routed_experts: 128,
  routed_scaling_factor: 1.0,
  kv_lora_rank: 256,
  q_lora_rank: 1024,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  qk_nope_head_dim: 64,
  n_group: 1,
  topk_group: 1,
  num_experts_per_tok: 4,
  first_k_dense_replace: 0,
  norm_topk_prob: true,
  hidden_act: "silu",
  max_position_embeddings: 1048576,
  rms_norm_eps: 1e-6,
  pad_token_id: 11,
  bos_token_id: 1,
  eos_token_id: 2,
  tie_word_embeddings: false,
  rope_interleave: true,
  rope_parameters: {
    type: "yarn",
    rope_theta: 10000.0,
    factor: 128.0,
    original_max_position_embeddings: 8192,
    max_position_embeddings: 1048576,
    beta_fast: 32.0,
    beta_slow: 1.0,
    mscale_all_dim: 1.0,
    mscale: 1.0,
    llama_4_scaling_beta: 0.1,
    partial_rotary_factor: 0.5,
  },
};

const HF_MISTRAL3 = {
  architectures: ["Mistral3ForConditionalGeneration"],
  model_type: "mistral3",
  image_token_index: 10,
  spatial_merge_size: 2,
  multimodal_projector_bias: false,
  projector_hidden_act: "gelu",
  torch_dtype: "bfloat16",
  quantization_config: { quant_method: "fp8", activation_scheme: "static", weight_block_size: null },
  text_config: HF_TEXT,
  vision_config: {
    model_type: "pixtral",
    hidden_size: 1024,
    intermediate_size: 4096,
    num_hidden_layers: 24,
    num_attention_heads: 16,
    head_dim: 64,
    num_channels: 3,
    image_size: 1540,
    patch_size: 14,
    rope_theta: 10000.0,
    hidden_act: "silu",
  },
};

/** A Mistral params.json for the real checkpoint (key names as Mistral's and transformers' converters read them). */
const PARAMS = {
  dim: 4096,
  n_layers: 36,
  head_dim: 128,
  hidden_dim: 12288,
  n_heads: 32,
  n_kv_heads: 32,
  rope_theta: 10000.0,
  norm_eps: 1e-6,
  vocab_size: 131072,
  tied_embeddings: false,
  max_position_embeddings: 1048576,
  q_lora_rank: 1024,
  qk_rope_head_dim: 64,
  qk_nope_head_dim: 64,
  kv_lora_rank: 256,
  v_head_dim: 128,
  llama_4_scaling: { original_max_position_embeddings: 8192, beta: 0.1 },
  yarn: { original_max_position_embeddings: 8192, factor: 128, apply_scale: false, beta: 32, alpha: 1 },
  quantization: { qformat_weight: "fp8_e4m3", qscheme_act: "TENSOR" },
  moe: {
    expert_parallel: 1,
    expert_model_parallel: 1,
    route_every_n: 1,
    first_k_dense_replace: 0,
    num_experts: 128,
    num_experts_per_tok: 4,
    num_expert_groups: 1,
    num_expert_groups_per_tok: 1,
    routed_scale: 1.0,
    expert_hidden_dim: 2048,
    num_shared_experts: 1,
  },
  vision_encoder: {
    image_token_id: 10,
    image_break_token_id: 12,
    image_end_token_id: 13,
    intermediate_size: 4096,
    num_hidden_layers: 24,
    num_attention_heads: 16,
    mm_projector_id: "patch_merge",
    spatial_merge_size: 2,
    hidden_size: 1024,
    num_channels: 3,
    image_size: 1540,
    max_image_size: 1540,
    patch_size: 14,
    rope_theta: 10000.0,
    add_pre_mm_projector_layer_norm: true,
    adapter_bias: false,
  },
};

Deno.test("configFromHF: the mistral3 wrapper reproduces the mistral-small-4 preset", () => {
  assertEquals(configFromHF(structuredClone(HF_MISTRAL3)), presetConfig("mistral-small-4"));
});

Deno.test("configFromHF: a bare mistral4 text config has no vision and the text-only prefix", () => {
  const c = configFromHF(structuredClone(HF_TEXT));
  assertEquals(c.vision_config, null);
  assertEquals(c.quantization, null);
  assertEquals({ ...c, vision_config: null, quantization: null }, {
    ...presetConfig("mistral-small-4"),
    vision_config: null,
    quantization: null,
  });
  assertEquals(checkpointTensors(c, "hf")[0].checkpointName, "model.embed_tokens.weight");
  // A legacy `rope_scaling` dict with apply_yarn_scaling selects the DeepSeek softmax scale.
  const { rope_parameters, ...rest } = structuredClone(HF_TEXT);
  const legacy = configFromHF({ ...rest, rope_scaling: { ...rope_parameters, apply_yarn_scaling: true } });
  assertEquals(legacy.softmax_scale_mode, "deepseek_yarn");
});

Deno.test("configFromHF: wrong model types and missing keys are CheckpointErrors", () => {
  assertThrows(() => configFromHF({ ...HF_TEXT, model_type: "llama" }), CheckpointError, 'expected "mistral4"');
  const { q_lora_rank: _, ...noQ } = HF_TEXT;
  assertThrows(() => configFromHF(noQ), CheckpointError, "q_lora_rank");
  assertThrows(() => configFromHF({ ...HF_TEXT, n_group: 8 }), CheckpointError, "group-limited");
});

Deno.test("configFromParams: params.json reproduces the preset; apply_scale selects the DeepSeek scale", () => {
  assertEquals(configFromParams(structuredClone(PARAMS)), presetConfig("mistral-small-4"));
  const scaled = configFromParams({ ...structuredClone(PARAMS), yarn: { ...PARAMS.yarn, apply_scale: true } });
  assertEquals(scaled.softmax_scale_mode, "deepseek_yarn");
  const f = fixtureJson<Record<string, number>>("model/derived_yarn_and_scales.json");
  assertAlmostEquals(softmaxScale(scaled), f.softmax_scale_with_mscale_sq, 1e-15);
  assertAlmostEquals(softmaxScale(presetConfig("mistral-small-4")), f.softmax_scale_plain, 1e-15);
  const { moe: _, ...dense } = PARAMS;
  assertThrows(() => configFromParams(dense), CheckpointError, "moe");
});

Deno.test("softmax scale: an unknown mode in config.json or params.json is an error naming key, value and choices", () => {
  const accepted = '(accepted: "plain", "deepseek_yarn")';
  assertEquals(softmaxScaleMode("deepseek_yarn", "x"), "deepseek_yarn");
  assertThrows(
    () => softmaxScaleMode("mscale", "softmaxScale"),
    RangeError,
    `softmaxScale: unknown value "mscale" ${accepted}`,
  );
  // The key used to be read loosely: anything but "deepseek_yarn" loaded as plain.
  assertThrows(
    () => configFromHF({ ...structuredClone(HF_TEXT), softmax_scale_mode: "mscale" }),
    CheckpointError,
    `config.json: softmax_scale_mode: unknown value "mscale" ${accepted}`,
  );
  const wrapped = structuredClone(HF_MISTRAL3) as Record<string, unknown>;
  (wrapped.text_config as Record<string, unknown>).softmax_scale_mode = "DeepSeek";
  assertThrows(
    () => configFromHF(wrapped),
    CheckpointError,
    `text_config.softmax_scale_mode: unknown value "DeepSeek"`,
  );
  for (const mode of ["plain", "deepseek_yarn"] as const) {
    assertEquals(configFromHF({ ...structuredClone(HF_TEXT), softmax_scale_mode: mode }).softmax_scale_mode, mode);
  }
  // The explicit key wins over the rope dict's apply_yarn_scaling; that flag and apply_scale must be booleans.
  const { rope_parameters, ...rest } = structuredClone(HF_TEXT);
  const both = { ...rest, softmax_scale_mode: "plain", rope_scaling: { ...rope_parameters, apply_yarn_scaling: true } };
  assertEquals(configFromHF(both).softmax_scale_mode, "plain");
  assertThrows(
    () => configFromHF({ ...rest, rope_scaling: { ...rope_parameters, apply_yarn_scaling: "yes" } }),
    CheckpointError,
    '"apply_yarn_scaling" must be true or false, got "yes"',
  );
  assertThrows(
    () => configFromParams({ ...structuredClone(PARAMS), yarn: { ...PARAMS.yarn, apply_scale: "true" } }),
    CheckpointError,
    'params.json: "apply_scale" must be true or false, got "true"',
  );
});

/**
 * A compressed-tensors NVFP4 `quantization_config` in the release's form (`nvfp4-pack-quantized`, one `Linear` group,
 * W4A4 with `dynamic: "local"` activations, attention and head ignored by vLLM's module names).
 */
const NVFP4_CT = {
  quant_method: "compressed-tensors",
  format: "nvfp4-pack-quantized",
  quantization_status: "compressed",
  config_groups: {
    group_0: {
      targets: ["Linear"],
      weights: {
        num_bits: 4,
        type: "float",
        strategy: "tensor_group",
        group_size: 16,
        symmetric: true,
        dynamic: false,
        scale_dtype: "torch.float8_e4m3fn",
      },
      input_activations: { num_bits: 4, type: "float", strategy: "tensor_group", group_size: 16, dynamic: "local" },
    },
  },
  ignore: ["lm_head", "re:.*self_attn.*", "re:.*mlp.gate$", "re:vision_encoder.*", "re:vision_language_adapter.*"],
};

Deno.test("configFromParams / configFromHF: compressed-tensors NVFP4, ignore list resolved into linear groups", () => {
  const { quantization: _, ...base } = structuredClone(PARAMS);
  const real = presetConfig("mistral-small-4");
  // The release: params.json with a compressed-tensors `quantization_config` (vLLM also passes `quantization` on).
  assertEquals(configFromParams({ ...base, quantization_config: NVFP4_CT }), { ...real, quantization: RELEASE_NVFP4 });
  assertEquals(configFromParams({ ...base, quantization: NVFP4_CT }).quantization, RELEASE_NVFP4);
  // HF: weight-only (no input activations), nothing but the head ignored: every text linear NVFP4.
  const group = NVFP4_CT.config_groups.group_0;
  const a16 = { ...NVFP4_CT, ignore: ["lm_head"], config_groups: { g: { ...group, input_activations: null } } };
  assertEquals(configFromHF({ ...structuredClone(HF_MISTRAL3), quantization_config: a16 }).quantization, {
    weight_dtype: "nvfp4",
    activation_scheme: "dynamic",
    linears: [...LINEAR_GROUPS],
  });
  // Exact module names work too, as long as they cover a whole group (here: every layer's attention).
  const names = Array.from(
    { length: 36 },
    (_, i) =>
      ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"].map((m) =>
        `model.language_model.layers.${i}.self_attn.${m}`
      ),
  ).flat();
  const exact = configFromHF({
    ...structuredClone(HF_MISTRAL3),
    quantization_config: { ...a16, ignore: ["lm_head", ...names] },
  });
  assertEquals(exact.quantization?.linears, ["dense_mlp", "shared_experts", "routed_experts"]);

  const hf = (qc: Record<string, unknown>) => () =>
    configFromHF({ ...structuredClone(HF_MISTRAL3), quantization_config: qc });
  assertThrows(hf({ ...NVFP4_CT, ignore: ["re:.*self_attn.*"] }), CheckpointError, "lm_head");
  assertThrows(
    hf({ ...NVFP4_CT, ignore: ["lm_head", "re:model.language_model.layers.0.self_attn.*"] }),
    CheckpointError,
    "whole groups",
  );
  assertThrows(hf({ ...NVFP4_CT, ignore: ["lm_head", "re:.*experts.(3|4).*"] }), CheckpointError, "whole groups");
  assertThrows(
    hf({ ...NVFP4_CT, format: "float-quantized", config_groups: { g: { ...group, format: undefined } } }),
    CheckpointError,
    "nvfp4-pack-quantized",
  );
  assertThrows(
    hf({ ...NVFP4_CT, config_groups: { g: { ...group, weights: { ...group.weights, group_size: 32 } } } }),
    CheckpointError,
    "group_size 16",
  );
  assertThrows(
    hf({ ...NVFP4_CT, config_groups: { g: { ...group, targets: ["re:.*experts.*"] } } }),
    CheckpointError,
    "targets",
  );
  assertThrows(hf({ ...NVFP4_CT, ignore: ["lm_head", "re:("] }), CheckpointError, "bad regex");
  assertThrows(hf({ quant_method: "modelopt", quant_algo: "NVFP4" }), CheckpointError, "ModelOpt");
  assertThrows(
    () => configFromParams({ ...base, quantization_config: { quant_method: "gptq" } }),
    CheckpointError,
    "gptq",
  );
});

Deno.test("rope wiring: YaRN table, magnitude and Llama-4 temperature match the fixture", () => {
  const f = fixtureJson<{ inv_freq: number[]; llama4_q_scale_examples: Record<string, number> }>(
    "model/derived_yarn_and_scales.json",
  );
  const c = presetConfig("mistral-small-4");
  const table = ropeTable(c);
  assertEquals(table.magnitude, 1);
  table.invFreq.forEach((v, i) => assertAlmostEquals(v, f.inv_freq[i], 1e-12 * Math.max(1, f.inv_freq[i])));
  const t = queryTemperature(c)!;
  for (const [p, s] of Object.entries(f.llama4_q_scale_examples)) {
    assertAlmostEquals(attnTemperatureScale(Number(p), t.beta, t.original), s, 1e-12);
  }
  // A YaRN config without the mscale keys gets transformers' 0.1·ln(s) + 1 magnitude.
  const bare = presetConfig("mistral-small-4");
  bare.rope_scaling = { ...bare.rope_scaling!, mscale: null, mscale_all_dim: null };
  assertAlmostEquals(ropeTable(bare).magnitude, 0.1 * Math.log(128) + 1, 1e-12);
});

/** Canonical names fed by each layout, and whether every canonical element is written exactly once. */
function coverage(config: Mistral4Config, layout: CheckpointLayout) {
  const canon = new Map(canonicalTensors(config).map((t) => [t.name, t]));
  const written = new Map<string, number>();
  const names = new Set<string>();
  for (const t of checkpointTensors(config, layout)) {
    assert(!names.has(t.checkpointName), `duplicate ${t.checkpointName}`);
    names.add(t.checkpointName);
    const target = canon.get(t.canonicalName);
    assert(target, `${t.checkpointName} → unknown ${t.canonicalName}`);
    const n = t.transform.kind === "broadcast" ? numel(storedShape(target)) : Math.max(1, numel(t.shape));
    written.set(t.canonicalName, (written.get(t.canonicalName) ?? 0) + n);
  }
  for (const [name, t] of canon) {
    assertEquals(written.get(name), numel(storedShape(t)), `${layout}: ${name} coverage`);
  }
  return new Set(written.keys());
}

Deno.test("checkpoint tensors: both layouts cover the same canonical set, bf16 and FP8", () => {
  const tiny = presetConfig("tiny");
  const fp8: Mistral4Config = { ...tiny, quantization: { weight_dtype: "f8e4m3", activation_scheme: "static" } };
  for (const c of [tiny, fp8, { ...tiny, first_k_dense_replace: 1, vision_config: null }]) {
    assertEquals(coverage(c, "hf"), coverage(c, "mistral"));
  }
  const hf = new Map(checkpointTensors(fp8, "hf").map((t) => [t.checkpointName, t]));
  assertEquals(hf.get("model.language_model.layers.1.mlp.experts.gate_up_proj")?.shape, [8, 64, 64]);
  assertEquals(hf.get("model.language_model.layers.1.mlp.experts.down_proj_scale_inv")?.shape, [8, 1, 1]);
  const mi = new Map(checkpointTensors(fp8, "mistral").map((t) => [t.checkpointName, t]));
  // w3 (up) lands in the second half of the fused gate_up, and its scale in the second scale slot.
  assertEquals(mi.get("layers.1.experts.5.w3.weight")?.transform, { kind: "place", offset: [5, 32, 0] });
  assertEquals(mi.get("layers.1.experts.5.w3.qscale_weight")?.transform, { kind: "place", offset: [5, 1, 0] });
  assertEquals(mi.get("layers.0.shared_experts.w2.weight")?.canonicalName, "layers.0.shared.down");
  assertEquals(hf.get("model.vision_tower.transformer.layers.0.attention.k_proj.weight")?.transform, {
    kind: "rope_unpermute",
    heads: 2,
  });
});

Deno.test("checkpoint tensors: the real FP8 checkpoint lists every layer's experts", () => {
  const c = presetConfig("mistral-small-4");
  assertEquals(coverage(c, "hf"), coverage(c, "mistral"));
  assertEquals(
    checkpointTensors(c, "mistral").filter((t) => /\.experts\.\d+\.w1\.weight$/.test(t.checkpointName)).length,
    36 * 128,
  );
});

/** The NVFP4 release's quantisation: routed and shared experts NVFP4 (W4A4), attention BF16. */
const RELEASE_NVFP4: Mistral4Quantization = {
  weight_dtype: "nvfp4",
  activation_scheme: "static",
  linears: ["dense_mlp", "shared_experts", "routed_experts"],
};

Deno.test("checkpoint tensors: NVFP4 (compressed-tensors) in both layouts, per-expert HF names", () => {
  const tiny = presetConfig("tiny");
  const release: Mistral4Config = { ...tiny, quantization: RELEASE_NVFP4 };
  const all: Mistral4Config = { ...tiny, quantization: { ...RELEASE_NVFP4, linears: [...LINEAR_GROUPS] } };
  for (const c of [release, all, { ...all, first_k_dense_replace: 1, vision_config: null }]) {
    assertEquals(coverage(c, "hf"), coverage(c, "mistral"));
  }
  const canon = new Map(canonicalTensors(release).map((t) => [t.name, t]));
  assertEquals(canon.get("layers.0.attn.wq_a")?.dtype, "bf16");
  assertEquals(canon.get("layers.1.moe.gate_up")?.dtype, "nvfp4");
  assertEquals(canon.get("layers.1.moe.gate_up.scale")?.shape, [8, 64, 4]);
  assertEquals(canon.get("layers.1.moe.gate_up.global_scale")?.shape, [8, 2]);
  assertEquals(canon.get("layers.0.shared.gate_up.global_scale")?.shape, [2]);
  assertEquals(canonicalTensors(all).find((t) => t.name === "layers.0.attn.wkv_b")?.dtype, "nvfp4");

  const mi = new Map(checkpointTensors(release, "mistral").map((t) => [t.checkpointName, t]));
  // w3 (up) fills rows F..2F of expert 5, its global scale the second slot of [E, 2].
  const up = "layers.1.experts.5.w3";
  assertEquals([mi.get(`${up}.weight_packed`)?.shape, mi.get(`${up}.weight_packed`)?.dtype], [[32, 32], "u8"]);
  assertEquals(mi.get(`${up}.weight_packed`)?.transform, { kind: "place", offset: [5, 32, 0] });
  assertEquals([mi.get(`${up}.weight_scale`)?.shape, mi.get(`${up}.weight_scale`)?.dtype], [[32, 4], "f8e4m3"]);
  assertEquals(mi.get(`${up}.weight_global_scale`)?.transform, { kind: "place", offset: [5, 1] });
  assertEquals(mi.get("layers.0.shared_experts.w2.weight_global_scale")?.transform, { kind: "copy" });
  assertEquals(mi.get("layers.0.attention.wq_a.weight")?.dtype, "bf16");
  assert(!mi.has("layers.0.attention.wq_a.weight_packed"));

  const hf = new Map(checkpointTensors(release, "hf").map((t) => [t.checkpointName, t]));
  const p = "model.language_model.layers.1.mlp.experts";
  assertEquals(hf.get(`${p}.5.up_proj.weight_packed`)?.transform, { kind: "place", offset: [5, 32, 0] });
  assertEquals(hf.get(`${p}.7.down_proj.weight_scale`)?.shape, [64, 2]);
  assert(!hf.has(`${p}.gate_up_proj`), "no fused 3-D experts in an NVFP4 HF checkpoint");
  const allHf = new Set(checkpointTensors(all, "hf").map((t) => t.checkpointName));
  assert(allHf.has("model.language_model.layers.0.self_attn.kv_b_proj.weight_global_scale"));
});

Deno.test("checkpoint tensors: the NVFP4 release's headers (56,313 tensors, 70,801,959,560 bytes)", () => {
  // Counts pinned by a third-party loader against the real safetensors headers of
  // mistralai/Mistral-Small-4-119B-2603-NVFP4 (Mistral layout). Ours lists all but the 13,932 W4A4
  // `input_global_scale`s (skipped): F32 [1] on routed experts, BF16 [1] on the shared one.
  const c: Mistral4Config = { ...presetConfig("mistral-small-4"), quantization: RELEASE_NVFP4 };
  const listed = checkpointTensors(c, "mistral");
  const packed = listed.filter((t) => t.checkpointName.endsWith(".weight_packed")).length;
  assertEquals(packed, 36 * 129 * 3);
  assertEquals(listed.length + packed, 56313);
  const bytes: Record<string, number> = { bf16: 2, u8: 1, f8e4m3: 1, f32: 4 };
  const listedBytes = listed.reduce((a, t) => a + Math.max(1, numel(t.shape)) * bytes[t.dtype], 0);
  assertEquals(listedBytes + 36 * 128 * 3 * 4 + 36 * 3 * 2, 70801959560);
  assertEquals(coverage(c, "hf"), coverage(c, "mistral"));
});

Deno.test("normalizeCheckpointName: HF prefix variants map onto the listed names", () => {
  const mm = presetConfig("tiny"), text = { ...presetConfig("tiny"), vision_config: null };
  assertEquals(
    normalizeCheckpointName(mm, "hf", "language_model.model.norm.weight"),
    "model.language_model.norm.weight",
  );
  assertEquals(normalizeCheckpointName(mm, "hf", "language_model.lm_head.weight"), "lm_head.weight");
  assertEquals(normalizeCheckpointName(mm, "hf", "vision_tower.ln_pre.weight"), "model.vision_tower.ln_pre.weight");
  assertEquals(
    normalizeCheckpointName(mm, "hf", "model.multi_modal_projector.norm.weight"),
    "model.multi_modal_projector.norm.weight",
  );
  assertEquals(normalizeCheckpointName(text, "hf", "model.language_model.norm.weight"), "model.norm.weight");
  assertEquals(normalizeCheckpointName(text, "mistral", "layers.0.gate.weight"), "layers.0.gate.weight");
});

Deno.test("build: tiny graph with symbolic T, named nodes, weights = canonical text tensors", () => {
  const c = presetConfig("tiny");
  const graph = graphOf(c);
  assertEquals(graph.inputs.map((i) => i.name), [
    "ids",
    "pos",
    "seq",
    "blockTable",
    "logitRows",
    "layers.0.cache",
    "layers.1.cache",
  ]);
  assertEquals(graph.inputs[0].shape, [{ sym: "T", max: 16 }]);
  assertEquals(graph.inputs[5].shape, [8, 4, 48]);
  const logits = graph.nodes.find((n) => n.id === graph.outputs[0].id)!;
  assertEquals(logits.shape, [{ sym: "R", max: 2 }, 131072]);
  const canon = canonicalTensors(c).filter((t) => t.kind === "weight" && t.group === "text");
  assertEquals(
    graph.weights.map((w) => [w.name, w.shape, w.dtype]).sort(),
    canon.map((t) => [t.name, t.shape, t.dtype]).sort(),
  );
  for (const n of graph.nodes) {
    if (n.layer !== undefined) {
      assert(n.name.startsWith(`layers.${n.layer}.`), `${n.name} not named by layer ${n.layer}`);
    }
  }
  assertEquals(new Set(graph.nodes.map((n) => n.name)).size, graph.nodes.length, "node names are unique");
  assert(graph.nodes.some((n) => n.op === "attn_temperature"), "the Llama-4 temperature is wired");
  assertThrows(() => graphOf({ ...c, routed_scaling_factor: 2.5 }), Error, "routed_scaling_factor");
});

Deno.test("build: a leading dense layer uses the SwiGLU block and the dense tensor names", () => {
  const c: Mistral4Config = { ...presetConfig("tiny"), first_k_dense_replace: 1 };
  const names = graphOf(c).weights.map((w) => w.name);
  assert(names.includes("layers.0.mlp.gate_up") && !names.includes("layers.0.moe.router"));
  assert(names.includes("layers.1.moe.router"));
  const canon = canonicalTensors(c).filter((t) => t.kind === "weight" && t.group === "text").map((t) => t.name);
  assertEquals([...names].sort(), canon.sort());
});

/** Seeded weights for the reference backend (f32): norms near 1, the rest small. */
function randomWeights(config: Mistral4Config): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const rand = mulberry32(7);
  for (const w of graphOf(config).weights) {
    const n = numel(w.shape as number[]);
    const a = new Float32Array(n);
    const isNorm = (w.shape as number[]).length === 1;
    for (let i = 0; i < n; i++) a[i] = isNorm ? 1 + 0.1 * (rand() - 0.5) : 0.2 * (rand() - 0.5);
    out.set(w.name, a);
  }
  return out;
}

Deno.test("build: tiny runs on the reference backend; absorbed ≡ naive MLA", async () => {
  const c = { ...presetConfig("tiny"), vocab_size: 512 };
  const weights = randomWeights(c);
  const inputs = {
    ids: new Int32Array([1, 7, 300, 42, 5]),
    pos: new Int32Array([0, 1, 2, 0, 1]),
    seq: new Int32Array([0, 0, 0, 1, 1]),
    blockTable: new Int32Array([0, 1, 2, 3, 4, 5, 6, 7]),
    logitRows: new Int32Array([2, 4]),
  };
  const run = async (attention: "absorbed" | "naive") => {
    const graph = graphOf(c, { attention });
    return (await runGraph(graph, await referenceBackend.create(), { weights, inputs })).logits as Float32Array;
  };
  const [absorbed, naive] = [await run("absorbed"), await run("naive")];
  assertEquals(absorbed.length, 2 * 512);
  assert(absorbed.every(Number.isFinite), "finite logits");
  let err = 0, norm = 0;
  for (let i = 0; i < absorbed.length; i++) [err, norm] = [err + (absorbed[i] - naive[i]) ** 2, norm + naive[i] ** 2];
  assert(Math.sqrt(err / norm) < 1e-5, `absorbed vs naive: ${Math.sqrt(err / norm)}`);
});

Deno.test("resolveModel: presets, config.json and params.json directories, helpful errors", async () => {
  assertEquals((await resolveModel("demo")).config.hidden_size, 256);
  assertEquals(Object.keys(families), ["mistral4"]);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/params.json`, JSON.stringify(PARAMS));
    const fromParams = await resolveModel(dir);
    assertEquals([fromParams.source, fromParams.layout], ["params.json", "mistral"]);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(HF_MISTRAL3));
    const fromHF = await resolveModel(dir);
    assertEquals([fromHF.source, fromHF.layout], ["config.json", "hf"]);
    assertEquals(fromHF.config, fromParams.config);
    await Deno.writeTextFile(`${dir}/config.json`, "{nope");
    await assertRejects(() => resolveModel(dir), CheckpointError, "invalid JSON");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await assertRejects(() => resolveModel("/nonexistent/ckpt"), CheckpointError, "not a preset");
});

Deno.test("inspect JSON: params, active per token, cache bytes for the real model", async () => {
  const r = JSON.parse(JSON.stringify(await inspectModel("mistral-small-4")));
  assertEquals(r.params.text, 118_972_826_624);
  assertEquals(r.params.total, 118_972_826_624 + 428_472_320);
  assertEquals(r.params.activePerToken, 6_095_717_376);
  assertEquals(r.kvCache.bytesPerToken, 23_040);
  // Absorbed decode attention per context token: 32 heads × 36 layers × (2·320 + 2·256).
  assertEquals(r.flops.perContextToken, 32 * 36 * 1152);
  const perParam = r.flops.decodeContextFree / r.params.activePerToken;
  assert(Math.abs(perParam - 2) < 0.02, `≈ 2 FLOPs per active parameter, got ${perParam}`);
  assertEquals(r.layers.length, 36);
  assertEquals(r.plan, null);
});

Deno.test("build: each linear group gets its own stored dtype (the NVFP4 release quantises only experts)", () => {
  const base = presetConfig("tiny");
  const c: Mistral4Config = {
    ...base,
    quantization: { weight_dtype: "nvfp4", activation_scheme: "static", linears: ["shared_experts", "routed_experts"] },
  };
  const dtypes = new Map(graphOf(c).weights.map((w) => [w.name, w.dtype]));
  assertEquals(dtypes.get("layers.0.attn.wq_a"), base.dtype);
  assertEquals(dtypes.get("layers.0.attn.wkv_b"), base.dtype);
  assertEquals(dtypes.get("layers.0.moe.gate_up"), "nvfp4");
  assertEquals(dtypes.get("layers.0.shared.down"), "nvfp4");
  assertEquals(dtypes.get("layers.0.moe.router"), base.dtype);
  // --dtype overrides every group.
  const q8 = new Map(graphOf(c, { linearDtype: "q8" }).weights.map((w) => [w.name, w.dtype]));
  assertEquals([q8.get("layers.0.attn.wq_a"), q8.get("layers.0.moe.gate_up")], ["q8", "q8"]);
});
