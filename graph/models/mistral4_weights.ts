/**
 * Mistral 4 weights: the canonical (in-engine) tensor set and how each checkpoint layout maps onto it.
 *
 * Canonical names (ours; `i` = layer, shapes row-major, linears `[out, in]` as in PyTorch):
 *
 * | canonical | shape | HF | Mistral |
 * |---|---|---|---|
 * | `embed` | [V, D] | `embed_tokens` | `tok_embeddings` |
 * | `layers.i.attn_norm` | [D] | `input_layernorm` | `attention_norm` |
 * | `layers.i.attn.wq_a` | [Q, D] | `self_attn.q_a_proj` | `attention.wq_a` |
 * | `layers.i.attn.q_norm` | [Q] | `self_attn.q_a_layernorm` | `attention.q_a_norm` |
 * | `layers.i.attn.wq_b` | [H·(dn+dr), Q] | `self_attn.q_b_proj` | `attention.wq_b` |
 * | `layers.i.attn.wkv_a` | [C+dr, D] | `self_attn.kv_a_proj_with_mqa` | `attention.wkv_a_with_mqa` |
 * | `layers.i.attn.kv_norm` | [C] | `self_attn.kv_a_layernorm` | `attention.kv_a_norm` |
 * | `layers.i.attn.wkv_b` | [H·(dn+dv), C] | `self_attn.kv_b_proj` | `attention.wkv_b` |
 * | `layers.i.attn.wo` | [D, H·dv] | `self_attn.o_proj` | `attention.wo` |
 * | `layers.i.ffn_norm` | [D] | `post_attention_layernorm` | `ffn_norm` |
 * | `layers.i.moe.router` | [E, D] | `mlp.gate` | `gate` |
 * | `layers.i.moe.gate_up` | [E, 2F, D] | `mlp.experts.gate_up_proj` | `experts.e.w1` (rows 0..F) ‖ `experts.e.w3` |
 * | `layers.i.moe.down` | [E, D, F] | `mlp.experts.down_proj` | `experts.e.w2` |
 * | `layers.i.shared.gate_up` | [2·S·F, D] | `mlp.shared_experts.{gate,up}_proj` | `shared_experts.w1` ‖ `w3` |
 * | `layers.i.shared.down` | [D, S·F] | `mlp.shared_experts.down_proj` | `shared_experts.w2` |
 * | `layers.i.mlp.{gate_up,down}` | dense layers only | `mlp.{gate,up,down}_proj` | `feed_forward.{w1,w3,w2}` |
 * | `norm`, `lm_head` | [D], [V, D] | `norm`, `lm_head` | `norm`, `output` |
 * | `eagle.fc` (EAGLE drafts: no `embed`, `lm_head`) | [D, 2D] | `fc` | `eagle_linear` |
 * | `<linear>.scale` | FP8 block scale | `weight_scale_inv`, `*_proj_scale_inv` | `qscale_weight` |
 * | `<linear>.scale`, `.global_scale` | NVFP4 | `weight_scale`, `weight_global_scale` | same |
 *
 * Vision: `vision.patch_conv`, `vision.ln_pre`, `vision.layers.i.{attn_norm,ffn_norm}`,
 * `vision.layers.i.attn.{wq,wk,wv,wo}`, `vision.layers.i.ffn.{gate_up,down}`, `projector.{norm,patch_merger,
 * linear_1,linear_2}` (+ `.bias` with `multimodal_projector_bias`).
 *
 * FP8: a `.scale` tensor is a block scale: every scale dim divides the weight dim, scale[i] covers a contiguous
 * block, and the weight is `W = q · scale` (a multiply: HF's `weight_scale_inv` and Mistral's `qscale_weight` both
 * are). Every SwiGLU's gate and up are fused (gate rows first) so one matmul feeds the `swiglu` op; a fused tensor
 * keeps one scale per source block (`[2, 1]`, experts `[E, 2, 1]`; HF's single expert scale `[E, 1, 1]` broadcasts).
 *
 * NVFP4 (compressed-tensors `nvfp4-pack-quantized`): each quantised source linear `m` ships `m.weight_packed u8
 * [out, in/2]` (E2M1 codes, even input in the low nibble), `m.weight_scale f8e4m3 [out, in/16]`,
 * `m.weight_global_scale f32 [1]` (a divisor: `W = e2m1 · weight_scale / weight_global_scale`) and, in W4A4
 * checkpoints, `m.input_global_scale` (skipped). Canonically the weight has dtype `nvfp4` and its logical shape
 * (its bytes are {@link storedShape}), `<linear>.scale` holds the f8 block scales (rows as the weight) and
 * `<linear>.global_scale` one global per source linear (`[parts]`, experts `[E, 2]` and `[E]`); fused rows simply
 * concatenate. Which text linears are NVFP4 follows the config's `quantization.linears` (the checkpoint's `ignore`
 * list): the real release, `mistralai/Mistral-Small-4-119B-2603-NVFP4`, is Mistral-native (`params.json` with a
 * compressed-tensors `quantization_config`, `layers.i.experts.e.w1.weight_packed`, …) with routed and shared experts
 * NVFP4 and attention, router, embeddings, head and vision BF16. HF-layout NVFP4 checkpoints keep routed experts per
 * expert (`mlp.experts.{e}.gate_proj.weight_packed`), as llm-compressor writes them.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { isDenseLayer, isQuantizedLinear, type Mistral4Config, type Mistral4LinearGroup } from "./mistral4_config.ts";

/** Which file layout a checkpoint uses (MODEL.md §2). */
export type CheckpointLayout = "hf" | "mistral";

/** One tensor the engine holds after loading. */
export interface CanonicalTensor {
  /** Canonical name (the table in this module's docs). */
  name: string;
  /** Row-major shape. */
  shape: number[];
  /** Element type as shipped (a loader may convert with `--dtype`). */
  dtype: DType;
  /** `weight` counts as a parameter; `scale` dequantizes `scaleOf` (FP8 multiplier, NVFP4 block or global scale). */
  kind: "weight" | "scale";
  /** For scales: the canonical weight they multiply. */
  scaleOf?: string;
  /** Text decoder or vision tower + projector. */
  group: "text" | "vision";
}

/**
 * How one checkpoint tensor becomes (part of) its canonical tensor.
 * - `copy`: same elements in the same order; only the shape may differ by unit dims (a `[]` scale into `[1, 1]`).
 * - `place`: the tensor (shape left-padded with 1s to the canonical rank) fills the block starting at `offset`.
 * - `broadcast`: repeat along every dim where the checkpoint has 1 and the canonical shape does not.
 * - `rope_unpermute`: HF stores vision q/k rows per head as half-split (all evens, then all odds); the canonical
 *   layout is interleaved pairs: canonical row h·hd + 2i + j = HF row h·hd + j·hd/2 + i.
 */
export type LoadTransform =
  | { kind: "copy" }
  | { kind: "place"; offset: number[] }
  | { kind: "broadcast" }
  | { kind: "rope_unpermute"; heads: number };

/** One tensor as it appears in a checkpoint file. */
export interface CheckpointTensor {
  /** Name in the file (HF names use the primary prefix; see `normalizeCheckpointName`). */
  checkpointName: string;
  /** Canonical tensor it feeds. */
  canonicalName: string;
  /** Shape in the file; `[]` stands for any one-element shape (`[]` or `[1]`). */
  shape: number[];
  /** Expected dtype; scales may be any float dtype. */
  dtype: DType;
  /** Load-time transform into the canonical tensor. */
  transform: LoadTransform;
}

interface Entry {
  canonical: CanonicalTensor;
  hf: CheckpointTensor[];
  mistral: CheckpointTensor[];
}

/** One source of a fused tensor: its names in both layouts, stacked along the rows. */
type Part = { hf: string; mistral: string; rows: number };

/** The scale tensors of one quantised weight: FP8 one per source; NVFP4 f8 block scales and f32 global scales. */
interface Scales {
  fp8: Entry | null;
  block: Entry | null;
  global: Entry | null;
}

const COPY: LoadTransform = { kind: "copy" };
const SCALE_DTYPE: DType = "f32";
/** Inputs per NVFP4 block scale (compressed-tensors `group_size`; the config reader accepts only 16). */
const NVFP4_GROUP = 16;

function src(name: string, canonical: string, shape: number[], dtype: DType, transform = COPY): CheckpointTensor {
  return { checkpointName: name, canonicalName: canonical, shape, dtype, transform };
}

/** Collects the canonical set with both layouts' sources; one instance per config. */
class Table {
  readonly entries: Entry[] = [];
  readonly hfPrefix: string;
  constructor(readonly config: Mistral4Config) {
    this.hfPrefix = hfTextPrefix(config);
  }

  /** Stored dtype of the text linears of `group`. */
  dtypeOf(group: Mistral4LinearGroup): DType {
    return isQuantizedLinear(this.config, group) ? this.config.quantization!.weight_dtype : this.config.dtype;
  }

  add(
    name: string,
    shape: number[],
    dtype: DType,
    group: "text" | "vision",
    kind: "weight" | "scale",
    scaleOf?: string,
  ): Entry {
    const canonical: CanonicalTensor = { name, shape, dtype, kind, group };
    if (scaleOf) canonical.scaleOf = scaleOf;
    const entry: Entry = { canonical, hf: [], mistral: [] };
    this.entries.push(entry);
    return entry;
  }

  /** A tensor that is never quantised (norms, embeddings, router, head, vision), same in both layouts. */
  plain(name: string, shape: number[], dtype: DType, group: "text" | "vision", hf: string, mistral: string): Entry {
    const e = this.add(name, shape, dtype, group, "weight");
    e.hf.push(src(hf, name, shape, dtype));
    e.mistral.push(src(mistral, name, shape, dtype));
    return e;
  }

  /**
   * The scale tensors of weight `w` (`[…, rows, K]`): FP8 `<w>.scale` of `fp8Shape`, one per source linear; NVFP4
   * `<w>.scale` (the f8 block scales, `[…, rows, K/16]`) and `<w>.global_scale` of `globalShape`, one per source.
   */
  scales(w: Entry, fp8Shape: number[], globalShape: number[]): Scales {
    const { name, shape, dtype } = w.canonical;
    if (dtype === "f8e4m3") {
      return {
        fp8: this.add(`${name}.scale`, fp8Shape, SCALE_DTYPE, "text", "scale", name),
        block: null,
        global: null,
      };
    }
    if (dtype !== "nvfp4") return { fp8: null, block: null, global: null };
    const k = shape[shape.length - 1];
    if (k % NVFP4_GROUP !== 0) throw new Error(`mistral4: NVFP4 ${name} has ${k} inputs, not a multiple of 16`);
    return {
      fp8: null,
      block: this.add(`${name}.scale`, [...shape.slice(0, -1), k / NVFP4_GROUP], "f8e4m3", "text", "scale", name),
      global: this.add(`${name}.global_scale`, globalShape, SCALE_DTYPE, "text", "scale", name),
    };
  }

  /**
   * The checkpoint tensors of one source linear `module` (`[rows, K]`) of `w` in `layout`, placed at `at.rows` of
   * the weight (and block scales) and `at.fp8` / `at.global` of the per-linear scale; `null` offsets: the source is
   * the whole tensor. NVFP4 sources are compressed-tensors' `weight_packed`, `weight_scale`, `weight_global_scale`.
   */
  source(
    layout: CheckpointLayout,
    w: Entry,
    s: Scales,
    module: string,
    [rows, k]: [number, number],
    at: { rows: number[] | null; fp8: number[] | null; global: number[] | null },
  ): void {
    const list = (e: Entry) => layout === "hf" ? e.hf : e.mistral;
    const place = (offset: number[] | null): LoadTransform => offset ? { kind: "place", offset } : COPY;
    const { name, dtype } = w.canonical;
    if (dtype === "nvfp4") {
      // Packed codes are two per byte along the inputs, so rows place exactly as in the logical shape.
      list(w).push(src(`${module}.weight_packed`, name, [rows, k / 2], "u8", place(at.rows)));
      list(s.block!).push(
        src(`${module}.weight_scale`, s.block!.canonical.name, [rows, k / NVFP4_GROUP], "f8e4m3", place(at.rows)),
      );
      list(s.global!).push(
        src(`${module}.weight_global_scale`, s.global!.canonical.name, [], SCALE_DTYPE, place(at.global)),
      );
      return;
    }
    list(w).push(src(`${module}.weight`, name, [rows, k], dtype, place(at.rows)));
    const scale = layout === "hf" ? "weight_scale_inv" : "qscale_weight";
    if (s.fp8) list(s.fp8).push(src(`${module}.${scale}`, s.fp8.canonical.name, [], SCALE_DTYPE, place(at.fp8)));
  }

  /**
   * A 2-D text linear `[Σ rows, K]` of `group` from one or more row blocks (gate ‖ up fuse two), quantised when the
   * checkpoint quantises that group; FP8 keeps one scale per block (`[parts, 1]`), NVFP4 one global per block.
   */
  linear(name: string, k: number, group: Mistral4LinearGroup, parts: Part[]): void {
    const rows = parts.reduce((n, p) => n + p.rows, 0);
    const w = this.add(name, [rows, k], this.dtypeOf(group), "text", "weight");
    const s = this.scales(w, [parts.length, 1], [parts.length]);
    const single = parts.length === 1;
    let row = 0;
    parts.forEach((p, j) => {
      const at = single ? { rows: null, fp8: null, global: null } : { rows: [row, 0], fp8: [j, 0], global: [j] };
      this.source("hf", w, s, p.hf, [p.rows, k], at);
      this.source("mistral", w, s, p.mistral, [p.rows, k], at);
      row += p.rows;
    });
  }

  /**
   * Routed experts, fused here at load: Mistral ships them per expert and 2-D; HF fused and 3-D, except NVFP4
   * checkpoints, which keep transformers' names but per expert (compressed-tensors quantises `Linear` modules, so
   * llm-compressor un-fuses the 3-D experts first: `mlp.experts.{e}.{gate,up,down}_proj`).
   */
  experts(i: number, at = i): void {
    const c = this.config;
    const [E, F, D] = [c.n_routed_experts, c.moe_intermediate_size, c.hidden_size];
    const wdtype = this.dtypeOf("routed_experts");
    const hf = `${this.hfPrefix}.layers.${at}.mlp.experts`;
    const gateUp = this.add(`layers.${i}.moe.gate_up`, [E, 2 * F, D], wdtype, "text", "weight");
    const down = this.add(`layers.${i}.moe.down`, [E, D, F], wdtype, "text", "weight");
    // Mistral ships separate w1/w3 scales, so the fused gate_up keeps one per half; HF's single FP8 one broadcasts.
    const gus = this.scales(gateUp, [E, 2, 1], [E, 2]);
    const ds = this.scales(down, [E, 1, 1], [E]);
    const hfPerExpert = c.quantization?.weight_dtype === "nvfp4";
    if (!hfPerExpert) {
      gateUp.hf.push(src(`${hf}.gate_up_proj`, gateUp.canonical.name, [E, 2 * F, D], wdtype));
      down.hf.push(src(`${hf}.down_proj`, down.canonical.name, [E, D, F], wdtype));
      gus.fp8?.hf.push(
        src(`${hf}.gate_up_proj_scale_inv`, gus.fp8.canonical.name, [E, 1, 1], SCALE_DTYPE, { kind: "broadcast" }),
      );
      ds.fp8?.hf.push(src(`${hf}.down_proj_scale_inv`, ds.fp8.canonical.name, [E, 1, 1], SCALE_DTYPE));
    }
    for (let e = 0; e < E; e++) {
      // w1 = gate (rows 0..F), w3 = up (rows F..2F), w2 = down.
      const parts: [string, string, Entry, Scales, [number, number], number[], number[], number[]][] = [
        ["w1", "gate_proj", gateUp, gus, [F, D], [e, 0, 0], [e, 0, 0], [e, 0]],
        ["w3", "up_proj", gateUp, gus, [F, D], [e, F, 0], [e, 1, 0], [e, 1]],
        ["w2", "down_proj", down, ds, [D, F], [e, 0, 0], [e, 0, 0], [e]],
      ];
      for (const [m, h, w, s, shape, rows, fp8, global] of parts) {
        this.source("mistral", w, s, `layers.${at}.experts.${e}.${m}`, shape, { rows, fp8, global });
        if (hfPerExpert) this.source("hf", w, s, `${hf}.${e}.${h}`, shape, { rows, fp8, global });
      }
    }
  }
}

/** The HF prefix of text tensors: `model.language_model` for the multimodal checkpoint, `model` for text-only. */
export function hfTextPrefix(config: Mistral4Config): string {
  return config.vision_config ? "model.language_model" : "model";
}

/** SwiGLU gate ‖ up sources in both layouts (w1 = gate, w3 = up). */
function gateUp(hf: string, mistral: string, rows: number): Part[] {
  return [
    { hf: `${hf}.gate_proj`, mistral: `${mistral}.w1`, rows },
    { hf: `${hf}.up_proj`, mistral: `${mistral}.w3`, rows },
  ];
}

function buildTable(c: Mistral4Config): Table {
  const t = new Table(c);
  const P = t.hfPrefix;
  const [V, D, H, dt] = [c.vocab_size, c.hidden_size, c.num_attention_heads, c.dtype];
  const [Q, C, dr] = [c.q_lora_rank, c.kv_lora_rank, c.qk_rope_head_dim];
  const one = (hf: string, mistral: string, rows: number): Part[] => [{ hf, mistral, rows }];
  // An EAGLE draft uses its target's embedding and head (MODEL.md §7); its layers may be numbered after the target's.
  const offset = c.eagle?.layer_offset ?? 0;
  if (!c.eagle) t.plain("embed", [V, D], dt, "text", `${P}.embed_tokens.weight`, "tok_embeddings.weight");
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const [h, m, n] = [`${P}.layers.${i + offset}`, `layers.${i + offset}`, `layers.${i}`];
    const [ha, ma] = [`${h}.self_attn`, `${m}.attention`];
    t.plain(`${n}.attn_norm`, [D], dt, "text", `${h}.input_layernorm.weight`, `${m}.attention_norm.weight`);
    t.linear(`${n}.attn.wq_a`, D, "attention", one(`${ha}.q_a_proj`, `${ma}.wq_a`, Q));
    t.plain(`${n}.attn.q_norm`, [Q], dt, "text", `${ha}.q_a_layernorm.weight`, `${ma}.q_a_norm.weight`);
    t.linear(`${n}.attn.wq_b`, Q, "attention", one(`${ha}.q_b_proj`, `${ma}.wq_b`, H * (c.qk_nope_head_dim + dr)));
    t.linear(`${n}.attn.wkv_a`, D, "attention", one(`${ha}.kv_a_proj_with_mqa`, `${ma}.wkv_a_with_mqa`, C + dr));
    t.plain(`${n}.attn.kv_norm`, [C], dt, "text", `${ha}.kv_a_layernorm.weight`, `${ma}.kv_a_norm.weight`);
    t.linear(
      `${n}.attn.wkv_b`,
      C,
      "attention",
      one(`${ha}.kv_b_proj`, `${ma}.wkv_b`, H * (c.qk_nope_head_dim + c.v_head_dim)),
    );
    t.linear(`${n}.attn.wo`, H * c.v_head_dim, "attention", one(`${ha}.o_proj`, `${ma}.wo`, D));
    t.plain(`${n}.ffn_norm`, [D], dt, "text", `${h}.post_attention_layernorm.weight`, `${m}.ffn_norm.weight`);
    if (isDenseLayer(c, i)) {
      const I = c.intermediate_size;
      t.linear(`${n}.mlp.gate_up`, D, "dense_mlp", gateUp(`${h}.mlp`, `${m}.feed_forward`, I));
      t.linear(`${n}.mlp.down`, I, "dense_mlp", one(`${h}.mlp.down_proj`, `${m}.feed_forward.w2`, D));
      continue;
    }
    t.plain(`${n}.moe.router`, [c.n_routed_experts, D], dt, "text", `${h}.mlp.gate.weight`, `${m}.gate.weight`);
    t.experts(i, i + offset);
    if (c.n_shared_experts > 0) {
      const S = c.n_shared_experts * c.moe_intermediate_size;
      t.linear(`${n}.shared.gate_up`, D, "shared_experts", gateUp(`${h}.mlp.shared_experts`, `${m}.shared_experts`, S));
      t.linear(
        `${n}.shared.down`,
        S,
        "shared_experts",
        one(`${h}.mlp.shared_experts.down_proj`, `${m}.shared_experts.w2`, D),
      );
    }
  }
  t.plain("norm", [D], dt, "text", `${P}.norm.weight`, "norm.weight");
  if (!c.tie_word_embeddings && !c.eagle) t.plain("lm_head", [V, D], dt, "text", "lm_head.weight", "output.weight");
  // The draft's input projection fc(concat(embed(token), target_hidden)): 2·D → D, FP8 like the attention linears.
  if (c.eagle) t.linear("eagle.fc", 2 * D, "attention", one(`${P}.fc`, "eagle_linear", D));
  if (c.vision_config) visionTable(t, c);
  return t;
}

/** Pixtral encoder + Mistral 3 projector (bf16, never quantised; gate ‖ up fused like the text MLPs). */
function visionTable(t: Table, c: Mistral4Config): void {
  const v = c.vision_config!;
  const [Hv, I, p, m, dt] = [v.hidden_size, v.intermediate_size, v.patch_size, v.spatial_merge_size, c.dtype];
  const [hv, mv] = ["model.vision_tower", "vision_encoder"];
  t.plain(
    "vision.patch_conv",
    [Hv, v.num_channels, p, p],
    dt,
    "vision",
    `${hv}.patch_conv.weight`,
    `${mv}.patch_conv.weight`,
  );
  t.plain("vision.ln_pre", [Hv], dt, "vision", `${hv}.ln_pre.weight`, `${mv}.ln_pre.weight`);
  for (let i = 0; i < v.num_hidden_layers; i++) {
    const [h, ms, n] = [`${hv}.transformer.layers.${i}`, `${mv}.transformer.layers.${i}`, `vision.layers.${i}`];
    t.plain(`${n}.attn_norm`, [Hv], dt, "vision", `${h}.attention_norm.weight`, `${ms}.attention_norm.weight`);
    for (const [w, hfw] of [["wq", "q_proj"], ["wk", "k_proj"], ["wv", "v_proj"], ["wo", "o_proj"]]) {
      const e = t.plain(
        `${n}.attn.${w}`,
        [Hv, Hv],
        dt,
        "vision",
        `${h}.attention.${hfw}.weight`,
        `${ms}.attention.${w}.weight`,
      );
      // HF keeps q/k rows half-split for its rotate_half rope; the canonical (Mistral) layout is interleaved.
      if (w === "wq" || w === "wk") e.hf[0].transform = { kind: "rope_unpermute", heads: v.num_attention_heads };
    }
    t.plain(`${n}.ffn_norm`, [Hv], dt, "vision", `${h}.ffn_norm.weight`, `${ms}.ffn_norm.weight`);
    const gu = t.add(`${n}.ffn.gate_up`, [2 * I, Hv], dt, "vision", "weight");
    gateUp(`${h}.feed_forward`, `${ms}.feed_forward`, I).forEach((part, j) => {
      const place: LoadTransform = { kind: "place", offset: [j * I, 0] };
      gu.hf.push(src(`${part.hf}.weight`, gu.canonical.name, [I, Hv], dt, place));
      gu.mistral.push(src(`${part.mistral}.weight`, gu.canonical.name, [I, Hv], dt, place));
    });
    t.plain(
      `${n}.ffn.down`,
      [Hv, I],
      dt,
      "vision",
      `${h}.feed_forward.down_proj.weight`,
      `${ms}.feed_forward.w2.weight`,
    );
  }
  const D = c.hidden_size;
  const pm = "model.multi_modal_projector";
  t.plain("projector.norm", [Hv], dt, "vision", `${pm}.norm.weight`, "pre_mm_projector_norm.weight");
  t.plain(
    "projector.patch_merger",
    [Hv, Hv * m * m],
    dt,
    "vision",
    `${pm}.patch_merger.merging_layer.weight`,
    "patch_merger.merging_layer.weight",
  );
  for (const [n, hfn, mn, k] of [["linear_1", "linear_1", "w_in", Hv], ["linear_2", "linear_2", "w_out", D]] as const) {
    t.plain(`projector.${n}`, [D, k], dt, "vision", `${pm}.${hfn}.weight`, `vision_language_adapter.${mn}.weight`);
    if (v.multimodal_projector_bias) {
      t.plain(`projector.${n}.bias`, [D], dt, "vision", `${pm}.${hfn}.bias`, `vision_language_adapter.${mn}.bias`);
    }
  }
}

/**
 * Every canonical tensor of `config` (weights and, for quantised checkpoints, their scales).
 *
 * @example
 * ```ts
 * import { presetConfig } from "./mistral4_presets.ts";
 * import { canonicalTensors, checkpointTensors, normalizeCheckpointName } from "./mistral4_weights.ts";
 * const params = canonicalTensors(presetConfig("tiny")).filter((t) => t.kind === "weight");
 * ```
 */
export function canonicalTensors(config: Mistral4Config): CanonicalTensor[] {
  return buildTable(config).entries.map((e) => e.canonical);
}

/**
 * The tensors a checkpoint of `layout` must contain for `config`, each with its canonical target and load-time
 * transform. Activation scales are not listed (see `isIgnoredCheckpointTensor`).
 *
 * @example
 * ```ts
 * import { presetConfig } from "./mistral4_presets.ts";
 * import { canonicalTensors, checkpointTensors, normalizeCheckpointName } from "./mistral4_weights.ts";
 * const config = presetConfig("tiny");
 * for (const t of checkpointTensors(config, "mistral")) console.log(t.checkpointName, "→", t.canonicalName);
 * ```
 */
export function checkpointTensors(config: Mistral4Config, layout: CheckpointLayout): CheckpointTensor[] {
  return buildTable(config).entries.flatMap((e) => layout === "hf" ? e.hf : e.mistral);
}

/** Checkpoint name → tensor, for loaders; look names up through `normalizeCheckpointName`. */
export function weightMap(config: Mistral4Config, layout: CheckpointLayout): Map<string, CheckpointTensor> {
  return new Map(checkpointTensors(config, layout).map((t) => [t.checkpointName, t]));
}

/**
 * Static activation scales and rope caches a weight-only engine skips (`activation_scale`, `qscale_act`,
 * `*_proj_activation_scale`, NVFP4 W4A4 `input_global_scale`, `rotary_emb.inv_freq`).
 */
export function isIgnoredCheckpointTensor(name: string): boolean {
  return /(activation_scale|\.qscale_act|\.input_global_scale|rotary_emb\.inv_freq)$/.test(name);
}

/**
 * Shape of the elements a canonical tensor stores: NVFP4 packs two codes per byte along the inputs, so its bytes
 * are `[…, K/2]`; every other dtype stores its logical shape.
 *
 * @example
 * ```ts
 * import { storedShape } from "./mistral4_weights.ts";
 * storedShape({ shape: [64, 32], dtype: "nvfp4" }); // [64, 16]
 * ```
 */
export function storedShape(t: Pick<CanonicalTensor, "shape" | "dtype">): number[] {
  return t.dtype === "nvfp4" ? [...t.shape.slice(0, -1), t.shape[t.shape.length - 1] / 2] : [...t.shape];
}

/**
 * Maps the prefix variants of HF checkpoints onto the names `checkpointTensors` lists: `language_model.model.*`,
 * `model.language_model.*` and bare `model.*` text tensors, `language_model.lm_head`, and unprefixed
 * `vision_tower.*` / `multi_modal_projector.*`. Mistral names pass through unchanged.
 *
 * @example
 * ```ts
 * import { presetConfig } from "./mistral4_presets.ts";
 * import { canonicalTensors, checkpointTensors, normalizeCheckpointName } from "./mistral4_weights.ts";
 * const config = presetConfig("tiny");
 * normalizeCheckpointName(config, "hf", "language_model.model.norm.weight"); // "model.language_model.norm.weight"
 * ```
 */
export function normalizeCheckpointName(config: Mistral4Config, layout: CheckpointLayout, name: string): string {
  if (layout === "mistral") return name;
  // HF-style EAGLE drafts are often saved without the `model.` prefix (`fc.weight`, `layers.0.…`).
  if (config.eagle && /^(fc|layers|norm)\./.test(name)) return `model.${name}`;
  for (const part of ["vision_tower.", "multi_modal_projector."]) {
    if (name.startsWith(part)) return `model.${name}`;
    if (name.startsWith(`model.${part}`)) return name;
  }
  if (name.startsWith("language_model.lm_head.")) return name.slice("language_model.".length);
  const prefix = hfTextPrefix(config);
  for (const variant of ["language_model.model.", "model.language_model.", "model."]) {
    if (name.startsWith(variant)) return `${prefix}.${name.slice(variant.length)}`;
  }
  return name;
}
