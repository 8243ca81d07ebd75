/**
 * The `webgpu` compiler of `mla_attention` (absorbed form): the one-pass kernel (kernels/wgsl/mla.ts) for prefill
 * steps and short contexts, the split-context passes (kernels/wgsl/mla_split.ts) for a decode step whose longest
 * context is over the tuning's chunk. The choice is made per run from the host copy of the positions, but every
 * run records the same dispatches (the ones not taken with 0 workgroups), so a bucket's bind groups are all made on
 * its first run, whichever path that run takes.
 *
 * @module
 */

import { maxShape, type Node, resolveShape } from "../../../graph/ir.ts";
import type { MlaAttentionAttrs } from "../../../ops/mla_attention.ts";
import { mlaAttentionKernel } from "../../../kernels/wgsl/mla.ts";
import { mlaHeadsPerGroup, mlaSplitKernels } from "../../../kernels/wgsl/mla_split.ts";
import type { CompileContext, Encoder, Step } from "./ops.ts";
import { whole } from "./ops.ts";
import { MAX_SPLITS } from "./tuning.ts";
import { checkHostCache, f32Bits, scaleWord, storedOf } from "../gpu_layout.ts";

/** The split plan of a node: positions per chunk, chunks per (token, head) at most, tokens at most. */
export type MlaSplitPlan = { chunk: number; maxChunks: number; tokens: number };

/**
 * How a node of context `ctx` (block table width × block size) and at most `maxT` tokens splits, or undefined
 * when no step of it can (its whole context fits one chunk).
 */
export function mlaSplitPlan(ctx: number, maxT: number, tuning: CompileContext["tuning"]): MlaSplitPlan | undefined {
  const tokens = Math.min(maxT, tuning.splitTokens);
  if (ctx <= tuning.splitChunk || tokens < 1) return undefined;
  const chunk = Math.max(tuning.splitChunk, Math.ceil(ctx / MAX_SPLITS));
  return { chunk, maxChunks: Math.ceil(ctx / chunk), tokens };
}

/** `mla_attention`, one-pass or split (see the module docs). */
export function compileMlaAttention(c: CompileContext, node: Node): Step {
  const [q, wkvb, cache, seq, pos, bt] = node.inputs;
  const a = node.attrs as MlaAttentionAttrs;
  const [nb] = maxShape(c.table[cache].shape), maxBlocks = maxShape(c.table[bt].shape)[1];
  const ws = maxShape(c.table[wkvb].shape), maxT = maxShape(c.table[q].shape)[0];
  const geometry = { ...a, maxBlocks, weight: storedOf(c.table[wkvb]), cache: storedOf(c.table[cache]) };
  const onePass = mlaAttentionKernel(geometry);
  const plan = mlaSplitPlan(maxBlocks * a.blockSize, maxT, c.tuning);
  const group = mlaHeadsPerGroup(geometry, c.workgroupBytes);
  const split = plan && mlaSplitKernels(geometry, plan.maxChunks, group);
  c.use(onePass, ...(split ? [split.absorb, split.chunk, split.merge] : []));
  const H = a.heads, kvr = a.kvr, wScales = scaleWord(ws, ws[0], geometry.weight);
  return (e: Encoder) => {
    const T = resolveShape(c.table[q].shape, e.vars)[0], S = resolveShape(c.table[bt].shape, e.vars)[0];
    if (!T) return;
    checkHostCache(e.host, seq, pos, bt, T, { sequences: S, maxBlocks, numBlocks: nb, blockSize: a.blockSize });
    const params = [T, S, nb, f32Bits(a.scale), wScales];
    const Q = e.view(q), W = whole(e, wkvb, node), C = e.view(cache), out = e.view(node.id);
    const index = [e.view(seq), e.view(pos), e.view(bt)];
    if (!split || !plan) {
      e.dispatch(onePass, params, [Q, W, C, ...index, out], T * H);
      return;
    }
    const chunks = T <= plan.tokens ? Math.ceil(longestContext(e, pos, T, maxBlocks * a.blockSize) / plan.chunk) : 0;
    const go = chunks > 1;
    // Shared by the segment's MLA nodes of one geometry: their passes run one after the other.
    const scratch = e.shared(`mla-split`, 4 * plan.tokens * H * (kvr + plan.maxChunks * (kvr + 2)));
    const sp = [...params, chunks, plan.chunk, plan.tokens * H * kvr];
    e.dispatch(onePass, params, [Q, W, C, ...index, out], go ? 0 : T * H);
    e.dispatch(split.absorb, sp, [Q, W, scratch], go ? T * H : 0);
    e.dispatch(split.chunk, sp, [Q, C, ...index, scratch], go ? T * Math.ceil(H / group) * chunks : 0);
    e.dispatch(split.merge, sp, [W, out, scratch], go ? T * H : 0);
  };
}

/** The longest context (last position + 1) of the step's tokens, from the positions' host copy (else the most). */
function longestContext(e: Encoder, pos: number, T: number, ctx: number): number {
  const p = e.host.get(pos);
  if (!p) return ctx;
  let n = 0;
  for (let t = 0; t < T; t++) n = Math.max(n, p[t] + 1);
  return Math.min(n, ctx);
}
