/**
 * The `wasm` compilers of the latent cache and MLA attention. `mla_cache_write` scatters the step's `[c_kv | k_rope]`
 * rows into the paged cache; `mla_attention` reads it: the step planner (runtime/step_plan.ts) cuts the step's tokens
 * into naive prefill runs (context expanded 256 rows at a time by one matmul into k_nope/v of every head, then
 * attention with 128-wide keys) and absorbed ranges (query folded into latent space; decode splits a long context
 * into parts merged afterwards). Every decision and index check uses the host copies of seq/pos/blockTable.
 *
 * @module
 */

import { maxShape, type Node } from "../../../graph/ir.ts";
import type { MlaAttentionAttrs } from "../../../ops/mla_attention.ts";
import { checkCacheIndices, decodeSplits, planMla } from "../../step_plan.ts";
import {
  type CompileContext,
  copyRows,
  hostInts,
  matrixArgs,
  minRows,
  offsets,
  pieces,
  type RunState,
  shapeOf,
  type Step,
} from "./compile.ts";
import { DT, MLA_PARAMS, MLA_PREFILL_PARAMS, paramsBytes, writeParams } from "./module.ts";

/** Context rows per tile of the naive MLA prefill (expanded k_nope and v of every head: CT · H · (dn + dv)). */
const CT = 256;
/** Tokens per naive-prefill work item: at most TB in kernels/wasm/attention_prefill.c (one 8-column Q panel). */
const PREFILL_TB = 8;

const at64 = (n: number) => Math.ceil(n / 64) * 64;

/** Checks the step's cache addressing on the host copies (a bad index would touch memory outside the cache). */
function checkStep(
  s: RunState,
  seq: number,
  pos: number,
  bt: number,
  shape: { S: number; mb: number; nb: number; bs: number },
) {
  checkCacheIndices(hostInts(s, seq), hostInts(s, pos), hostInts(s, bt), {
    sequences: shape.S,
    maxBlocks: shape.mb,
    numBlocks: shape.nb,
    blockSize: shape.bs,
  });
}

/** `mla_cache_write`: the `[ckv | kpe]` rows (the op's result) scattered into the cache (f32 or bf16). */
export function compileCacheWrite(c: CompileContext, node: Node): Step {
  const [ckv, kpe, cache, seq, pos, bt] = node.inputs;
  const kvr = maxShape(c.table[ckv].shape)[1], dr = maxShape(c.table[kpe].shape)[1], QW = kvr + dr;
  const [nb, bs] = maxShape(c.table[cache].shape), mb = maxShape(c.table[bt].shape)[1];
  const cdt = c.stored(cache) === "bf16" ? DT.bf16 : DT.f32;
  return (s) => {
    const T = shapeOf(c, ckv, s.vars)[0], S = shapeOf(c, bt, s.vars)[0];
    if (T === 0) return;
    checkStep(s, seq, pos, bt, { S, mb, nb, bs });
    const out = s.ptr[node.id];
    copyRows(c, s.ptr[ckv], kvr * 4, 0, out, QW * 4, kvr * 4, T);
    copyRows(c, s.ptr[kpe], dr * 4, 0, out + kvr * 4, QW * 4, dr * 4, T);
    const common = [s.ptr[cache], cdt, s.ptr[bt], mb, bs, s.ptr[seq], s.ptr[pos]];
    c.pool.parallelFor("mla_cache_write", [out, QW, ...common, QW], T, { minRows: minRows(QW) });
  };
}

/** `mla_attention` over the paged cache (read only). */
export function compileMla(c: CompileContext, node: Node): Step {
  const [q, wkvb, cache, seq, pos, bt] = node.inputs;
  const a = node.attrs as MlaAttentionAttrs;
  const { heads: H, dn, dr, dv, kvr, blockSize: bs } = a, QW = kvr + dr, N = H * (dn + dv);
  const { wdt, scales } = matrixArgs(c, wkvb);
  const cdt = c.stored(cache) === "bf16" ? DT.bf16 : DT.f32;
  const nb = maxShape(c.table[cache].shape)[0], mb = maxShape(c.table[bt].shape)[1];
  const Tmax = maxShape(c.table[q].shape)[0];
  // Temp: the kernels' params structs, split-decode partial states (T · splits < 8 · threads items of
  // [H, kvr + 2]), then the naive prefill's tiles (c_kv, k_rope, expanded kv padded by 8 floats, see
  // attention_prefill.c) and per-(token, head) running max and sum.
  // Params structs: pointers take 8 bytes on the memory64 build.
  const paramBytes = at64(paramsBytes(c.k, MLA_PARAMS));
  const prefillParamBytes = at64(paramsBytes(c.k, MLA_PREFILL_PARAMS));
  const partItems = 8 * c.pool.threads, partBytes = at64(partItems * H * (kvr + 2) * 4);
  const tiles = [CT * kvr * 4, CT * dr * 4, (CT * N + 8) * 4, Tmax * H * 2 * 4].map(at64);
  c.temp(paramBytes + prefillParamBytes + partBytes + tiles.reduce((x, y) => x + y, 0));
  return (s) => {
    const T = shapeOf(c, q, s.vars)[0], S = shapeOf(c, bt, s.vars)[0];
    if (T === 0) return;
    checkStep(s, seq, pos, bt, { S, mb, nb, bs });
    const params = s.temp, prefillParams = params + paramBytes;
    const part = prefillParams + prefillParamBytes;
    const w = s.ptr[wkvb], wqs = scales ? w + scales : 0;
    const seqs = hostInts(s, seq), poss = hostInts(s, pos);
    const [ckvTile, krTile, kvTile, state] = offsets(part + partBytes, tiles);
    for (const r of planMla(seqs, poss, { naivePrefill: c.tuning.naivePrefill })) {
      if (r.kind === "absorbed") {
        absorbed(r.start, r.n, r.context);
        continue;
      }
      const ctx = r.p0 + r.n;
      for (let c0 = 0; c0 < ctx; c0 += CT) {
        const cl = Math.min(CT, ctx - c0);
        writeParams(c.k, prefillParams, MLA_PREFILL_PARAMS, {
          q: s.ptr[q] + r.start * H * (dn + dr) * 4,
          cache: s.ptr[cache],
          cdt,
          table: s.ptr[bt] + seqs[r.start] * mb * 4,
          bs,
          ckv: ckvTile,
          kr: krTile,
          kv: kvTile,
          state,
          out: s.ptr[node.id] + r.start * H * dv * 4,
          n: r.n,
          p0: r.p0,
          c0,
          cl,
          last: c0 + cl >= ctx ? 1 : 0,
          H,
          dn,
          dr,
          dv,
          kvr,
          scale: a.scale,
          tb: PREFILL_TB,
        });
        c.pool.parallelFor("mla_gather", [prefillParams], cl, { minRows: minRows(QW) });
        // At least 9 rows, so a short last tile takes the prefill product like the others (rows past cl are
        // stale and ignored): with ≤ 8 rows q8 would quantise the latents to int8, unlike the rest of the context.
        c.pool.parallelFor("matmul", [ckvTile, w, wdt, 1, wqs, kvTile, Math.max(cl, 9), N, kvr], N, {
          align: 8,
          minRows: minRows(cl * kvr),
          chunks: pieces(c),
        });
        c.pool.parallelFor("mla_prefill", [prefillParams], Math.ceil(r.n / PREFILL_TB) * H, { chunks: pieces(c) });
      }
    }

    /** The absorbed kernel over tokens [t0, t0 + n) whose longest context is `context`. */
    function absorbed(t0: number, n: number, context: number): void {
      const threads = c.pool.threads;
      // Prefill: token blocks share W_kvb decoding and cache tiles, all heads at once. Decode: one token's heads
      // spread over the threads, or (long contexts) every head over a part of the context, merged by mla_merge.
      let tb = 1, hg = H, splits = 0;
      if (n >= 4 * threads) tb = Math.max(1, Math.min(8, Math.floor(n / (4 * threads))));
      else {
        splits = decodeSplits({
          tokens: n,
          context,
          parallelism: 4 * threads,
          maxItems: partItems,
          splitContext: c.tuning.splitContext,
        });
        if (!splits) hg = Math.ceil(H / Math.min(H, Math.ceil((4 * threads) / n)));
      }
      writeParams(c.k, params, MLA_PARAMS, {
        q: s.ptr[q] + t0 * H * (dn + dr) * 4,
        wkvb: w,
        wdt,
        wscale: 1,
        wqs,
        cache: s.ptr[cache],
        cdt,
        blockTables: s.ptr[bt],
        maxBlocks: mb,
        bs,
        tokSeq: s.ptr[seq] + t0 * 4,
        tokPos: s.ptr[pos] + t0 * 4,
        out: s.ptr[node.id] + t0 * H * dv * 4,
        T: n,
        H,
        dn,
        dr,
        dv,
        kvr,
        scale: a.scale,
        hg,
        tb,
        splits,
        part,
      });
      if (splits > 1) {
        c.pool.parallelFor("mla_attention", [params], n * splits, { chunks: pieces(c) });
        c.pool.parallelFor("mla_merge", [params], n * H, { chunks: pieces(c) });
        return;
      }
      c.pool.parallelFor("mla_attention", [params], Math.ceil(n / tb) * Math.ceil(H / hg), { chunks: pieces(c) });
    }
  };
}
