/**
 * The Mistral 4 family (Mistral Small 4, `model_type` "mistral4"): config readers and presets, the checkpoint
 * tensor maps, and `build`, the forward pass of MODEL.md §1 as a graph over a varlen batch.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { build, presetConfig } from "./mistral4.ts";
 * const g = new GraphBuilder();
 * const sizes = { maxTokens: 64, maxSeqs: 4, numBlocks: 32, blockSize: 16, maxBlocksPerSeq: 8 };
 * const io = build(g, presetConfig("tiny"), sizes);
 * const graph = g.build(); // inputs ids/pos/seq/blockTable/logitRows + 2 caches, output "logits" [R, 131072]
 * ```
 *
 * @module
 */

import type { GraphBuilder, Tensor } from "../builder.ts";
import type { DType } from "../dtype.ts";
import { type Dim, sym } from "../ir.ts";
import { add } from "../../ops/add.ts";
import { embedding } from "../../ops/embedding.ts";
import { gatherRows } from "../../ops/gather_rows.ts";
import { maskWords, sample } from "../../ops/sample.ts";
import { matmul } from "../../ops/matmul.ts";
import { mla } from "../blocks/mla.ts";
import { moe } from "../blocks/moe.ts";
import { norm } from "../blocks/norm.ts";
import { queryTemperature, ropeTable, softmaxScale } from "../blocks/rope.ts";
import { swigluMlp } from "../blocks/swiglu.ts";
import { scatterRows } from "../../ops/scatter_rows.ts";
import { writeRows } from "../../ops/write_rows.ts";
import { isDenseLayer, isQuantizedLinear, type Mistral4Config, type Mistral4LinearGroup } from "./mistral4_config.ts";

export * from "./mistral4_config.ts";
export * from "./mistral4_presets.ts";
export * from "./mistral4_weights.ts";
export * from "./mistral4_vision.ts";

/** Sizes of one compiled step: symbol maxima, cache geometry, and dtype choices. */
export interface Mistral4IOOptions {
  /** Max tokens per step: the max of symbol `T`. */
  maxTokens: number;
  /** Max sequences per step: the max of symbol `S`. */
  maxSeqs: number;
  /** Max rows whose logits are wanted: the max of symbol `R` (default `maxSeqs`). */
  maxRows?: number;
  /** Blocks in each layer's latent cache. */
  numBlocks: number;
  /** Tokens per cache block. */
  blockSize: number;
  /** Columns of the block table (max context = maxBlocksPerSeq · blockSize). */
  maxBlocksPerSeq: number;
  /** Element type of the latent caches (default bf16; the reference backend holds f32 whatever this says). */
  cacheDtype?: DType;
  /** Overrides the stored dtype of the quantisable text linears (what `--dtype` means); default the checkpoint's. */
  linearDtype?: DType;
  /**
   * Stored dtype of the lm head (`--head-dtype`). Default: `linearDtype` when given (q4: q8, see {@link headDtype}),
   * else the config's dtype.
   */
  headDtype?: DType;
  /** MLA computation form (default "absorbed"; "naive" expands k/v, for tests). */
  attention?: "absorbed" | "naive";
  /**
   * Max image-feature rows per step (symbol `I`): adds inputs `imageRows i32 [I]` (the step's `[IMG]` tokens) and
   * `imageSlots i32 [I]` (their rows of the image store), whose vectors replace those tokens' embeddings. 0 or
   * absent: a text-only graph, exactly as without vision.
   */
  maxImageRows?: number;
  /**
   * Rows of the image store (with `maxImageRows`): the state `image_store f32 [rows, hidden_size]` the vision graph
   * writes each image's vectors into, so they stay on the backend until a step places them.
   */
  imageStoreRows?: number;
  /**
   * Ends the step with the sampler: adds the `sample` op's per-row inputs (`temperature f32 [R]`, `topK i32 [R]`,
   * `topP f32 [R]`, `uniform f32 [R]`, `maskRow i32 [R]`, `mask i32 [C, ceil(vocab/32)]` with C ≤ R) and output
   * `sampled i32 [R]`, so a step can return token ids without its logits leaving the backend.
   */
  sample?: boolean;
  /**
   * For an EAGLE draft (MODEL.md §7): adds input `hiddenAt i32 [T]` and the state `eagle.hidden f32 [maxTokens,
   * hidden_size]`; each token's final-norm output is written at its `hiddenAt` row (−1 skips it), where the draft
   * graph reads it, so the hidden state never leaves the backend.
   */
  eagleHidden?: boolean;
}

/**
 * The step's tensors. Inputs: `ids i32 [T]`, `pos i32 [T]` (absolute positions), `seq i32 [T]` (row of the block
 * table each token belongs to), `blockTable i32 [S, maxBlocksPerSeq]`, `logitRows i32 [R]` (tokens whose logits are
 * computed), and per layer the state `layers.{i}.cache [numBlocks, blockSize, kv_lora_rank + qk_rope_head_dim]`,
 * written in place. Output `logits [R, vocab_size]` (f32); with `sample`, also `sampled i32 [R]`.
 */
export interface Mistral4IO {
  /** Token ids `i32 [T]`. */
  ids: Tensor;
  /** Absolute positions `i32 [T]`. */
  pos: Tensor;
  /** Block-table row of each token `i32 [T]`. */
  seq: Tensor;
  /** Cache blocks of each sequence `i32 [S, maxBlocksPerSeq]`. */
  blockTable: Tensor;
  /** Tokens whose logits are computed `i32 [R]`. */
  logitRows: Tensor;
  /** Per-layer latent caches (state, written in place). */
  caches: Tensor[];
  /** Output `f32 [R, vocab_size]`. */
  logits: Tensor;
  /** One id per logits row `i32 [R]` (with `sample`). */
  sampled?: Tensor;
  /** Token rows that take an image vector `i32 [I]` (with `maxImageRows`). */
  imageRows?: Tensor;
  /** Their rows of the image store `i32 [I]` (with `maxImageRows`). */
  imageSlots?: Tensor;
  /** The image store, state `f32 [imageStoreRows, hidden_size]` (with `maxImageRows`). */
  imageStore?: Tensor;
  /** Rows of `eagle.hidden` each token's final-norm output goes to `i32 [T]` (with `eagleHidden`). */
  hiddenAt?: Tensor;
}

/**
 * Stored dtype of one group of text linears: the override (`--dtype`), else the checkpoint's quantisation when it
 * covers the group (the NVFP4 release quantises only the experts), else `dtype`. `--dtype nvfp4` means the release's
 * mix (MODEL.md §2): routed experts NVFP4 (quantised the release's way when the checkpoint is not), the other linears
 * FP8 E4M3, except groups the checkpoint already stores NVFP4, which stay as they are (no second rounding).
 */
export function linearDtype(config: Mistral4Config, override?: DType, group: Mistral4LinearGroup = "attention"): DType {
  const stored = config.quantization && isQuantizedLinear(config, group) ? config.quantization.weight_dtype : undefined;
  if (override === "nvfp4") return group === "routed_experts" || stored === "nvfp4" ? "nvfp4" : "f8e4m3";
  if (override) return override;
  return stored ?? config.dtype;
}

/**
 * The lm head's stored dtype: `head` when given, else the `--dtype` override — but q8 for q4, since the head (131072
 * rows) is the one linear every token reads whole, where 4-bit error shows most in the logits, and as shipped for
 * nvfp4, whose release keeps the head unquantised —, else `dtype` (checkpoint quantisation leaves the head as shipped).
 */
export function headDtype(config: Mistral4Config, override?: DType, head?: DType): DType {
  if (head) return head;
  if (override === "q4") return "q8";
  return override && override !== "nvfp4" ? override : config.dtype;
}

/** Latent-cache bytes per token over all layers (MODEL.md: 320 values × 36 layers × 2 B = 23,040 in bf16). */
export function cacheBytesPerToken(config: Mistral4Config, bytesPerValue = 2): number {
  return (config.kv_lora_rank + config.qk_rope_head_dim) * config.num_hidden_layers * bytesPerValue;
}

/** Throws for config values the graph's ops cannot express, with what to change. */
export function checkBuildable(c: Mistral4Config): void {
  const no = (why: string) => {
    throw new Error(`mistral4: ${why}`);
  };
  if (!c.rope_interleave) no("rope_interleave false (half-split rope) is not supported; the rope op is interleaved");
  if (!c.norm_topk_prob) no("norm_topk_prob false is not supported; moe_gate always renormalises the top-k weights");
  if (c.routed_scaling_factor !== 1) no(`routed_scaling_factor ${c.routed_scaling_factor} ≠ 1 is not supported`);
}

/** {@link checkBuildable} for a decoder: an EAGLE draft head has no embedding or head and cannot run alone. */
function checkDecoder(c: Mistral4Config): void {
  if (c.eagle) {
    throw new Error(
      "mistral4: this checkpoint is an EAGLE draft head (it has eagle_linear / fc and no embedding): pass it as " +
        "--speculative-model beside its target model",
    );
  }
}

/**
 * Declares the decoder for one varlen step on `g` and marks output `logits`. Reads like MODEL.md's forward pass:
 * embed; per layer `h += MLA(rms_norm(h)); h += MoE(rms_norm(h))`; final norm; keep the `logitRows` rows; lm head.
 * Every node is named `layers.{i}.…` (or `embed.out`, `norm.out`, `last_hidden`, `logits`).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../builder.ts";
 * import { build, presetConfig } from "./mistral4.ts";
 * const g = new GraphBuilder();
 * build(g, presetConfig("tiny"), { maxTokens: 8, maxSeqs: 2, numBlocks: 4, blockSize: 16, maxBlocksPerSeq: 2 });
 * ```
 */
export function build(g: GraphBuilder, config: Mistral4Config, io: Mistral4IOOptions): Mistral4IO {
  const c = config;
  checkBuildable(c);
  checkDecoder(c);
  const T = sym("T", io.maxTokens), S = sym("S", io.maxSeqs), R = sym("R", io.maxRows ?? io.maxSeqs);
  const [D, V, dt] = [c.hidden_size, c.vocab_size, c.dtype];
  const ids = g.input("ids", [T], "i32");
  const pos = g.input("pos", [T], "i32");
  const seq = g.input("seq", [T], "i32");
  const blockTable = g.input("blockTable", [S, io.maxBlocksPerSeq], "i32");
  const logitRows = g.input("logitRows", [R], "i32");
  const caches: Tensor[] = [];

  const embed = g.weight("embed", [V, D], dt);
  let h = embedding(g, ids, embed, { dtype: "f32", name: "embed.out" }); // [T, D]
  let image: { imageRows: Tensor; imageSlots: Tensor; imageStore: Tensor } | undefined;
  if (io.maxImageRows) {
    // Image vectors replace the embeddings of the [IMG] tokens (MODEL.md §1); the vision graph left them in the store.
    if (!io.imageStoreRows) throw new Error("mistral4: maxImageRows needs imageStoreRows (the image store)");
    const I = sym("I", io.maxImageRows);
    const imageStore = g.state("image_store", [io.imageStoreRows, D], "f32");
    image = { imageRows: g.input("imageRows", [I], "i32"), imageSlots: g.input("imageSlots", [I], "i32"), imageStore };
    const vectors = gatherRows(g, imageStore, image.imageSlots, { name: "embed.image_vectors" }); // [I, D]
    h = scatterRows(g, h, image.imageRows, vectors, { name: "embed.images" }); // [T, D]
  }
  const layers = decoderLayers(g, h, c, { prefix: "layers", io, batch: { pos, seq, blockTable } });
  h = layers.h;
  caches.push(...layers.caches);

  const hn = norm(g, h, { weight: "norm", dim: D, dtype: dt, eps: c.rms_norm_eps, name: "norm.out" });
  let hiddenAt: Tensor | undefined;
  if (io.eagleHidden) {
    // The draft head's conditioning (MODEL.md §7) stays on the backend: the draft graph gathers it from this state.
    const store = g.state(EAGLE_HIDDEN, [io.maxTokens, D], "f32");
    hiddenAt = g.input("hiddenAt", [T], "i32");
    writeRows(g, store, hiddenAt, hn, { name: "eagle.hidden_rows" });
  }
  const last = gatherRows(g, hn, logitRows, { name: "last_hidden" }); // [R, D]
  // An explicit --dtype quantises the head too (as llama.cpp's Q8_0 files do; q4 keeps it q8, --head-dtype sets it):
  // it is the largest tensor read per token in small models. Checkpoint quantisation (FP8, NVFP4) and --dtype nvfp4
  // leave it bf16, as shipped.
  const head = c.tie_word_embeddings ? embed : g.weight("lm_head", [V, D], headDtype(c, io.linearDtype, io.headDtype));
  const logits = matmul(g, last, head, { name: "logits" }); // [R, V]
  g.output("logits", logits);
  // Named `sampled`, not `ids`: that is the step's input of token ids.
  const sampled = io.sample ? samplerOf(g, logits, R, V) : undefined;
  if (sampled) g.output("sampled", sampled);
  return {
    ids,
    pos,
    seq,
    blockTable,
    logitRows,
    caches,
    logits,
    ...image,
    ...(sampled ? { sampled } : {}),
    ...(hiddenAt ? { hiddenAt } : {}),
  };
}

/** The state holding the target's final-norm hidden states for an EAGLE draft (`[maxTokens, hidden]` f32). */
export const EAGLE_HIDDEN = "eagle.hidden";

/** Where {@link decoderLayers} names things and what it reads. */
export interface DecoderLayersOptions {
  /** Canonical prefix of the layers' weights, nodes and caches: `layers` (`layers.{i}.…`), or `draft.layers`. */
  prefix: string;
  /** The step's sizes (cache geometry, dtypes, MLA form). */
  io: Mistral4IOOptions;
  /** The step's positions, sequence of each token and block table. */
  batch: { pos: Tensor; seq: Tensor; blockTable: Tensor };
  /** Added to each layer's index for placement (`node.layer`): a draft's layers come after the target's. */
  layerBase?: number;
}

/**
 * The decoder layers of `config` over `h [T, D]`: per layer `h += MLA(rms_norm(h)); h += FFN(rms_norm(h))`, the FFN
 * dense for layers below `first_k_dense_replace` and MoE after (a draft's layers counted after the target's:
 * `isDenseLayer`). Declares one latent cache per layer as state
 * `${prefix}.{i}.cache`. Shared by the decoder and the EAGLE draft head.
 */
export function decoderLayers(
  g: GraphBuilder,
  h: Tensor,
  c: Mistral4Config,
  o: DecoderLayersOptions,
): { h: Tensor; caches: Tensor[] } {
  const { io } = o;
  const D = c.hidden_size, dt = c.dtype;
  const lin = (group: Mistral4LinearGroup) => linearDtype(c, io.linearDtype, group);
  const latentWidth = c.kv_lora_rank + c.qk_rope_head_dim;
  const rope = ropeTable(c), temperature = queryTemperature(c), scale = softmaxScale(c);
  const caches: Tensor[] = [];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `${o.prefix}.${l}`;
    const i = l + (o.layerBase ?? 0);
    g.layer = i;
    const cache = g.state(`${p}.cache`, [io.numBlocks, io.blockSize, latentWidth], io.cacheDtype ?? "bf16");
    caches.push(cache);

    const xa = norm(g, h, { weight: `${p}.attn_norm`, dim: D, dtype: dt, eps: c.rms_norm_eps, name: `${p}.attn_in` });
    const attn = mla(g, xa, {
      prefix: `${p}.attn`,
      layer: i,
      hidden: D,
      heads: c.num_attention_heads,
      qLoraRank: c.q_lora_rank,
      kvLoraRank: c.kv_lora_rank,
      dn: c.qk_nope_head_dim,
      dr: c.qk_rope_head_dim,
      dv: c.v_head_dim,
      linearDtype: lin("attention"),
      normDtype: dt,
      latentEps: c.latent_norm_eps,
      rope,
      temperature,
      scale,
      form: io.attention ?? "absorbed",
    }, { ...o.batch, cache });
    h = add(g, h, attn, { name: `${p}.h_attn` });

    const xf = norm(g, h, { weight: `${p}.ffn_norm`, dim: D, dtype: dt, eps: c.rms_norm_eps, name: `${p}.ffn_in` });
    const ffn = isDenseLayer(c, l)
      ? swigluMlp(g, xf, {
        prefix: `${p}.mlp`,
        hidden: D,
        width: c.intermediate_size,
        dtype: lin("dense_mlp"),
        layer: i,
      })
      : moe(g, xf, {
        prefix: p,
        layer: i,
        hidden: D,
        experts: c.n_routed_experts,
        topK: c.num_experts_per_tok,
        width: c.moe_intermediate_size,
        shared: c.n_shared_experts,
        linearDtype: lin("routed_experts"),
        sharedDtype: lin("shared_experts"),
        routerDtype: dt,
      });
    h = add(g, h, ffn, { name: `${p}.h` });
  }
  g.layer = undefined;
  return { h, caches };
}

/** The sampler over the logits `[R, V]`, with its per-row inputs (see {@link Mistral4IOOptions.sample}). */
function samplerOf(g: GraphBuilder, logits: Tensor, R: Dim, V: number): Tensor {
  const C = sym("C", typeof R === "number" ? R : R.max); // masked rows: one mask per constrained sequence
  return sample(g, {
    logits,
    temperature: g.input("temperature", [R], "f32"),
    topK: g.input("topK", [R], "i32"),
    topP: g.input("topP", [R], "f32"),
    uniform: g.input("uniform", [R], "f32"),
    maskRow: g.input("maskRow", [R], "i32"),
    mask: g.input("mask", [C, maskWords(V)], "i32"),
  }, { name: "sampled" });
}
