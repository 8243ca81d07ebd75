/**
 * Model inspection: parameter counts, FLOPs per decoded token, weight bytes per dtype, latent-cache bytes per
 * token and a per-layer table, all computed from the built graph (so inspection and the graph cannot disagree)
 * plus the vision tower's tensor list until the vision graph exists. Renders as text, JSON or Graphviz DOT.
 *
 * @example
 * ```ts
 * import { inspectModel, renderText } from "./inspect.ts";
 * const report = await inspectModel("mistral-small-4");
 * console.log(report.params.text); // 118972826624
 * console.log(renderText(report));
 * ```
 *
 * @module
 */

import { GraphBuilder } from "./builder.ts";
import { BITS_PER_ELEMENT, type DType } from "./dtype.ts";
import { type Graph, numel, resolveShape, tensorTable } from "./ir.ts";
import { getOp } from "../ops/mod.ts";
import { type ResolvedModel, resolveModel } from "./models/mod.ts";
import {
  cacheBytesPerToken,
  isDenseLayer,
  linearDtype,
  type Mistral4Config,
  type SoftmaxScaleMode,
  softmaxScaleMode,
} from "./models/mistral4.ts";
import { softmaxScale } from "./blocks/rope.ts";

export { renderDot } from "./inspect_dot.ts";

/** One decoder layer's row of the table. */
export interface LayerRow {
  /** Layer index. */
  layer: number;
  /** MoE or dense (first_k_dense_replace) FFN. */
  kind: "moe" | "dense";
  /** Parameters of the layer. */
  params: number;
  /** Parameters read per decoded token (top-k experts only). */
  activeParams: number;
  /** Stored bytes of its weights (scales apart). */
  weightBytes: number;
  /** Decode FLOPs of this layer for one token, context-free part. */
  flopsPerToken: number;
}

/**
 * Placement and memory plan, added by the scheduler later (`InspectOptions.plan`). Free-form beyond `backend`;
 * `lines` are printed by the text renderer.
 */
export interface PlanSection {
  /** Backend (or backends) the plan targets. */
  backend: string;
  /** Lines printed by the text renderer. */
  lines?: string[];
  /** False when the model does not fit the backends (the lines then say by how much, and what would). */
  fits?: boolean;
  /** Whatever else the scheduler reports (placement, fallbacks, copies, arena sizes). */
  [key: string]: unknown;
}

/** Everything `inspect` reports; `JSON.stringify`-able. */
export interface InspectReport {
  /** What was inspected and where its config came from. */
  model: { name: string; source: string; modelType: string; layout: string | null };
  /** The resolved config (with `InspectOptions.softmaxScale` applied). */
  config: Mistral4Config;
  /** The MLA softmax scale in use: its mode and the factor on the scores. */
  attention: { softmaxScaleMode: SoftmaxScaleMode; softmaxScale: number };
  /** Parameter counts (scales excluded). */
  params: {
    /** Text + vision. */
    total: number;
    /** Text decoder, from the graph's weights. */
    text: number;
    /** Vision tower and projector, from the tensor list. */
    vision: number;
    /** The embedding table. */
    embedding: number;
    /** The lm head (the embedding table when tied). */
    lmHead: number;
    /** Read per decoded token: attention, router, top-k + shared experts, norms, lm head; not the embedding. */
    activePerToken: number;
  };
  /** Decode FLOPs per token. */
  flops: {
    /** Decode FLOPs per token that do not depend on the context length. */
    decodeContextFree: number;
    /** Attention FLOPs added per cached context token, all layers. */
    perContextToken: number;
    /** Totals at sample context lengths. */
    decodeAt: Record<string, number>;
  };
  /** Stored weight bytes by dtype (linears at `linearDtype`, FP8 scales as f32). */
  weights: { linearDtype: DType; bytesByDtype: Partial<Record<DType, number>>; totalBytes: number };
  /** Latent-cache footprint. */
  kvCache: { dtype: DType; valuesPerTokenPerLayer: number; bytesPerTokenPerLayer: number; bytesPerToken: number };
  /** One row per decoder layer. */
  layers: LayerRow[];
  /** Hook for the scheduler's placement section; null until a plan is supplied. */
  plan: PlanSection | null;
}

/** Options of {@link inspectModel}. */
export interface InspectOptions {
  /** Overrides the dtype of the quantisable text linears (the `--dtype` flag). */
  dtype?: DType;
  /** Overrides the lm head's dtype (the `--head-dtype` flag; default as `dtype`, q8 under q4). */
  headDtype?: DType;
  /** Latent cache element type (default bf16). */
  cacheDtype?: DType;
  /** Overrides the checkpoint's MLA softmax scale (the `--softmax-scale` flag; see `LoadModelOptions`). */
  softmaxScale?: SoftmaxScaleMode;
  /** Scheduler hook: given the decode graph, returns the placement section. */
  plan?: (graph: Graph, config: Mistral4Config) => PlanSection | Promise<PlanSection>;
}

/** A decode step (T = S = R = 1) over a one-position cache: what per-token costs are measured on. */
export function decodeGraph(resolved: ResolvedModel, options: InspectOptions = {}, context = 1): Graph {
  const g = new GraphBuilder();
  resolved.family.build(g, resolved.config, {
    maxTokens: 1,
    maxSeqs: 1,
    numBlocks: context,
    blockSize: 1,
    maxBlocksPerSeq: context,
    cacheDtype: options.cacheDtype,
    linearDtype: options.dtype,
    headDtype: options.headDtype,
  });
  return g.build();
}

/**
 * `resolved` with its softmax scale overridden by `mode` (checked: an unknown mode throws, naming
 * `--softmax-scale`); unchanged when `mode` is undefined.
 */
export function withSoftmaxScale(resolved: ResolvedModel, mode: string | undefined): ResolvedModel {
  if (mode === undefined) return resolved;
  return { ...resolved, config: { ...resolved.config, softmax_scale_mode: softmaxScaleMode(mode, "--softmax-scale") } };
}

const bytesOf = (n: number, dtype: DType) => (n * BITS_PER_ELEMENT[dtype]) / 8;

/** Fraction of a weight read for one token: top-k of the routed experts, none of the embedding table. */
export function activeFraction(name: string, c: Mistral4Config): number {
  if (/^layers\.\d+\.moe\.(gate_up|down)$/.test(name)) return c.num_experts_per_tok / c.n_routed_experts;
  return name === "embed" && !c.tie_word_embeddings ? 0 : 1;
}

/** FLOPs of every node of `graph` with all symbols at 1 (one decoded token), by layer (-1: outside layers). */
function flopsByLayer(graph: Graph): Map<number, number> {
  const table = tensorTable(graph);
  const vars = { T: 1, S: 1, R: 1 };
  const out = new Map<number, number>();
  for (const n of graph.nodes) {
    const inputs = n.inputs.map((id) => ({ shape: resolveShape(table[id].shape, vars), dtype: table[id].dtype }));
    const { flops } = getOp(n.op).cost(inputs, { shape: resolveShape(n.shape, vars), dtype: n.dtype }, n.attrs);
    out.set(n.layer ?? -1, (out.get(n.layer ?? -1) ?? 0) + flops);
  }
  return out;
}

const total = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/**
 * Inspects `--model` (a preset name or checkpoint directory).
 *
 * @example
 * ```ts
 * const r = await inspectModel("ms4-mini");
 * r.params.total; // 704403456
 * ```
 */
export async function inspectModel(model: string, options: InspectOptions = {}): Promise<InspectReport> {
  const resolved = withSoftmaxScale(await resolveModel(model), options.softmaxScale);
  const c = resolved.config;
  const graph = decodeGraph(resolved, options, 1);
  // `--dtype` as asked (nvfp4 is a mix: its experts NVFP4, the rest FP8), else the checkpoint's linears.
  const lin = options.dtype ?? linearDtype(c);

  // Parameters and bytes: the graph's weights, plus scales and the vision tower from the canonical tensor list.
  const rows: LayerRow[] = [];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    rows.push({
      layer: i,
      kind: isDenseLayer(c, i) ? "dense" : "moe",
      params: 0,
      activeParams: 0,
      weightBytes: 0,
      flopsPerToken: 0,
    });
  }
  const bytesByDtype: Partial<Record<DType, number>> = {};
  const addBytes = (dtype: DType, n: number) => bytesByDtype[dtype] = (bytesByDtype[dtype] ?? 0) + bytesOf(n, dtype);
  let text = 0, active = 0, embed = 0, head = 0;
  for (const w of graph.weights) {
    const n = numel(w.shape as number[]);
    const a = n * activeFraction(w.name, c);
    text += n;
    active += a;
    if (w.name === "embed") embed = n;
    if (w.name === "lm_head" || (w.name === "embed" && c.tie_word_embeddings)) head = n;
    addBytes(w.dtype, n);
    const layer = /^layers\.(\d+)\./.exec(w.name);
    if (layer) {
      const row = rows[Number(layer[1])];
      row.params += n;
      row.activeParams += a;
      row.weightBytes += bytesOf(n, w.dtype);
    }
  }
  let vision = 0;
  // Per-tensor scales exist exactly when the linears are FP8 (as shipped, or by --dtype).
  const stored: Mistral4Config = {
    ...c,
    quantization: lin === "f8e4m3" ? { weight_dtype: lin, activation_scheme: "static" } : null,
  };
  for (const t of resolved.family.canonicalTensors(stored)) {
    if (t.kind === "weight" && t.group === "vision") {
      vision += numel(t.shape);
      addBytes(t.dtype, numel(t.shape));
    }
    if (t.kind === "scale") addBytes(t.dtype, numel(t.shape));
  }

  // FLOPs: the attention cost is linear in the context, so two graph sizes separate the two parts.
  const at1 = flopsByLayer(graph), at2 = flopsByLayer(decodeGraph(resolved, options, 2));
  const perContextToken = total(at2) - total(at1);
  const decodeContextFree = total(at1) - perContextToken;
  for (const row of rows) row.flopsPerToken = 2 * (at1.get(row.layer) ?? 0) - (at2.get(row.layer) ?? 0);
  const decodeAt: Record<string, number> = {};
  for (const ctx of [4096, 32768, 262144]) decodeAt[ctx] = decodeContextFree + ctx * perContextToken;

  const cacheDtype = options.cacheDtype ?? "bf16";
  const perLayer = c.kv_lora_rank + c.qk_rope_head_dim;
  return {
    model: {
      name: resolved.name,
      source: resolved.source,
      modelType: resolved.family.modelType,
      layout: resolved.layout,
    },
    config: c,
    attention: { softmaxScaleMode: c.softmax_scale_mode, softmaxScale: softmaxScale(c) },
    params: { total: text + vision, text, vision, embedding: embed, lmHead: head, activePerToken: active },
    flops: { decodeContextFree, perContextToken, decodeAt },
    weights: {
      linearDtype: lin,
      bytesByDtype,
      totalBytes: Object.values(bytesByDtype).reduce((a, b) => a + b, 0),
    },
    kvCache: {
      dtype: cacheDtype,
      valuesPerTokenPerLayer: perLayer,
      bytesPerTokenPerLayer: bytesOf(perLayer, cacheDtype),
      bytesPerToken: cacheBytesPerToken(c, BITS_PER_ELEMENT[cacheDtype] / 8),
    },
    layers: rows,
    plan: options.plan ? await options.plan(graph, c) : null,
  };
}

/** `118,972,826,624 (118.97B)`. */
function count(n: number): string {
  const short = n >= 1e9
    ? `${(n / 1e9).toFixed(2)}B`
    : n >= 1e6
    ? `${(n / 1e6).toFixed(2)}M`
    : `${(n / 1e3).toFixed(1)}k`;
  return `${Math.round(n).toLocaleString("en-US")} (${short})`;
}

/** `1.23 GiB`. */
function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) [n, i] = [n / 1024, i + 1];
  return i === 0 ? `${n} B` : `${n.toFixed(2)} ${units[i]}`;
}

/** The human-readable report. */
export function renderText(r: InspectReport): string {
  const c = r.config;
  const out: string[] = [];
  const kv = (k: string, v: string) => out.push(`  ${k.padEnd(26)}${v}`);
  out.push(`model ${r.model.name} (${r.model.modelType}, from ${r.model.source})`);
  kv("layers / hidden / heads", `${c.num_hidden_layers} / ${c.hidden_size} / ${c.num_attention_heads}`);
  kv(
    "experts",
    `${c.n_routed_experts} routed (top ${c.num_experts_per_tok}) + ${c.n_shared_experts} shared, width ` +
      String(c.moe_intermediate_size),
  );
  kv(
    "vision",
    c.vision_config ? `${c.vision_config.num_hidden_layers} layers × ${c.vision_config.hidden_size}` : "none",
  );
  kv("softmax scale", `${r.attention.softmaxScaleMode} (${r.attention.softmaxScale.toPrecision(7)})`);
  out.push("parameters");
  kv("total", count(r.params.total));
  kv("text", count(r.params.text));
  kv("vision", count(r.params.vision));
  kv("active per token", count(r.params.activePerToken));
  out.push("decode FLOPs per token");
  kv("context-free", count(r.flops.decodeContextFree));
  kv("per context token", count(r.flops.perContextToken));
  for (const [ctx, f] of Object.entries(r.flops.decodeAt)) kv(`at context ${ctx}`, count(f));
  out.push(`weights (linears ${r.weights.linearDtype})`);
  for (const [d, b] of Object.entries(r.weights.bytesByDtype)) kv(d, bytes(b));
  kv("total", bytes(r.weights.totalBytes));
  out.push(`latent cache (${r.kvCache.dtype})`);
  kv(
    "per token",
    `${
      r.kvCache.bytesPerToken.toLocaleString("en-US")
    } B (${r.kvCache.valuesPerTokenPerLayer} values × ${c.num_hidden_layers} layers)`,
  );
  out.push("layers");
  out.push(
    `  ${"#".padStart(3)}  kind   ${"params".padStart(15)}  ${"active".padStart(13)}  ${"bytes".padStart(11)}  ${
      "FLOPs/token".padStart(13)
    }`,
  );
  // Identical consecutive layers (every layer of the real model) share one row.
  const cells = (l: LayerRow) =>
    [
      l.kind.padEnd(5),
      l.params.toLocaleString("en-US").padStart(15),
      Math.round(l.activeParams).toLocaleString("en-US").padStart(13),
      bytes(l.weightBytes).padStart(11),
      l.flopsPerToken.toLocaleString("en-US").padStart(13),
    ].join("  ");
  for (let i = 0; i < r.layers.length;) {
    let j = i;
    while (j + 1 < r.layers.length && cells(r.layers[j + 1]) === cells(r.layers[i])) j++;
    const range = i === j ? String(i) : `${i}-${j}`;
    out.push(`  ${range.padStart(5)}  ${cells(r.layers[i])}`);
    i = j + 1;
  }
  const fit = r.plan?.fits === false ? ": does not fit" : "";
  out.push(r.plan ? `plan (${r.plan.backend})${fit}` : "plan: none (--backend none)");
  for (const line of r.plan?.lines ?? []) out.push(`  ${line}`);
  return out.join("\n");
}

/** The JSON report (pretty-printed). */
export function renderJson(r: InspectReport): string {
  return JSON.stringify(r, null, 2);
}
