import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { sym } from "../graph/ir.ts";
import { add } from "../ops/add.ts";
import { rmsNorm } from "../ops/rms_norm.ts";
import { assertClose } from "../tests/op_helpers.ts";
import { type Backend, OutOfMemoryError } from "./backend.ts";
import type { WeightDecl } from "../graph/ir.ts";
import { matmul } from "../ops/matmul.ts";
import { CheckpointError } from "../weights/errors.ts";
import { createNullBackend, type NullBackend } from "./backends/null.ts";
import { referenceBackend } from "./backends/reference.ts";
import { runGraph } from "./execute.ts";
import { PlanExecutor, Residency, type RunOptions, sharedArenaBytes } from "./plan_executor.ts";
import { schedule } from "./schedule.ts";
import { chain, impersonate, mlaLayer, residualLm, residualLmWeights, zeroWeight } from "../tests/schedule_helpers.ts";
import { memorySource } from "../weights/memory_source.ts";

function lmStep(rand: () => number, t: number, r: number): RunOptions {
  const ids = Int32Array.from({ length: t }, () => Math.floor(rand() * 16));
  const rows = Int32Array.from({ length: r }, () => Math.floor(rand() * t));
  return { inputs: { ids, rows } };
}

Deno.test("plan executor: a graph split across two backends ≡ runGraph on one, for every T", async () => {
  const rand = mulberry32(3);
  const graph = residualLm();
  const weights = residualLmWeights(rand);
  const ref = await referenceBackend.create();
  const gpu = impersonate(await referenceBackend.create(), "gpu", ["matmul"]);
  const plan = schedule(graph, [gpu, ref]);
  assertEquals(plan.segments.map((s) => s.backend), ["reference", "gpu", "reference", "gpu", "reference"]);
  assertEquals(plan.copies.length, 4);
  const ex = await PlanExecutor.create(graph, plan, [gpu, ref], { weights });
  for (const [t, r] of [[3, 2], [16, 4], [1, 1], [9, 3]]) {
    const step = lmStep(rand, t, r);
    const split = await ex.run(step);
    const whole = await runGraph(graph, ref, { weights, ...step });
    assertEquals(split.logits.length, r * 12);
    assertClose(split.logits, whole.logits, 0, `T=${t}`);
  }
  ex.dispose();
  gpu.dispose();
  ref.dispose();
});

Deno.test("plan executor: weights from a source per backend holding them, uploaded in its storage dtype", async () => {
  const graph = residualLm();
  const weights = residualLmWeights(mulberry32(4));
  const ref = await referenceBackend.create();
  const gpu = impersonate(await referenceBackend.create(), "gpu", ["rms_norm", "matmul", "add", "gather_rows"]);
  // embed lives on the gpu, which cannot run the embedding: the cpu side gets a replica.
  const plan = schedule(graph, [gpu, ref], { weightPlacement: (w) => w.name === "embed" ? "gpu" : undefined });
  const calls: string[] = [];
  const ex = await PlanExecutor.create(graph, plan, [gpu, ref], {
    weights: (w) => {
      calls.push(w.name);
      return memorySource({
        name: w.name,
        shape: [...w.shape as number[]],
        dtype: "f32",
        data: bytes(weights.get(w.name)!),
      }, w.dtype);
    },
  });
  // A fresh source per upload: embed is read twice (home and replica), nothing is kept for the second.
  assertEquals(calls.sort(), ["embed", "embed", "head", "norm1", "norm2", "wq"]);
  const step = lmStep(mulberry32(5), 5, 2);
  assertClose((await ex.run(step)).logits, (await runGraph(graph, ref, { weights, ...step })).logits, 0);
  ex.dispose();
  ref.dispose();
});

/** Inputs of `mlaLayer` for tokens [from, to) of one sequence. */
function mlaStep(
  data: { q: Float32Array; ckv: Float32Array; kpe: Float32Array },
  from: number,
  to: number,
  peek = false,
) {
  const inputs: Record<string, ArrayBufferView> = {
    q_in: data.q.subarray(from * 12, to * 12),
    ckv: data.ckv.subarray(from * 4, to * 4),
    kpe: data.kpe.subarray(from * 2, to * 2),
    seq: new Int32Array(to - from),
    pos: Int32Array.from({ length: to - from }, (_, i) => from + i),
    block_table: new Int32Array([2, 0]),
  };
  if (peek) inputs.zero = new Float32Array(96);
  return { inputs };
}

function mlaData(seed: number, n: number) {
  const rand = mulberry32(seed);
  const f = (k: number) => Float32Array.from({ length: k }, () => rand() * 2 - 1);
  return {
    data: { q: f(n * 12), ckv: f(n * 4), kpe: f(n * 2) },
    weights: new Map([["wq", f(144)], ["wkvb", f(56)]]),
  };
}

Deno.test("plan executor: state stays resident across runs; state copies see each in-place write", async () => {
  const { data, weights } = mlaData(6, 6);
  const ref = await referenceBackend.create();
  const full = await runGraph(mlaLayer(), ref, { weights, ...mlaStep(data, 0, 6) });

  const graph = mlaLayer({ peek: true });
  const gpu = impersonate(await referenceBackend.create(), "gpu", ["matmul", "reshape", "add"]);
  const plan = schedule(graph, [gpu, ref]);
  assertEquals(plan.state[0].backend, "reference");
  assertEquals(plan.copies.filter((c) => c.name === "cache").length, 2);
  const ex = await PlanExecutor.create(graph, plan, [gpu, ref], { weights });
  const prefill = await ex.run(mlaStep(data, 0, 4, true));
  assertClose(prefill.out, full.out.subarray(0, 4 * 6), 1e-5);
  assertEquals(prefill.before, new Float32Array(96)); // the cache was zero before the first write
  const cacheAfterPrefill = await ex.readState("cache");
  assertClose(prefill.after, cacheAfterPrefill, 0);
  const d1 = await ex.run(mlaStep(data, 4, 5, true));
  assertClose(d1.out, full.out.subarray(4 * 6, 5 * 6), 1e-5);
  assertClose(d1.before, cacheAfterPrefill, 0);
  assertClose(d1.after, await ex.readState("cache"), 0);
  // writeState restores a cache: rewinding to the prefill state makes the decode step repeat exactly.
  ex.writeState("cache", cacheAfterPrefill);
  assertClose((await ex.run(mlaStep(data, 4, 5, true))).out, d1.out, 0);
  ex.dispose();
  ref.dispose();
});

Deno.test("plan executor: prefill and decode buckets share weights and cache through a Residency", async () => {
  const { data, weights } = mlaData(8, 6);
  const ref = await referenceBackend.create();
  const full = await runGraph(mlaLayer(), ref, { weights, ...mlaStep(data, 0, 6) });
  const residency = new Residency();
  const prefillGraph = mlaLayer({ maxT: 16 }), decodeGraph = mlaLayer({ maxT: 1 });
  let loads = 0;
  const loader = (w: { name: string; shape: unknown }) => (
    loads++,
      memorySource(
        { name: w.name, shape: [...w.shape as number[]], dtype: "f32", data: bytes(weights.get(w.name)!) },
        "f32",
      )
  );
  const prefill = await PlanExecutor.create(prefillGraph, schedule(prefillGraph, [ref]), [ref], {
    weights: loader,
    residency,
  });
  const decode = await PlanExecutor.create(decodeGraph, schedule(decodeGraph, [ref]), [ref], {
    weights: loader,
    residency,
  });
  assertEquals(loads, 2); // wq and wkvb, uploaded once for both buckets
  await prefill.run(mlaStep(data, 0, 5));
  const last = await decode.run(mlaStep(data, 5, 6));
  assertClose(last.out, full.out.subarray(5 * 6), 1e-5);
  await assertRejects(() => decode.run(mlaStep(data, 0, 2)), Error, "T = 2 outside 0..1");
  prefill.dispose();
  decode.dispose();
  residency.dispose();
  ref.dispose();
});

Deno.test("plan executor: prepared once, allocated once; runs with any T only bind and run", async () => {
  const graph = residualLm();
  const gpu = createNullBackend({ name: "gpu", ops: ["matmul"] });
  const cpu = createNullBackend({ name: "cpu" });
  const plan = schedule(graph, [gpu, cpu]);
  const ex = await PlanExecutor.create(graph, plan, [gpu, cpu], { weights: zeroWeight });
  const count = (b: NullBackend, method: string) => b.calls.filter((c) => c.method === method).length;
  const prepares = [count(gpu, "prepare"), count(cpu, "prepare")];
  assertEquals(prepares, [2, 3]);
  const allocs = [count(gpu, "alloc"), count(cpu, "alloc")];
  const rand = mulberry32(2);
  const ts = [1, 7, 16, 2, 5, 1, 12, 3];
  for (const t of ts) await ex.run(lmStep(rand, t, 1));
  assertEquals([count(gpu, "prepare"), count(cpu, "prepare")], prepares);
  assertEquals([count(gpu, "alloc"), count(cpu, "alloc")], allocs);
  assertEquals(count(gpu, "run"), 2 * ts.length);
  const runs = cpu.calls.filter((c) => c.method === "run");
  assertEquals(runs.filter((_, i) => i % 3 === 0).map((c) => c.method === "run" && c.vars.T), ts);
  // Copies move only this step's rows: norm1 [T, 8] f32 is read from the cpu as 32·T bytes.
  const reads = cpu.calls.filter((c) => c.method === "read" && c.offset === plan.copies[0].src.offset);
  assertEquals(reads.map((c) => c.method === "read" && c.bytes), ts.map((t) => 32 * t));
  ex.dispose();
  assertEquals(count(gpu, "free"), count(gpu, "alloc"));
  assertEquals(count(cpu, "free"), count(cpu, "alloc"));
});

Deno.test("plan executor: `outputs` reads back only the outputs asked for; the rest stay on the backend", async () => {
  const g = new GraphBuilder();
  const x = g.input("x", [sym("T", 4), 8], "f32");
  const y = add(g, x, x);
  g.output("y", y);
  g.output("z", add(g, y, x));
  const graph = g.build();
  const cpu = createNullBackend({ name: "cpu" });
  const ex = await PlanExecutor.create(graph, schedule(graph, [cpu]), [cpu], { weights: new Map() });
  const reads = () => cpu.calls.filter((c) => c.method === "read").length;
  const inputs = { x: new Float32Array(3 * 8) };
  assertEquals(Object.keys(await ex.run({ inputs })).sort(), ["y", "z"]);
  assertEquals(reads(), 2);
  assertEquals(Object.keys(await ex.run({ inputs, outputs: ["z"] })), ["z"]);
  assertEquals(reads(), 3);
  await assertRejects(() => ex.run({ inputs, outputs: ["w"] }), Error, "no graph output w");
  ex.dispose();
  const ref = await referenceBackend.create();
  const out = await runGraph(graph, ref, {
    weights: new Map(),
    inputs: { x: new Float32Array(8).fill(1) },
    outputs: ["z"],
  });
  assertEquals(Array.from(out.z as Float32Array), new Array(8).fill(3));
  assertEquals(out.y, undefined);
  ref.dispose();
});

Deno.test("plan executor: errors say what is wrong", async () => {
  const graph = chain(2);
  const ref = await referenceBackend.create();
  const plan = schedule(graph, [ref]);
  const other: Backend = createNullBackend({ name: "other" });
  await assertRejects(
    () => PlanExecutor.create(graph, plan, [other], { weights: new Map() }),
    Error,
    "plan needs backends reference",
  );
  await assertRejects(
    () => PlanExecutor.create(graph, plan, [ref], { weights: new Map() }),
    Error,
    "missing weights: w",
  );
  await assertRejects(
    () => PlanExecutor.create(graph, plan, [ref], { weights: new Map([["w", new Float32Array(3)]]) }),
    Error,
    "weight w: 12 B given, 1024 B expected for [256] f32",
  );
  const ex = await PlanExecutor.create(graph, plan, [ref], {
    weights: new Map([["w", new Float32Array(256).fill(1)]]),
  });
  await assertRejects(() => ex.run({ inputs: {} }), Error, "missing input x");
  await assertRejects(
    () => ex.run({ inputs: { x: new Float32Array(256) }, vars: { T: 2 } }),
    Error,
    "1024 B given, 2048 B expected",
  );
  await assertRejects(() => ex.run({ inputs: { x: new Float32Array(9 * 256) } }), Error, "T = 9 outside 0..8");
  assertClose((await ex.run({ inputs: { x: new Float32Array(512).fill(2) } })).y, new Float32Array(512).fill(1), 1e-6);
  ex.dispose();
  ref.dispose();
});

Deno.test("plan executor: a copy between backends storing a dtype differently converts it (bf16 → f32)", async () => {
  const g = new GraphBuilder();
  const x = g.input("x", [sym("T", 4), 8], "bf16");
  const y = g.name(add(g, x, x), "y"); // bf16 on the gpu
  g.output("z", g.name(rmsNorm(g, y, g.weight("w", [8], "f32"), { eps: 1e-6 }), "z"));
  const graph = g.build();
  const gpu = createNullBackend({ name: "gpu", ops: ["add"] });
  const cpu = createNullBackend({ name: "cpu", caps: { dtypes: ["f32", "i32"], promote: { bf16: "f32" } } });
  const plan = schedule(graph, [gpu, cpu]);
  assertEquals(plan.copies.map((c) => [c.name, c.fromDType, c.toDType, c.bytes]), [["y", "bf16", "f32", 64]]);
  const ex = await PlanExecutor.create(graph, plan, [gpu, cpu], { weights: zeroWeight });
  const [gpuBefore, cpuBefore] = [gpu.calls.length, cpu.calls.length]; // after weight uploads
  await ex.run({ inputs: { x: new Uint16Array(3 * 8) } });
  const reads = gpu.calls.slice(gpuBefore).flatMap((c) => c.method === "read" ? [c.bytes] : []);
  const writes = cpu.calls.slice(cpuBefore).flatMap((c) => c.method === "write" ? [c.bytes] : []);
  assertEquals([reads, writes], [[3 * 8 * 2], [3 * 8 * 4]]);
  ex.dispose();
});

/** The bytes of a typed array. */
function bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

Deno.test("plan executor: a split weight is uploaded by parts and bound as row ranges; split arenas get a buffer each", async () => {
  // 128 KiB activations, two live at a time, under a 160 KiB binding limit: two arenas. A 64 × 32 Ki bf16 head
  // (4 MiB, 64 KiB a row): row ranges of two rows.
  const g = new GraphBuilder();
  let x = g.input("x", [1, 32768], "f32");
  for (let i = 0; i < 3; i++) x = g.name(add(g, x, x), `a${i}`);
  g.output("y", g.name(matmul(g, x, g.weight("head", [64, 32768], "bf16")), "y"));
  const graph = g.build();
  const gpu = createNullBackend({ name: "gpu", caps: { maxBindingBytes: 160 * 1024 } });
  const plan = schedule(graph, [gpu]);
  assertEquals(plan.memory.perBackend.gpu.arenas.length, 2);
  assertEquals(plan.weights[0].parts!.gpu.length, 32);
  const ex = await PlanExecutor.create(graph, plan, [gpu], { weights: zeroWeight });
  const up = gpu.calls.find((c) => c.method === "uploadWeight");
  assert(up?.method === "uploadWeight");
  assertEquals(up.parts.map((p) => [p[2], p[3]]), plan.weights[0].parts!.gpu.map((p) => [p.row0, p.rows]));
  const allocs = gpu.calls.filter((c) => c.method === "alloc").map((c) => c.method === "alloc" && c.bytes);
  assertEquals(allocs.slice(0, 2), plan.memory.perBackend.gpu.arenas); // one buffer per arena, first
  await ex.run({ inputs: { x: new Float32Array(32768) } });
  const run = gpu.calls.find((c) => c.method === "run");
  assert(run?.method === "run");
  const bound = run.bindings.find(([id]) => id === graph.weights[0].id)![1];
  assert("parts" in bound && bound.parts.length === 32, "the head is bound as its row ranges");
  const arenaBuffers = new Set(
    run.bindings.flatMap(([, v]) => "buffer" in v && v.buffer.bytes <= 160 * 1024 ? [v.buffer.id] : []),
  );
  assert(arenaBuffers.size >= 2, "activations bound in both arenas");
  ex.dispose();
  assertEquals(count(gpu, "free"), count(gpu, "alloc"));
});

Deno.test("plan executor: a failing weight source frees everything uploaded and names the tensor; OOM names it too", async () => {
  const graph = residualLm();
  const gpu = createNullBackend({ name: "gpu" });
  let n = 0;
  const failing = (d: WeightDecl) => {
    if (++n < 3) return zeroWeight(d);
    const source = zeroWeight(d);
    return {
      ...source,
      read: () =>
        Promise.reject(new CheckpointError({ kind: "truncated", message: `${d.name}: cut short`, file: "f" })),
    };
  };
  await assertRejects(
    () => PlanExecutor.create(graph, schedule(graph, [gpu]), [gpu], { weights: failing }),
    CheckpointError,
    "cut short",
  );
  assertEquals(count(gpu, "free"), count(gpu, "alloc"));
  // A device that runs out while allocating: the error is typed and names what was being placed.
  const small = createNullBackend({ name: "gpu", oomAfterBytes: 2000 });
  const e = await assertRejects(
    () => PlanExecutor.create(graph, schedule(graph, [small]), [small], { weights: zeroWeight }),
    OutOfMemoryError,
  );
  assert(/weight \w+: out of memory on gpu/.test(e.message), e.message);
  assertEquals(count(small, "free"), count(small, "alloc"));
});

function count(b: NullBackend, method: string): number {
  return b.calls.filter((c) => c.method === method).length;
}

Deno.test("plan executor: executors given one shared-arena key hold one set of arenas, sized for the largest", async () => {
  const graphs = [chain(2), residualLm()];
  const cpu = createNullBackend({ name: "cpu" });
  const plans = graphs.map((g) => schedule(g, [cpu]));
  const bytes = sharedArenaBytes(plans);
  assertEquals(bytes.cpu, [Math.max(...plans.map((p) => p.memory.perBackend.cpu.arenaBytes))]);
  const residency = new Residency(), sharedArenas = { key: "stages", bytes };
  const allocs = () => cpu.calls.filter((c) => c.method === "alloc").length;
  const first = await PlanExecutor.create(graphs[0], plans[0], [cpu], { weights: zeroWeight, residency, sharedArenas });
  // Weights come from the residency once loaded (`warm`): then an executor alone allocates only its arena more.
  const warm = await PlanExecutor.create(graphs[1], plans[1], [cpu], { weights: zeroWeight, residency });
  let before = allocs();
  const alone = await PlanExecutor.create(graphs[1], plans[1], [cpu], { weights: zeroWeight, residency });
  const own = allocs() - before;
  before = allocs();
  const second = await PlanExecutor.create(graphs[1], plans[1], [cpu], {
    weights: zeroWeight,
    residency,
    sharedArenas,
  });
  assertEquals(own - (allocs() - before), 1, "the second executor allocates no arena of its own");
  warm.dispose();
  alone.dispose();
  // Results stay right with the arena shared (reference backend).
  const ref = await referenceBackend.create();
  const rs = new Residency(), weights = residualLmWeights(mulberry32(8));
  const refPlans = graphs.map((g) => schedule(g, [ref]));
  const shared = { key: "stages", bytes: sharedArenaBytes(refPlans) };
  const a = await PlanExecutor.create(graphs[0], refPlans[0], [ref], {
    weights: zeroWeight,
    residency: rs,
    sharedArenas: shared,
  });
  const b = await PlanExecutor.create(graphs[1], refPlans[1], [ref], { weights, residency: rs, sharedArenas: shared });
  const step = lmStep(mulberry32(9), 6, 2);
  await a.run({ inputs: { x: new Float32Array(6 * 256).fill(1) } });
  assertClose((await b.run(step)).logits, (await runGraph(graphs[1], ref, { weights, ...step })).logits, 0);
  // Too small for a plan: an error, not an overflow.
  await assertRejects(
    () =>
      PlanExecutor.create(graphs[1], refPlans[1], [ref], {
        weights,
        sharedArenas: { key: "k", bytes: { reference: [8] } },
      }),
    Error,
    "smaller than the plan's",
  );
  for (const ex of [first, second, a, b]) ex.dispose();
  residency.dispose();
  rs.dispose();
  ref.dispose();
});
