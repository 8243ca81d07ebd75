import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { tensorTable } from "../graph/ir.ts";
import { add } from "../ops/add.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsNorm } from "../ops/rms_norm.ts";
import { gatherRows } from "../ops/gather_rows.ts";
import { writeRows } from "../ops/write_rows.ts";
import { createNullBackend } from "./backends/null.ts";
import { formatPlan, type Plan, schedule, ScheduleError } from "./schedule.ts";
import { chain, mlaLayer, residualLm } from "../tests/schedule_helpers.ts";

const ALL_BUT_GATHER = ["embedding", "rms_norm", "matmul", "add"];

/** Structural invariants every plan must satisfy, whatever the placement. */
function assertWellFormed(plan: Plan, nodeCount: number) {
  assertEquals(JSON.parse(JSON.stringify(plan)), plan, "plan is plain JSON");
  // Segments cover every node once, in order, and alternate backends (maximal runs).
  assertEquals(plan.segments.flatMap((s) => s.nodes).length, nodeCount);
  for (let i = 1; i < plan.segments.length; i++) assert(plan.segments[i].backend !== plan.segments[i - 1].backend);
  for (const s of plan.segments) {
    const bound = new Set(s.bindings.map((b) => b.tensor));
    for (const t of [...s.inputs, ...s.nodes]) assert(bound.has(t), `tensor ${t} unbound in a ${s.backend} segment`);
  }
  // Every copy feeds a later segment on its target backend, from a different backend.
  for (const c of plan.copies) {
    assert(c.from !== c.to);
    const seg = plan.segments[c.before];
    assertEquals(seg.backend, c.to);
    assert(seg.inputs.includes(c.tensor));
    assertEquals(seg.bindings.find((b) => b.tensor === c.tensor), { tensor: c.tensor, ...c.dst });
  }
}

Deno.test("schedule: one backend → one segment, no copies, no fallbacks", () => {
  const graph = residualLm();
  const plan = schedule(graph, [createNullBackend()]);
  assertWellFormed(plan, graph.nodes.length);
  assertEquals(plan.segments.length, 1);
  assertEquals(plan.segments[0].inputs.sort((a, b) => a - b), [0, 1, 2, 4, 6, 9, 11]);
  assertEquals(plan.segments[0].outputs, [13]);
  assertEquals(plan.copies, []);
  assertEquals(plan.fallbacks, []);
  assertEquals(plan.symbols, { T: 16, R: 4 });
  assertEquals(plan.outputs, [{ tensor: 13, name: "logits", backend: "null", in: "output" }]);
  assertEquals(plan.inputs.map((i) => i.backends), [["null"], ["null"]]);
});

Deno.test("schedule: an unsupported op falls back to the next backend, reported; strict names the node", () => {
  const graph = residualLm();
  const gpu = createNullBackend({ name: "gpu", ops: ALL_BUT_GATHER });
  const cpu = createNullBackend({ name: "cpu" });
  const plan = schedule(graph, [gpu, cpu]);
  assertWellFormed(plan, graph.nodes.length);
  assertEquals(plan.fallbacks, [{
    node: 13,
    name: "sampled_logits",
    op: "gather_rows",
    from: "gpu",
    to: "cpu",
    reason: "gpu does not support gather_rows(f32, i32)",
  }]);
  assertEquals(plan.segments.map((s) => [s.backend, s.nodes]), [["gpu", [3, 5, 7, 8, 10, 12]], ["cpu", [13]]]);
  // The logits cross once, just before the cpu segment; `rows` is uploaded straight to the cpu.
  assertEquals(plan.copies.map((c) => [c.name, c.from, c.to, c.before, c.bytes]), [["lm_head", "gpu", "cpu", 1, 768]]);
  assertEquals(plan.inputs.map((i) => [i.name, i.backends]), [["ids", ["gpu"]], ["rows", ["cpu"]]]);
  assertEquals(plan.segments[0].outputs, [12]);

  const e = assertThrows(() => schedule(graph, [gpu, cpu], { strict: true }), ScheduleError, "sampled_logits");
  assertEquals(e.nodes, [13]);
  assert(e.message.includes("gather_rows") && e.message.includes("gpu → cpu"));
  const none = assertThrows(() => schedule(graph, [gpu]), ScheduleError, "no backend (gpu) supports gather_rows");
  assertEquals(none.nodes, [13]);
});

Deno.test("schedule: weights go where they can be stored, and ops follow their weights", () => {
  const graph = residualLm();
  const table = tensorTable(graph);
  // The gpu holds no bf16: head lands on the cpu, and lm_head follows it (reported, with the reason).
  const gpu = createNullBackend({ name: "gpu", caps: { dtypes: ["f32", "i32"] } });
  const cpu = createNullBackend({ name: "cpu" });
  const plan = schedule(graph, [gpu, cpu]);
  assertWellFormed(plan, graph.nodes.length);
  const home = Object.fromEntries(plan.weights.map((w) => [w.name, w.backends]));
  assertEquals(home, { embed: ["gpu"], norm1: ["gpu"], wq: ["gpu"], norm2: ["gpu"], head: ["cpu"] });
  assertEquals(plan.fallbacks.map((f) => [f.name, f.to, f.reason]), [
    ["lm_head", "cpu", "its weight head is on cpu: gpu cannot store bf16"],
  ]);
  // gather_rows has no weights: it goes back to the first backend, so the logits cross twice.
  assertEquals(plan.segments.map((s) => s.backend), ["gpu", "cpu", "gpu"]);
  assertEquals(plan.copies.map((c) => [table[c.tensor].name, c.from, c.to]), [["norm2", "gpu", "cpu"], [
    "lm_head",
    "cpu",
    "gpu",
  ]]);

  // Pinned by weightPlacement: the op runs with its weight and that is no fallback.
  const pinned = schedule(graph, [gpu, cpu], { weightPlacement: (w) => w.name === "wq" ? "cpu" : undefined });
  assertEquals(pinned.fallbacks.map((f) => f.name), ["lm_head"]);
  assertEquals(pinned.segments.map((s) => [s.backend, s.nodes.length]), [
    ["gpu", 2],
    ["cpu", 1],
    ["gpu", 2],
    ["cpu", 1],
    ["gpu", 1],
  ]);
  assertThrows(() => schedule(graph, [gpu, cpu], { weightPlacement: () => "tpu" }), ScheduleError, "not one of");
  assertThrows(
    () => schedule(graph, [gpu, cpu], { weightPlacement: (w) => w.name === "head" ? "gpu" : undefined }),
    ScheduleError,
    "cannot store bf16",
  );
});

Deno.test("schedule: a weight used where it does not live is replicated there, not copied per step", () => {
  const graph = residualLm();
  // embed is pinned to the gpu, which cannot gather rows from it: the embedding falls back and reads a replica.
  const gpu = createNullBackend({ name: "gpu", ops: ["rms_norm", "matmul", "add", "gather_rows"] });
  const cpu = createNullBackend({ name: "cpu" });
  const plan = schedule(graph, [gpu, cpu], { weightPlacement: (w) => w.name === "embed" ? "gpu" : undefined });
  assertWellFormed(plan, graph.nodes.length);
  assertEquals(plan.weights.find((w) => w.name === "embed")!.backends, ["gpu", "cpu"]);
  assertEquals(plan.fallbacks.map((f) => [f.name, f.from, f.to]), [["embed", "gpu", "cpu"]]);
  assert(plan.copies.every((c) => c.tensor !== 2)); // the weight itself never crosses
  assertEquals(plan.memory.perBackend.cpu.weightBytes, 512);
  assertEquals(plan.memory.perBackend.gpu.weightBytes, 512 + 256 * 4); // embed, then norms, wq and head (aligned)
});

Deno.test("schedule: a tensor read by several segments on another backend is copied once", () => {
  const graph = residualLm();
  // gpu only runs matmuls: embed → norm1 on cpu, proj on gpu, residual/norm2 on cpu, lm_head on gpu, gather on cpu.
  const gpu = createNullBackend({ name: "gpu", ops: ["matmul"] });
  const cpu = createNullBackend({ name: "cpu" });
  const plan = schedule(graph, [gpu, cpu]);
  assertWellFormed(plan, graph.nodes.length);
  assertEquals(plan.segments.map((s) => s.backend), ["cpu", "gpu", "cpu", "gpu", "cpu"]);
  assertEquals(plan.copies.map((c) => [c.name, c.before]), [["norm1", 1], ["proj", 2], ["norm2", 3], ["lm_head", 4]]);
  // `embed` is produced in segment 0 and read in segment 2, both on the cpu: it stays in the arena, no copy.
  const a = plan.memory.perBackend.cpu.allocations.find((x) => x.tensor === 3)!;
  assert(a.last > plan.memory.perBackend.cpu.allocations.find((x) => x.tensor === 5)!.last);

  // n0 is read by two gpu segments with a cpu one between: it crosses once and its copy stays live.
  const g = new GraphBuilder();
  const w = g.weight("w", [8], "f32");
  const n0 = g.name(rmsNorm(g, g.input("a", [2, 8], "f32"), w, { eps: 1e-6 }), "n0");
  const m1 = g.name(matmul(g, n0, g.weight("m", [8, 8], "f32")), "m1");
  const n1 = g.name(rmsNorm(g, m1, w, { eps: 1e-6 }), "n1");
  g.output("s", g.name(add(g, n1, n0), "s"));
  const twice = schedule(g.build(), [createNullBackend({ name: "gpu", ops: ["matmul", "add"] }), cpu]);
  assertEquals(twice.segments.map((s) => s.backend), ["cpu", "gpu", "cpu", "gpu"]);
  assertEquals(twice.copies.map((c) => [c.name, c.to, c.before]), [["n0", "gpu", 1], ["m1", "cpu", 2], [
    "n1",
    "gpu",
    3,
  ]]);
  const copy = twice.memory.perBackend.gpu.allocations.find((a) => a.tensor === n0.id)!;
  assertEquals(twice.segments[3].bindings.find((b) => b.tensor === n0.id)!.offset, copy.offset);
  assertEquals(copy.last, twice.steps - 1);
});

Deno.test("schedule: state lives with the op writing it; copies of state come after each write", () => {
  const graph = mlaLayer();
  const gpu = createNullBackend({ name: "gpu", ops: ["matmul", "reshape"] });
  const cpu = createNullBackend({ name: "cpu" });
  const plan = schedule(graph, [gpu, cpu]);
  assertWellFormed(plan, graph.nodes.length);
  const cache = graph.inputs.find((i) => i.name === "cache")!.id;
  assertEquals(plan.state, [{ tensor: cache, name: "cache", backend: "cpu" }]);
  assertEquals(plan.memory.perBackend.cpu.stateBytes, 512); // 384 B, aligned to 256
  assertEquals(plan.memory.perBackend.gpu.stateBytes, 0);
  assertEquals(plan.segments[1].bindings.find((b) => b.tensor === cache), { tensor: cache, in: "state", offset: 0 });

  // Read on the gpu before and after the cpu writes it: two copies, the second after the write.
  const peek = mlaLayer({ peek: true });
  const table = tensorTable(peek);
  const p2 = schedule(peek, [createNullBackend({ name: "gpu", ops: ["matmul", "reshape", "add"] }), cpu]);
  assertWellFormed(p2, peek.nodes.length);
  assertEquals(p2.segments.map((s) => [s.backend, s.nodes.map((n) => table[n].name)]), [
    ["gpu", ["peek_before", "q_proj", "q"]],
    ["cpu", ["cache_write", "attn"]],
    ["gpu", ["peek_after"]],
  ]);
  assertEquals(p2.copies.map((c) => [c.name, c.from, c.to, c.before, c.src.in]), [
    ["cache", "cpu", "gpu", 0, "state"],
    ["q", "gpu", "cpu", 1, "arena"],
    ["cache", "cpu", "gpu", 2, "state"],
  ]);
});

Deno.test("schedule: memory limits move weights to the next backend and bound the whole plan", () => {
  const g = new GraphBuilder();
  const h = g.name(matmul(g, g.input("x", [1, 64], "f32"), g.weight("w1", [64, 64], "f32")), "h");
  g.output("y", g.name(matmul(g, h, g.weight("w2", [64, 64], "f32")), "y"));
  const graph = g.build();
  const cpu = createNullBackend({ name: "cpu" });
  // Room for one 16 KiB weight and the small activations: w2 spills to the cpu, and y follows it.
  const gpu = createNullBackend({ name: "gpu", caps: { memoryBytes: 20_000, alignment: 16 } });
  const plan = schedule(graph, [gpu, cpu]);
  assertEquals(plan.weights.map((w) => [w.name, w.backends]), [["w1", ["gpu"]], ["w2", ["cpu"]]]);
  assertEquals(plan.fallbacks.map((f) => [f.name, f.reason]), [[
    "y",
    "its weight w2 is on cpu: gpu has no room left for it",
  ]]);
  const m = plan.memory.perBackend.gpu;
  assertEquals([m.weightBytes, m.arenaBytes, m.ioBytes], [16384, 256, 256]);
  // The weights fit but not the rest: the plan is refused before anything is allocated.
  const tight = createNullBackend({ name: "gpu", caps: { memoryBytes: 16_500, alignment: 16 } });
  assertThrows(() => schedule(graph, [tight, cpu]), ScheduleError, "plan needs 16896 B on gpu");
});

Deno.test("schedule: errors for bad backend lists", () => {
  const graph = chain(2);
  assertThrows(() => schedule(graph, []), ScheduleError, "no backends");
  assertThrows(() => schedule(graph, [createNullBackend(), createNullBackend()]), ScheduleError, "given twice");
});

Deno.test("formatPlan: segments, copies, fallbacks, weights and memory, by name", () => {
  const graph = residualLm();
  const plan = schedule(graph, [createNullBackend({ name: "gpu", ops: ALL_BUT_GATHER }), createNullBackend()]);
  const text = formatPlan(plan, graph);
  assert(text.startsWith("plan for gpu, null (bucket T≤16, R≤4): 2 segments, 1 copy, 1 fallback"), text);
  assert(text.includes("  #1 null 1 node     sampled_logits (#13)"), text);
  assert(text.includes("  before #1: lm_head (#12) gpu → null, 768 B"), text);
  assert(text.includes(`  gather_rows "sampled_logits" (#13) gpu → null: gpu does not support`), text);
  assert(text.includes("weights: gpu 5, null 0"), text);
  assert(/\n {2}gpu +1\.5 KiB/.test(text), text);
  assert(formatPlan(plan).includes("before #1: #12 gpu → null"));
});

Deno.test("schedule: a binding limit splits the arena into several buffers, none over the limit", () => {
  // Eight [1, 32 Ki] f32 doublings in a row (128 KiB each): two live at a time, so one arena of 256 KiB.
  const g = new GraphBuilder();
  let x = g.input("x", [1, 32768], "f32");
  for (let i = 0; i < 8; i++) x = g.name(add(g, x, x), `add${i}`);
  g.output("y", add(g, x, x));
  const graph = g.build();
  const whole = schedule(graph, [createNullBackend({ name: "gpu" })]).memory.perBackend.gpu;
  assertEquals(whole.arenas, [262144]);
  // With 1 MiB bindings nothing changes; with 160 KiB, each arena holds one 128 KiB tensor at a time.
  const mib = schedule(graph, [createNullBackend({ name: "gpu", caps: { maxBindingBytes: 2 ** 20 } })]);
  assertEquals(mib.memory.perBackend.gpu.arenas, [262144]);
  const small = createNullBackend({ name: "gpu", caps: { maxBindingBytes: 160 * 1024 } });
  const plan = schedule(graph, [small]);
  assertWellFormed(plan, graph.nodes.length);
  const m = plan.memory.perBackend.gpu;
  assertEquals(m.arenas, [131072, 131072]);
  assertEquals(m.arenaBytes, 262144);
  // Tensors live at the same step never share bytes, in whichever arena.
  for (const a of m.allocations) {
    for (const b of m.allocations) {
      if (a === b || a.arena !== b.arena || a.last < b.first || b.last < a.first) continue;
      assert(a.offset + a.bytes <= b.offset || b.offset + b.bytes <= a.offset, `${a.tensor} and ${b.tensor} overlap`);
    }
  }
  const bindings = plan.segments.flatMap((s) => s.bindings.filter((b) => b.in === "arena"));
  assertEquals(new Set(bindings.map((b) => b.arena)), new Set([0, 1]));
  // A tensor larger than a binding cannot be planned.
  const tiny = createNullBackend({ name: "gpu", caps: { maxBindingBytes: 64 * 1024 } });
  assertThrows(() => schedule(graph, [tiny]), ScheduleError, "larger than");
});

Deno.test("schedule: a weight over the binding limit is split into row ranges that each fit", () => {
  const g = new GraphBuilder();
  // A [1000, 256] bf16 head: 500 KiB, under a 128 KiB binding limit (aligned to 256 B).
  g.output("y", matmul(g, g.input("x", [1, 256], "f32"), g.weight("head", [1000, 256], "bf16")));
  const graph = g.build();
  const gpu = createNullBackend({ name: "gpu", caps: { maxBindingBytes: 128 * 1024 } });
  const plan = schedule(graph, [gpu]);
  const parts = plan.weights[0].parts!.gpu;
  assertEquals(parts.map((p) => [p.row0, p.rows]), [[0, 256], [256, 256], [512, 256], [768, 232]]);
  for (const p of parts) assert(p.bytes <= 128 * 1024);
  assertEquals(plan.memory.perBackend.gpu.weightBytes, parts.reduce((n, p) => n + p.bytes, 0));
  // One row larger than a binding cannot be split.
  const narrow = createNullBackend({ name: "gpu", caps: { maxBindingBytes: 256 } });
  assertThrows(() => schedule(graph, [narrow]), ScheduleError, "one row of it");
});

Deno.test("schedule: instances of one backend fill in order and keep each layer's ops together", () => {
  const g = new GraphBuilder();
  let h = g.input("x", [1, 64], "f32");
  for (let l = 0; l < 4; l++) {
    g.layer = l;
    const n = g.name(rmsNorm(g, h, g.weight(`l${l}.norm`, [64], "f32"), { eps: 1e-6 }), `l${l}.norm`);
    h = g.name(add(g, h, g.name(matmul(g, n, g.weight(`l${l}.w`, [64, 64], "f32")), `l${l}.mm`)), `l${l}.res`);
  }
  g.layer = undefined;
  g.output("y", h);
  const graph = g.build();
  // Room for two layers and a third's norm each (16.25 KiB per layer) besides a 1 KiB reserve: layer 2 still
  // starts on the second instance, whole.
  const inst = (i: number) => createNullBackend({ name: `cpu:${i}`, caps: { memoryBytes: 36_000, alignment: 16 } });
  const plan = schedule(graph, [inst(0), inst(1)], { reserveBytes: 1024 });
  assertWellFormed(plan, graph.nodes.length);
  assertEquals(plan.weights.map((w) => w.backends[0]), [
    "cpu:0",
    "cpu:0",
    "cpu:0",
    "cpu:0",
    "cpu:1",
    "cpu:1",
    "cpu:1",
    "cpu:1",
  ]);
  // Residual adds follow their producer: two segments, one copy of the residual stream, no fallback reported.
  assertEquals(plan.segments.map((s) => s.backend), ["cpu:0", "cpu:1"]);
  assertEquals(plan.copies.map((c) => [c.name, c.from, c.to]), [["l1.res", "cpu:0", "cpu:1"]]);
  assertEquals(plan.fallbacks, []);
  // Two backends of different kinds: weightless ops stay on the first, each fallback and copy is reported.
  const gpu = createNullBackend({ name: "gpu", ops: ["matmul", "add"] });
  const mixed = schedule(graph, [gpu, createNullBackend({ name: "cpu" })]);
  assertEquals(mixed.fallbacks.map((f) => [f.op, f.from, f.to]), new Array(4).fill(["rms_norm", "gpu", "cpu"]));
  // Each norm to the gpu (4), each residual but the last back to the cpu for the next norm (3); x is an input,
  // uploaded to both.
  assertEquals(mixed.copies.length, 7);
});

Deno.test("schedule: a backend's activation dtype sizes its arena and its copies convert to and from it", () => {
  const graph = residualLm();
  const half = createNullBackend({ name: "gpu", ops: ["rms_norm", "matmul", "add"], caps: { activationDType: "f16" } });
  const plan = schedule(graph, [half, createNullBackend({ name: "cpu" })]);
  assertEquals(plan.segments.map((s) => [s.backend, s.activationDType]).slice(0, 2), [["cpu", "f32"], ["gpu", "f16"]]);
  // The gpu's node results take 2 B per value (T ≤ 16: the projection [16, 8] is 256 B, not 512).
  const proj = plan.memory.perBackend.gpu.allocations.find((a) => tensorTable(graph)[a.tensor].name === "proj")!;
  assertEquals(proj.bytes, 16 * 8 * 2);
  // The embedding comes over as f32 → f16; the last norm's result goes back f16 → f32.
  const copies = plan.copies.map((c) => [c.name, c.fromDType, c.toDType]);
  assert(copies.some(([n, f, t]) => n === "embed" && f === "f32" && t === "f16"), JSON.stringify(copies));
  assert(copies.some(([, f, t]) => f === "f16" && t === "f32"), JSON.stringify(copies));
});

Deno.test("schedule: a state another plan placed (stateHomes) stays there, with the weight-less ops touching it", () => {
  const build = () => {
    const g = new GraphBuilder();
    const store = g.state("store", [8, 4], "f32"), rows = g.input("rows", [2], "i32");
    const x = rmsNorm(g, g.input("x", [2, 4], "f32"), g.weight("w", [4], "f32"), { eps: 1e-6, name: "x_norm" });
    const read = gatherRows(g, store, rows, { name: "read" });
    g.output("y", add(g, read, writeRows(g, store, rows, x, { name: "write" }), { name: "y" }));
    return g.build();
  };
  const graph = build(), table = tensorTable(graph);
  const a = createNullBackend({ name: "a" }), b = createNullBackend({ name: "b" });
  const byName = (p: Plan) => p.segments.map((s) => [s.backend, s.nodes.map((n) => table[n].name)]);
  // By itself the state goes where its writer runs: with the first backend.
  assertEquals(schedule(graph, [a, b]).state.map((s) => s.backend), ["a"]);
  const plan = schedule(graph, [a, b], { stateHomes: { store: "b" } });
  assertWellFormed(plan, graph.nodes.length);
  assertEquals(plan.state.map((s) => s.backend), ["b"]);
  assertEquals(byName(plan), [["a", ["x_norm"]], ["b", ["read", "write"]], ["a", ["y"]]]);
  // A writer that cannot run there is an error rather than a second buffer.
  const noWrites = createNullBackend({ name: "b", ops: ["gather_rows"] });
  assertThrows(
    () => schedule(graph, [a, noWrites], { stateHomes: { store: "b" } }),
    ScheduleError,
    "state store lives on b (another plan shares it) but is written in place on a",
  );
});
