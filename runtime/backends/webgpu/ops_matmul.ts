/**
 * The `webgpu` compiler of `matmul`: the decode matvec (kernels/wgsl/matmul.ts) for steps of at most
 * `MATVEC_MAX_M` rows, the tiled GEMM for longer ones, one dispatch per part of a split weight. Which one runs
 * follows the step's row count; every run records both (the other with 0 workgroups), so a bucket's bind groups
 * are all made on its first run.
 *
 * @module
 */

import { maxShape, type Node, numel, resolveShape } from "../../../graph/ir.ts";
import { GEMM_TILE, gemmKernel, MATVEC_MAX_M, matvecKernel, matvecThreads } from "../../../kernels/wgsl/matmul.ts";
import type { CompileContext, Encoder, Step } from "./ops.ts";
import { scaleWord, storedOf } from "../gpu_layout.ts";

/** `matmul` (see the module docs). */
export function compileMatmul(c: CompileContext, node: Node): Step {
  const [x, w] = node.inputs;
  const stored = storedOf(c.table[w]);
  const f16 = c.f16 && stored === "f16";
  const [N, K] = maxShape(c.table[w].shape), maxM = numel(maxShape(c.table[x].shape)) / K;
  // A bucket whose rows never pass the matvec's (or never stay within them) compiles one kernel only.
  const threads = c.tuning.matvecThreads || matvecThreads(stored, K), rowsPerGroup = 64 / threads;
  const one = matvecKernel(stored, threads, f16, 1);
  const matvec = maxM > 1 ? matvecKernel(stored, threads, f16) : undefined;
  const gemm = maxM > MATVEC_MAX_M ? gemmKernel(stored, f16) : undefined;
  c.use(one, ...(matvec ? [matvec] : []), ...(gemm ? [gemm] : []));
  return (e: Encoder) => {
    const M = numel(resolveShape(c.table[x].shape, e.vars)) / K;
    if (!M) return;
    const decode = M <= MATVEC_MAX_M;
    for (const p of e.parts(w)) {
      const params = [M, p.rows, K, N, p.row0, scaleWord([N, K], p.rows, stored)];
      const refs = [e.view(x), p.ref, e.view(node.id)];
      const groups = Math.ceil(p.rows / rowsPerGroup);
      e.dispatch(one, params, refs, M === 1 ? groups : 0);
      if (matvec) e.dispatch(matvec, params, refs, decode && M > 1 ? groups : 0);
      const tiles = Math.ceil(M / GEMM_TILE) * Math.ceil(p.rows / GEMM_TILE);
      if (gemm) e.dispatch(gemm, params, refs, decode ? 0 : tiles);
    }
  };
}
