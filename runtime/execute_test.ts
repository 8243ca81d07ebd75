import { assertEquals, assertRejects } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { type Graph, sym } from "../graph/ir.ts";
import { embedding } from "../ops/embedding.ts";
import { gatherRows } from "../ops/gather_rows.ts";
import { matmul } from "../ops/matmul.ts";
import { mlaCacheWrite } from "../ops/mla_cache_write.ts";
import { mlaAttention } from "../ops/mla_attention.ts";
import { rmsNorm } from "../ops/rms_norm.ts";
import { assertClose, randomF32 } from "../tests/op_helpers.ts";
import { referenceBackend } from "./backends/reference.ts";
import { Executor, runGraph, solveVars } from "./execute.ts";

/** embedding → rms_norm → matmul → gather_rows, with symbolic T (tokens) and R (sampled rows). */
function tinyLm(): Graph {
  const g = new GraphBuilder();
  const T = sym("T", 16), R = sym("R", 4);
  const ids = g.input("ids", [T], "i32");
  const rows = g.input("rows", [R], "i32");
  const h = g.name(embedding(g, ids, g.weight("embed", [4, 2], "bf16")), "embed");
  const n = g.name(rmsNorm(g, h, g.weight("norm", [2], "bf16"), { eps: 0 }), "final_norm");
  const logits = g.name(matmul(g, n, g.weight("head", [3, 2], "f8e4m3")), "lm_head");
  g.output("logits", g.name(gatherRows(g, logits, rows), "sampled_logits"));
  return g.build();
}

const WEIGHTS = new Map([
  ["embed", new Float32Array([1, 1, 3, 4, 0, 2, -1, 0])],
  ["norm", new Float32Array([1, 0.5])],
  ["head", new Float32Array([1, 0, 0, 1, 1, 1])],
]);

Deno.test("runGraph: end to end on reference, by hand", async () => {
  const graph = tinyLm();
  assertEquals(JSON.parse(JSON.stringify(graph)), graph);
  const backend = await referenceBackend.create();
  // Rows [3, 4], [0, 2], [-1, 0] normalise by 1/√12.5, 1/√2, 1/√0.5, then w = [1, 0.5]; head = [x, y, x + y].
  const { logits } = await runGraph(graph, backend, {
    weights: WEIGHTS,
    inputs: { ids: new Int32Array([1, 2, 3]), rows: new Int32Array([2, 0]) },
  });
  const a = 3 / Math.sqrt(12.5), b = 2 / Math.sqrt(12.5), c = -Math.SQRT2;
  assertClose(logits, [c, 0, c, a, b, a + b]);
  backend.dispose();
});

Deno.test("executor: symbols solved from input lengths; errors say what is wrong", async () => {
  const graph = tinyLm();
  assertEquals(solveVars(graph, { ids: new Int32Array(5), rows: new Int32Array(1) }, {}), { T: 5, R: 1 });
  const backend = await referenceBackend.create();
  await assertRejects(() => Executor.create(graph, backend, { weights: new Map() }), Error, "missing weights");
  const ex = await Executor.create(graph, backend, { weights: WEIGHTS });
  await assertRejects(() => ex.run({ inputs: { ids: new Int32Array([1]) } }), Error, "missing input rows");
  await assertRejects(
    () => ex.run({ inputs: { ids: new Int32Array([1]), rows: new Int32Array([0]) }, vars: { T: 2 } }),
    Error,
    "4 B given, 8 B expected",
  );
  await assertRejects(
    () => ex.run({ inputs: { ids: new Int32Array([9]), rows: new Int32Array([0]) } }),
    Error,
    "id 9",
  );
  // Runs are independent: a smaller step after a bigger one.
  const one = await ex.run({ inputs: { ids: new Int32Array([2]), rows: new Int32Array([0]) } });
  assertClose(one.logits, [0, Math.SQRT1_2, Math.SQRT1_2]);
  ex.dispose();
});

/** One MLA layer reading a persistent latent cache. */
function mlaGraph(form: "absorbed" | "naive"): Graph {
  const g = new GraphBuilder();
  const T = sym("T", 16), S = sym("S", 2);
  const batch = {
    cache: g.state("cache", [4, 4, 6], "f32"),
    seq: g.input("seq", [T], "i32"),
    pos: g.input("pos", [T], "i32"),
    blockTable: g.input("block_table", [S, 2], "i32"),
  };
  mlaCacheWrite(g, { ckv: g.input("ckv", [T, 4], "f32"), kpe: g.input("kpe", [T, 2], "f32"), ...batch });
  const q = g.input("q", [T, 2, 6], "f32");
  const out = mlaAttention(g, { q, wkvb: g.weight("wkvb", [2 * (4 + 3), 4], "bf16"), ...batch }, { scale: 0.4, form });
  g.output("out", out);
  return g.build();
}

Deno.test("executor: state survives across runs (prefill then decode ≡ one prefill)", async () => {
  const rand = mulberry32(1);
  const n = 6;
  const q = randomF32([n, 2, 6], rand), ckv = randomF32([n, 4], rand), kpe = randomF32([n, 2], rand);
  const weights = new Map([["wkvb", randomF32([14, 4], rand).data as Float32Array]]);
  const table = new Int32Array([2, 0]);
  const step = (from: number, to: number) => ({
    inputs: {
      q: q.data.subarray(from * 12, to * 12),
      ckv: ckv.data.subarray(from * 4, to * 4),
      kpe: kpe.data.subarray(from * 2, to * 2),
      seq: new Int32Array(to - from),
      pos: Int32Array.from({ length: to - from }, (_, i) => from + i),
      block_table: table,
    },
  });
  const backend = await referenceBackend.create();
  const full = await runGraph(mlaGraph("absorbed"), backend, { weights, ...step(0, n) });

  const ex = await Executor.create(mlaGraph("naive"), backend, { weights });
  await ex.run(step(0, 4));
  const d1 = await ex.run(step(4, 5));
  const d2 = await ex.run(step(5, 6));
  assertClose(d1.out, full.out.subarray(4 * 6, 5 * 6), 1e-5);
  assertClose(d2.out, full.out.subarray(5 * 6, 6 * 6), 1e-5);
  // Position 5 lives in block table[1] = 0, row 1; its kpe follows the 4 latent values.
  const cache = await ex.readState("cache") as Float32Array;
  assertClose(cache.subarray(1 * 6 + 4, 1 * 6 + 6), kpe.data.subarray(10, 12));
  ex.dispose();

  // runGraph carries state through caller-owned arrays.
  const state = { cache: new Float32Array(4 * 4 * 6) };
  await runGraph(mlaGraph("absorbed"), backend, { weights, state, ...step(0, 5) });
  const last = await runGraph(mlaGraph("absorbed"), backend, { weights, state, ...step(5, 6) });
  assertClose(last.out, full.out.subarray(5 * 6, 6 * 6), 1e-5);
  backend.dispose();
});
