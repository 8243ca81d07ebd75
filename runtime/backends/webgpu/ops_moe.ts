/**
 * The `webgpu` backend's MoE op compilers (`moe_topk`, `moe_gate`, `moe_experts`; see kernels/wgsl/moe.ts). Routes
 * stay on the device: `moe_experts` groups the (token, slot) pairs per expert there, and every dispatch of a bucket
 * has the same size (its largest token count × top-k), so nothing of the routing comes back to the host.
 *
 * @module
 */

import { maxShape, type Node } from "../../../graph/ir.ts";
import {
  MOE_COMBINE,
  MOE_GATE,
  MOE_TILE,
  MOE_TOPK,
  moeChunk,
  moeGroupActKernel,
  moeGroupDownKernel,
  moeMaxChunks,
  moeRouteBytes,
  moeRouteKernel,
} from "../../../kernels/wgsl/moe.ts";
import type { CompileContext, Step } from "./ops.ts";
import { groupsFor, shapeOf, whole } from "./ops.ts";
import { scaleWord, storedOf } from "../gpu_layout.ts";

/** Whether the routing pass fits the device: its per-expert arrays live in workgroup memory. */
export function moeFits(experts: unknown, workgroupBytes: number, storageBuffers: number): boolean {
  return typeof experts === "number" && moeRouteBytes(experts) <= workgroupBytes && storageBuffers >= 6;
}

/** The compilers of the MoE ops, by op name. */
export const MOE_COMPILERS: Record<string, (c: CompileContext, node: Node) => Step> = {
  moe_topk(c, node) {
    c.use(MOE_TOPK);
    const [logits] = node.inputs;
    const E = maxShape(c.table[logits].shape)[1], K = (node.attrs as { topK: number }).topK;
    return (e) => {
      const T = shapeOf(c, e, logits)[0];
      if (T) e.dispatch(MOE_TOPK, [T, E, K], [e.view(logits), e.view(node.id)], groupsFor(T));
    };
  },
  moe_gate(c, node) {
    c.use(MOE_GATE);
    const [logits, ids] = node.inputs;
    const E = maxShape(c.table[logits].shape)[1], K = maxShape(c.table[ids].shape)[1];
    return (e) => {
      const T = shapeOf(c, e, logits)[0];
      if (T) e.dispatch(MOE_GATE, [T, E, K], [e.view(logits), e.view(ids), e.view(node.id)], groupsFor(T));
    };
  },
  /**
   * Four passes (kernels/wgsl/moe.ts): route (one workgroup), gate/up + SwiGLU and down over (chunk, feature
   * tile), combine. The grids are fixed for the bucket: its most chunks × tiles, whatever this run routed.
   */
  moe_experts(c, node) {
    const [x, ids, weights, gateUp, down] = node.inputs;
    const [maxT, D] = maxShape(c.table[x].shape), K = maxShape(c.table[ids].shape)[1];
    const [E, F2] = maxShape(c.table[gateUp].shape), F = F2 / 2;
    const gu = storedOf(c.table[gateUp]), dn = storedOf(c.table[down]);
    const chunk = moeChunk(maxT * K, E);
    const route = moeRouteKernel(E, chunk), act = moeGroupActKernel(gu, chunk), down_ = moeGroupDownKernel(dn, chunk);
    c.use(route, act, down_, MOE_COMBINE);
    const chunks = moeMaxChunks(maxT * K, E, chunk);
    const tilesF = Math.ceil(F / MOE_TILE), tilesD = Math.ceil(D / MOE_TILE);
    const guScales = scaleWord([E, F2, D], E, gu), dnScales = scaleWord([E, D, F], E, dn);
    return (e) => {
      const T = shapeOf(c, e, x)[0];
      if (!T) return;
      // The chunk table (a count, then expert, first, end per chunk), the grouped list, activations by list
      // position, down projections by pair.
      const table = e.scratch("chunks", 4 * (1 + 3 * chunks)), list = e.scratch("list", 4 * maxT * K);
      const a = e.scratch("act", 4 * maxT * K * F), y = e.scratch("y", 4 * maxT * K * D);
      e.dispatch(route, [T * K], [e.view(ids), table, list], 1);
      e.dispatch(
        act,
        [K, F, tilesF, D, guScales],
        [e.view(x), whole(e, gateUp, node), table, list, a],
        chunks * tilesF,
      );
      e.dispatch(down_, [D, F, tilesD, 0, dnScales], [a, whole(e, down, node), table, list, y], chunks * tilesD);
      e.dispatch(
        MOE_COMBINE,
        [T * D, K, D, E],
        [y, e.view(ids), e.view(weights), e.view(node.id)],
        groupsFor(maxT * D),
      );
    };
  },
};
