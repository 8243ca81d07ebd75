/**
 * The `wasm` compilers of MoE routing and the grouped experts. Routes stay sparse: `moe_topk` gives each token's
 * expert ids, `moe_gate` their weights, and `moe_experts` groups the assignments per expert (`moe_plan`, a kernel)
 * and runs gate/up, down and the weighted combine as phases over scratch, each output written by one thread.
 *
 * @module
 */

import { maxShape, type Node } from "../../../graph/ir.ts";
import { type CompileContext, matrixArgs, minRows, pieces, preQuantised, shapeOf, type Step } from "./compile.ts";
import { nvfp4RowBytes, nvfp4Slots } from "./layout.ts";
import { MOE_PARAMS, paramOffset, paramsBytes, Q8_BLOCK, writeParams } from "./module.ts";
import { Q4_BLOCK, q4RowBytes } from "../../../weights/codecs.ts";

/** `moe_topk`: ids of each token's k most probable experts (`moe_route` without weights). */
export function compileMoeTopK(c: CompileContext, node: Node): Step {
  const [logits] = node.inputs, K = node.attrs.topK as number, E = maxShape(c.table[logits].shape)[1];
  return (s) => {
    const T = shapeOf(c, logits, s.vars)[0];
    c.pool.parallelFor("moe_route", [s.ptr[logits], E, K, 1, 1, s.ptr[node.id], 0], T, { minRows: minRows(E * K) });
  };
}

/** `moe_gate`: renormalised softmax weights of the given experts. */
export function compileMoeGate(c: CompileContext, node: Node): Step {
  const [logits, ids] = node.inputs, E = maxShape(c.table[logits].shape)[1], K = maxShape(node.shape)[1];
  return (s) => {
    const T = shapeOf(c, logits, s.vars)[0];
    const args = [s.ptr[logits], E, K, s.ptr[ids], s.ptr[node.id]];
    c.pool.parallelFor("moe_gate", args, T, { minRows: minRows(E * K) });
  };
}

/** `moe_experts` over the assignments `ids`/`weights` (k per token). */
export function compileMoeExperts(c: CompileContext, node: Node): Step {
  const [x, ids, weights, gateUp, down] = node.inputs, K = maxShape(c.table[ids].shape)[1];
  const [E, , D] = maxShape(c.table[gateUp].shape), F = maxShape(c.table[down].shape)[2];
  const Tmax = maxShape(c.table[x].shape)[0], A = Tmax * K;
  const dt = c.stored(gateUp), { wdt, scales: guScales } = matrixArgs(c, gateUp), dnScales = matrixArgs(c, down).scales;
  const es = dt === "f32" ? 4 : dt === "bf16" ? 2 : 1;
  // Bytes of one expert row of `width` inputs (NVFP4: codes and block scales, layout.ts; q4 pads rows to whole
  // 32-blocks).
  const rowBytes = (width: number) =>
    dt === "nvfp4" ? nvfp4RowBytes(width) : dt === "q4" ? q4RowBytes(width) : width * es;
  // Scale strides per expert in scale elements (f32; q4 f16): q8, q4 blocks along the input dim, f8 one per row.
  const rowScales = (width: number) =>
    dt === "q8" ? Math.ceil(width / Q8_BLOCK) : dt === "q4" ? Math.ceil(width / Q4_BLOCK) : dt === "f8e4m3" ? 1 : 0;
  const guRow = rowScales(D), dnRow = rowScales(F), scaleBytes = dt === "q4" ? 2 : 4;
  // NVFP4: global scales per expert (the gate and up halves, then down's), one per matrix the kernel takes.
  const nv = dt === "nvfp4", guSlots = nvfp4Slots(2 * F), dnSlots = nvfp4Slots(D);
  // q8, q4 and NVFP4 decode (T ≤ 8): x and act quantised once by the calling thread, not once per work item.
  const preX = preQuantised(c, wdt, D), preAct = preQuantised(c, wdt, F);
  // Temp layout (bytes): order, inv [A] · offsets [E+1] · active [E] · act, up [A, F] · ys [A, D] · params ·
  // (q8, q4, NVFP4) qx [8 rows] · qact [8·k rows].
  const sizes = [4 * A, 4 * A, 4 * (E + 1), 4 * E, 4 * A * F, 4 * A * F, 4 * A * D, paramsBytes(c.k, MOE_PARAMS)];
  sizes.push(8 * (preX?.rowBytes ?? 0), 8 * K * (preAct?.rowBytes ?? 0));
  const starts: number[] = [];
  let total = 0;
  for (const b of sizes) starts.push(total), total += Math.ceil(b / 64) * 64;
  c.temp(total);
  const chunkAt = paramOffset(c.k, MOE_PARAMS, "chunk");
  return (s) => {
    const T = shapeOf(c, x, s.vars)[0];
    if (T === 0) return;
    const [order, inv, offs, active, act, up, ys, params, qx, qact] = starts.map((o) => s.temp + o);
    const pre = preX !== undefined && preAct !== undefined && preX.on(T);
    if (pre) preX.quantize(s.ptr[x], qx, T);
    const nActive = c.k.exports.moe_plan(s.ptr[ids], T, K, E, offs, order, inv, active);
    if (nActive < 0) throw new RangeError(`moe_experts: an expert id outside 0..${E - 1}`);
    const gu = s.ptr[gateUp], dw = s.ptr[down];
    const guQs = guScales ? gu + guScales : 0, dnQs = dnScales ? dw + dnScales : 0;
    writeParams(c.k, params, MOE_PARAMS, {
      x: s.ptr[x],
      offsets: offs,
      order,
      inv,
      active,
      nActive,
      wg: gu,
      wu: gu + F * rowBytes(D),
      wd: dw,
      wdt,
      sg: 2 * F * rowBytes(D),
      su: 2 * F * rowBytes(D),
      sd: D * rowBytes(F),
      qg: guQs,
      qu: nv ? guQs + 4 * (guSlots - 1) : guQs ? guQs + scaleBytes * F * guRow : 0,
      qd: dnQs,
      qsg: nv ? guSlots : 2 * F * guRow,
      qsu: nv ? guSlots : 2 * F * guRow,
      qsd: nv ? dnSlots : D * dnRow,
      act,
      up,
      ys,
      w: s.ptr[weights],
      out: s.ptr[node.id],
      T,
      D,
      F,
      k: K,
      chunk: 8,
      qx: pre ? qx : 0,
      qact: pre ? qact : 0,
    });
    // Work items are (expert, chunk of output columns): about 4 per thread, in multiples of 8 columns.
    const perExpert = Math.max(1, Math.ceil((4 * c.pool.threads) / nActive));
    const chunk = (width: number) => Math.max(8, Math.ceil(width / perExpert / 8) * 8);
    const field = c.k.i32(params + chunkAt, 1);
    field[0] = chunk(F);
    c.pool.parallelFor("moe_gate_up", [params], nActive * Math.ceil(F / chunk(F)), { chunks: pieces(c) });
    if (pre) preAct.quantize(act, qact, T * K);
    field[0] = chunk(D);
    c.pool.parallelFor("moe_down", [params], nActive * Math.ceil(D / chunk(D)), { chunks: pieces(c) });
    c.pool.parallelFor("moe_combine", [params], T, { minRows: minRows(D * K) });
  };
}
