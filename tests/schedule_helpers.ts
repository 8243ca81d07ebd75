/**
 * Graphs and helpers shared by the scheduler, memory-plan and plan-executor tests.
 *
 * @module
 */

import { GraphBuilder } from "../graph/builder.ts";
import { type Graph, sym } from "../graph/ir.ts";
import { add } from "../ops/add.ts";
import { embedding } from "../ops/embedding.ts";
import { gatherRows } from "../ops/gather_rows.ts";
import { matmul } from "../ops/matmul.ts";
import { mlaAttention } from "../ops/mla_attention.ts";
import { mlaCacheWrite } from "../ops/mla_cache_write.ts";
import { reshapeOp } from "../ops/reshape.ts";
import { rmsNorm } from "../ops/rms_norm.ts";
import type { Backend } from "../runtime/backend.ts";
import type { WeightDecl } from "../graph/ir.ts";
import { maxShape, numel } from "../graph/ir.ts";
import { codeBytes } from "../weights/chunks.ts";
import { memorySource } from "../weights/memory_source.ts";
import type { WeightSource } from "../weights/source.ts";

/** A source of zeros in `decl`'s dtype (null backends compute nothing: only sizes matter). */
export function zeroWeight(decl: WeightDecl): WeightSource {
  const shape = maxShape(decl.shape);
  const data = new Uint8Array(codeBytes(decl.dtype, numel(shape), shape[shape.length - 1] ?? 1));
  const w = { name: decl.name, shape, dtype: decl.dtype, data };
  if (decl.dtype === "q8" || decl.dtype === "q4" || decl.dtype === "f8e4m3") {
    return memorySource({ ...w, dtype: "f32", data: new Uint8Array(4 * numel(shape)) }, decl.dtype);
  }
  return memorySource(w, decl.dtype);
}

/**
 * A tiny residual LM: embedding → rms_norm → matmul (wq) → add (residual) → rms_norm → matmul (head, bf16) →
 * gather_rows, with symbolic T (tokens, max 16) and R (sampled rows, max 4).
 */
export function residualLm(): Graph {
  const g = new GraphBuilder();
  const T = sym("T", 16), R = sym("R", 4);
  const ids = g.input("ids", [T], "i32");
  const rows = g.input("rows", [R], "i32");
  const x = g.name(embedding(g, ids, g.weight("embed", [16, 8], "f32")), "embed");
  const n1 = g.name(rmsNorm(g, x, g.weight("norm1", [8], "f32"), { eps: 1e-6 }), "norm1");
  const h = g.name(matmul(g, n1, g.weight("wq", [8, 8], "f32")), "proj");
  const r = g.name(add(g, x, h), "residual");
  const n2 = g.name(rmsNorm(g, r, g.weight("norm2", [8], "f32"), { eps: 1e-6 }), "norm2");
  const logits = g.name(matmul(g, n2, g.weight("head", [12, 8], "bf16")), "lm_head");
  g.output("logits", g.name(gatherRows(g, logits, rows), "sampled_logits"));
  return g.build();
}

/** Random f32 weights for {@link residualLm} (bf16 `head` handed over dequantised, as the reference stores it). */
export function residualLmWeights(rand: () => number): Map<string, Float32Array> {
  const w = (n: number) => Float32Array.from({ length: n }, () => rand() * 2 - 1);
  return new Map([["embed", w(128)], ["norm1", w(8)], ["wq", w(64)], ["norm2", w(8)], ["head", w(96)]]);
}

/** `n` rms_norms in a row, each [T, 256] f32: the arena should need two tensors, not `n`. */
export function chain(n: number): Graph {
  const g = new GraphBuilder();
  let x = g.input("x", [sym("T", 8), 256], "f32");
  const w = g.weight("w", [256], "f32");
  for (let i = 0; i < n; i++) x = g.name(rmsNorm(g, x, w, { eps: 1e-6 }), `norm${i}`);
  g.output("y", x);
  return g.build();
}

/**
 * One MLA layer with a projection in front, writing a persistent latent cache `cache` [4 blocks, 4, 6]. With
 * `peek`, outputs `before` and `after` read the cache (cache + `zero`) on either side of the in-place write;
 * `maxT` sets the bucket (default 16 tokens).
 */
export function mlaLayer(options: { peek?: boolean; maxT?: number } = {}): Graph {
  const g = new GraphBuilder();
  const T = sym("T", options.maxT ?? 16), S = sym("S", 2);
  const qIn = g.input("q_in", [T, 12], "f32");
  const cache = g.state("cache", [4, 4, 6], "f32");
  const zero = options.peek ? g.input("zero", [4, 4, 6], "f32") : undefined;
  if (zero) g.output("before", add(g, cache, zero, { name: "peek_before" }));
  const q = g.op(reshapeOp, [matmul(g, qIn, g.weight("wq", [12, 12], "f32"), { name: "q_proj" })], {
    shape: [T, 2, 6],
  }, { name: "q" }); // [T, 2, 6]
  const batch = {
    cache,
    seq: g.input("seq", [T], "i32"),
    pos: g.input("pos", [T], "i32"),
    blockTable: g.input("block_table", [S, 2], "i32"),
  };
  const ckv = g.input("ckv", [T, 4], "f32"), kpe = g.input("kpe", [T, 2], "f32");
  mlaCacheWrite(g, { ckv, kpe, ...batch }, { name: "cache_write" });
  const wkvb = g.weight("wkvb", [2 * (4 + 3), 4], "f32");
  const out = mlaAttention(g, { q, wkvb, ...batch }, { scale: 0.4, form: "absorbed", name: "attn" });
  g.output("out", out);
  if (zero) g.output("after", add(g, cache, zero, { name: "peek_after" }));
  return g.build();
}

/**
 * `inner` under another name, supporting only `ops` (all when omitted): a second reference instance can then
 * impersonate a GPU backend in end-to-end tests, computing exactly.
 */
export function impersonate(inner: Backend, name: string, ops?: string[]): Backend {
  return {
    name,
    caps: inner.caps,
    supports: (node, inputs) => (!ops || ops.includes(node.op)) && inner.supports(node, inputs),
    weightBytes: (shape, storage) => inner.weightBytes(shape, storage),
    alloc: (bytes) => inner.alloc(bytes),
    free: (buffer) => inner.free(buffer),
    uploadWeight: (target, source, consumers) => inner.uploadWeight(target, source, consumers),
    write: (view, data) => inner.write(view, data),
    read: (view, bytes) => inner.read(view, bytes),
    copy: (src, dst, bytes) => inner.copy(src, dst, bytes),
    fill: (view, bytes, value) => inner.fill(view, bytes, value),
    prepare: (segment) => inner.prepare(segment),
    run: (prepared, bindings, vars, host) => inner.run(prepared, bindings, vars, host),
    sync: () => inner.sync(),
    dispose: () => inner.dispose(),
  };
}
