import { assertEquals, assertThrows } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { mlaAttention, type MlaAttentionAttrs, mlaAttentionOp } from "./mla_attention.ts";
import { mlaCacheWrite, mlaCacheWriteOp } from "./mla_cache_write.ts";
import { f32, i32, type RefTensor, runReference } from "./op.ts";
import { assertClose, normalisedError, randomF32 } from "../tests/op_helpers.ts";

Deno.test("mla_attention / mla_cache_write: shapes, dims read from inputs, only the write is in place", () => {
  const g = new GraphBuilder();
  const T = sym("T", 16), S = sym("S", 4);
  const batch = {
    cache: g.state("cache", [10, 16, 40], "f32"),
    seq: g.input("seq", [T], "i32"),
    pos: g.input("pos", [T], "i32"),
    blockTable: g.input("block_table", [S, 5], "i32"),
  };
  const rows = mlaCacheWrite(g, { ckv: g.input("ckv", [T, 32], "f32"), kpe: g.input("kpe", [T, 8], "f32"), ...batch });
  assertEquals(rows.shape, [T, 40]);
  const out = mlaAttention(g, {
    q: g.input("q", [T, 4, 24], "f32"),
    wkvb: g.weight("wkvb", [4 * (16 + 12), 32], "bf16"),
    ...batch,
  }, { scale: 0.1 });
  assertEquals(out.shape, [T, 48]);
  g.output("out", out);
  const node = g.build().nodes[1];
  assertEquals(node.attrs, { heads: 4, dn: 16, dr: 8, dv: 12, kvr: 32, blockSize: 16, scale: 0.1, form: "absorbed" });
  assertEquals([mlaCacheWriteOp.writesInputs, mlaAttentionOp.writesInputs], [[2], undefined]);
  const cache2 = g.state("cache2", [10, 16, 48], "f32");
  const ckv2 = g.input("ckv2", [T, 32], "f32"), kpe2 = g.input("kpe2", [T, 8], "f32");
  assertThrows(() => mlaCacheWrite(g, { ckv: ckv2, kpe: kpe2, ...batch, cache: cache2 }), Error, "cache row width");
  const q2 = g.input("q2", [T, 5, 24], "f32"); // 5 heads do not divide W_kvb's 112 rows
  assertThrows(
    () => mlaAttention(g, { q: q2, wkvb: g.weight("wkvb", [4 * (16 + 12), 32], "bf16"), ...batch }, { scale: 0.1 }),
    Error,
    "dv",
  );
});

function attrs(form: "absorbed" | "naive", a: Partial<MlaAttentionAttrs> = {}): MlaAttentionAttrs {
  return { heads: 1, dn: 1, dr: 1, dv: 1, kvr: 1, blockSize: 2, scale: 1, form, ...a };
}

Deno.test("mla_attention: a hand-computed two-token prefill", () => {
  // W_kvb: k_nope = 2c, v = 3c. Token 0 (c=1, k_rope=0) sees itself: out = 3.
  // Token 1 (c=2, k_rope=1, q=[0.5, 1]): scores [0.5·2 + 0, 0.5·4 + 1] = [1, 3] → out = 3·p0 + 6·p1.
  for (const form of ["absorbed", "naive"] as const) {
    const cache = f32([2, 2, 2], new Array(8).fill(0));
    const batch = [cache, i32([2], [0, 0]), i32([2], [0, 1]), i32([1, 2], [1, 0])]; // the sequence starts in block 1
    const rows = runReference(mlaCacheWriteOp, [f32([2, 1], [1, 2]), f32([2, 1], [0, 1]), ...batch], {});
    assertEquals(Array.from(rows.data), [1, 0, 2, 1]);
    const out = runReference(
      mlaAttentionOp,
      [f32([2, 1, 2], [1, 0, 0.5, 1]), f32([2, 1], [2, 3]), ...batch],
      attrs(form),
    );
    const p1 = Math.exp(3) / (Math.exp(1) + Math.exp(3));
    assertClose(out.data, [3, 3 * (1 - p1) + 6 * p1], 1e-6, form);
    assertEquals(Array.from(cache.data), [0, 0, 0, 0, 1, 0, 2, 1]);
  }
});

type Case = {
  a: MlaAttentionAttrs;
  q: RefTensor;
  ckv: RefTensor;
  kpe: RefTensor;
  w: RefTensor;
  seq: number[];
  pos: number[];
};

function randomCase(seed: number, seq: number[], pos: number[]): Case {
  const rand = mulberry32(seed);
  const a = attrs("absorbed", { heads: 3, dn: 4, dr: 2, dv: 5, kvr: 6, blockSize: 4, scale: 1 / Math.sqrt(6) });
  const t = seq.length;
  return {
    a,
    q: randomF32([t, a.heads, a.dn + a.dr], rand),
    ckv: randomF32([t, a.kvr], rand),
    kpe: randomF32([t, a.dr], rand),
    w: randomF32([a.heads * (a.dn + a.dv), a.kvr], rand),
    seq,
    pos,
  };
}

/** Rows `rows` of a tensor whose first dim is tokens. */
function rowsOf(x: RefTensor, rows: number[]): RefTensor {
  const w = x.data.length / x.shape[0];
  const data = new Float32Array(rows.length * w);
  rows.forEach((r, i) => data.set(x.data.subarray(r * w, (r + 1) * w), i * w));
  return { data, shape: [rows.length, ...x.shape.slice(1)], dtype: "f32" };
}

// Two sequences; block tables interleave their blocks so paging is exercised.
const TABLE = i32([2, 3], [5, 1, 3, 0, 4, 2]);

/** The step's rows written into the cache, then attention through it (as the model's graph does). */
function run(c: Case, form: "absorbed" | "naive", rows: number[], cache: RefTensor): RefTensor {
  const batch = [
    cache,
    i32([rows.length], rows.map((r) => c.seq[r])),
    i32([rows.length], rows.map((r) => c.pos[r])),
    TABLE,
  ];
  runReference(mlaCacheWriteOp, [rowsOf(c.ckv, rows), rowsOf(c.kpe, rows), ...batch], {});
  return runReference(mlaAttentionOp, [rowsOf(c.q, rows), c.w, ...batch], { ...c.a, form });
}

/** Dense attention straight from the token rows (no cache, no paging), naive form: an independent oracle. */
function dense(c: Case, t: number): number[] {
  const { heads: H, dn, dr, dv, kvr, scale } = c.a;
  const w = c.w.data;
  const ctx = c.seq.map((s, j) => ({ s, j })).filter((x) => x.s === c.seq[t] && c.pos[x.j] <= c.pos[t]);
  const out: number[] = [];
  for (let h = 0; h < H; h++) {
    const lin = (row: number, j: number) => {
      let s = 0;
      for (let k = 0; k < kvr; k++) s += w[row * kvr + k] * c.ckv.data[j * kvr + k];
      return s;
    };
    const scores = ctx.map(({ j }) => {
      let s = 0;
      for (let d = 0; d < dn; d++) s += c.q.data[(t * H + h) * (dn + dr) + d] * lin(h * (dn + dv) + d, j);
      for (let r = 0; r < dr; r++) s += c.q.data[(t * H + h) * (dn + dr) + dn + r] * c.kpe.data[j * dr + r];
      return s * scale;
    });
    const m = Math.max(...scores);
    const e = scores.map((s) => Math.exp(s - m));
    const z = e.reduce((x, y) => x + y, 0);
    for (let i = 0; i < dv; i++) {
      out.push(ctx.reduce((acc, { j }, n) => acc + (e[n] / z) * lin(h * (dn + dv) + dn + i, j), 0));
    }
  }
  return out;
}

const emptyCache = () => f32([6, 4, 8], new Array(6 * 4 * 8).fill(0));

Deno.test("mla_attention: absorbed ≡ naive ≡ dense oracle on a mixed varlen batch", () => {
  // seq 0: positions 0..6 (prefill of 7); seq 1: positions 0..2, interleaved in the batch.
  const seq = [0, 1, 0, 0, 1, 0, 0, 1, 0, 0];
  const pos = [0, 0, 1, 2, 1, 3, 4, 2, 5, 6];
  const c = randomCase(7, seq, pos);
  const all = seq.map((_, i) => i);
  const absorbed = run(c, "absorbed", all, emptyCache());
  const naive = run(c, "naive", all, emptyCache());
  const oracle = all.flatMap((t) => dense(c, t));
  if (normalisedError(absorbed.data, naive.data) > 1e-5) throw new Error("absorbed ≠ naive");
  assertClose(naive.data, oracle, 1e-5, "naive vs dense");
});

Deno.test("mla_attention: prefill(N) ≡ prefill(N−2) + decode(1) + decode(1) through the cache", () => {
  const seq = [0, 0, 0, 0, 0, 0, 1, 1];
  const pos = [0, 1, 2, 3, 4, 5, 0, 1];
  const c = randomCase(11, seq, pos);
  const full = run(c, "absorbed", [0, 1, 2, 3, 4, 5, 6, 7], emptyCache());
  const cache = emptyCache();
  const pre = run(c, "absorbed", [0, 1, 2, 3, 6], cache);
  const d1 = run(c, "naive", [4, 7], cache); // decode both sequences in one step
  const d2 = run(c, "absorbed", [5], cache);
  const w = c.a.heads * c.a.dv;
  const pick = (x: RefTensor, i: number) => Array.from(x.data.subarray(i * w, (i + 1) * w));
  assertClose(pick(pre, 3), pick(full, 3), 1e-6);
  assertClose(pick(d1, 0), pick(full, 4), 1e-5);
  assertClose(pick(d1, 1), pick(full, 7), 1e-5);
  assertClose(pick(d2, 0), pick(full, 5), 1e-6);
});

Deno.test("mla_attention / mla_cache_write: slots outside the block table are errors", () => {
  const c = randomCase(3, [0], [12]); // 3 blocks of 4 hold positions 0..11
  assertThrows(() => run(c, "absorbed", [0], emptyCache()), RangeError, "beyond");
  const attend = (pos: number) =>
    runReference(mlaAttentionOp, [rowsOf(c.q, [0]), c.w, emptyCache(), i32([1], [0]), i32([1], [pos]), TABLE], c.a);
  assertThrows(() => attend(12), RangeError, "beyond");
  const table = i32([2, 3], [5, 1, 9, 0, 4, 2]); // block 9 of 6
  const write = () =>
    runReference(mlaCacheWriteOp, [
      rowsOf(c.ckv, [0]),
      rowsOf(c.kpe, [0]),
      emptyCache(),
      i32([1], [0]),
      i32([1], [9]),
      table,
    ], {});
  assertThrows(write, RangeError, "block 9");
});

Deno.test("mla_attention: cost of one decode token over a full block table", () => {
  const t = (shape: number[], dtype: "f32" | "bf16" | "i32" = "f32") => ({ shape, dtype });
  const c = mlaAttentionOp.cost(
    [t([1, 1, 2]), t([2, 1], "bf16"), t([4, 2, 2]), t([1], "i32"), t([1], "i32"), t([1, 1], "i32")],
    t([1, 1]),
    attrs("absorbed"),
  );
  // Flops: absorb 2 + scores 2·2·2 + latent sum 2·2 + W_UV 2.
  // Bytes: small tensors (q 8, seq, pos, table, out 4 each) 24, W_kvb 4, two cache rows read 16.
  assertEquals(c, { flops: 16, bytes: 44 });
  // The write: ckv and kpe in (4 + 4), seq and pos (8), one row stored in the cache (8) and returned (8).
  const w = mlaCacheWriteOp.cost(
    [t([1, 1]), t([1, 1]), t([4, 2, 2]), t([1], "i32"), t([1], "i32"), t([1, 1], "i32")],
    t([1, 2]),
    {},
  );
  assertEquals(w, { flops: 0, bytes: 32 });
});
