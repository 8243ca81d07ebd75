/**
 * `moe_experts` alone on the `webgpu` backend: milliseconds per run (routing, experts, combine, and the read-back of
 * the output) at demo's and ms4-mini's expert shapes, for a few token counts. Medians over repeated runs, after a
 * warm-up run (pipelines, bind groups and the bucket's buffers are made on the first). Checks the output against the
 * reference once per shape, and counts the expert weight reads of the run's routing: one per (token, slot) pair when
 * experts run per pair, one per chunk of an expert's pairs when grouped (kernels/wgsl/moe.ts `moeChunk`). A software
 * GPU (lavapipe) computes on the CPU, where the arithmetic, the same either way, dominates; the reads are what a GPU
 * saves.
 *
 *   XDG_RUNTIME_DIR=/tmp deno run -A bench/webgpu_moe.ts [--tokens 1,8,64] [--dtype bf16] [--runs 5] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { GraphBuilder } from "../graph/builder.ts";
import type { DType } from "../graph/dtype.ts";
import { sym } from "../graph/ir.ts";
import * as ops from "../ops/mod.ts";
import type { Backend } from "../runtime/backend.ts";
import { referenceBackend } from "../runtime/backends/reference.ts";
import { webgpuBackend } from "../runtime/backends/webgpu/backend.ts";
import { PlanExecutor } from "../runtime/plan_executor.ts";
import { moeChunk } from "../kernels/wgsl/moe.ts";
import { schedule } from "../runtime/schedule.ts";
import { f32ToBytes } from "../weights/codecs.ts";
import { convertWeight } from "../weights/convert.ts";
import type { CanonicalWeight } from "../weights/load.ts";
import { memorySource } from "../weights/memory_source.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    tokens: { type: "string", default: "1,8,64" },
    dtype: { type: "string", default: "bf16" },
    runs: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
  },
});

/** Expert shapes: hidden D, experts E, top-k K, expert width F. */
const SHAPES = [
  { model: "demo", D: 256, E: 16, K: 4, F: 128 },
  { model: "ms4-mini", D: 1024, E: 32, K: 4, F: 512 },
];

let seed = 1;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;

async function executor(backend: Backend, s: (typeof SHAPES)[number], maxT: number, dtype: DType) {
  const g = new GraphBuilder(), T = sym("T", maxT);
  const x = g.input("x", [T, s.D], "f32"), logits = g.input("logits", [T, s.E], "f32");
  const ids = ops.moeTopK(g, logits, { topK: s.K }), weights = ops.moeGate(g, logits, ids);
  const gateUp = g.weight("gate_up", [s.E, 2 * s.F, s.D], dtype), down = g.weight("down", [s.E, s.D, s.F], dtype);
  g.output("y", ops.moeExperts(g, x, ids, weights, gateUp, down));
  g.output("ids", ids);
  const graph = g.build();
  const source = (name: string, shape: number[], scale: number) => {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => rand() * scale);
    const w: CanonicalWeight = { name, shape, dtype: "f32", data: f32ToBytes(values, "f32") };
    return convertWeight(w, dtype);
  };
  const ws = new Map([
    ["gate_up", source("gate_up", [s.E, 2 * s.F, s.D], 1 / Math.sqrt(s.D))],
    ["down", source("down", [s.E, s.D, s.F], 1 / Math.sqrt(s.F))],
  ]);
  const plan = schedule(graph, [backend], { strict: true });
  return await PlanExecutor.create(graph, plan, [backend], {
    weights: (w) => memorySource(ws.get(w.name)!, w.dtype),
  });
}

const dtype = flags.dtype as DType, runs = Number(flags.runs);
const gpu = await webgpuBackend.create(), ref = await referenceBackend.create();
const rows: { model: string; dtype: string; tokens: number; ms: number; err: number; reads: [number, number] }[] = [];
for (const s of SHAPES) {
  for (const T of flags.tokens!.split(",").map(Number)) {
    seed = 1;
    const ex = await executor(gpu, s, T, dtype);
    seed = 1;
    const check = await executor(ref, s, T, dtype);
    const inputs = {
      x: Float32Array.from({ length: T * s.D }, rand),
      logits: Float32Array.from({ length: T * s.E }, () => 3 * rand()),
    };
    const first = await ex.run({ inputs }); // warm-up
    const y = first.y as Float32Array, ids = first.ids as Int32Array;
    const counts = new Map<number, number>();
    for (const e of ids) counts.set(e, (counts.get(e) ?? 0) + 1);
    const chunk = moeChunk(T * s.K, s.E);
    const grouped = [...counts.values()].reduce((n, c) => n + Math.ceil(c / chunk), 0);
    const want = (await check.run({ inputs })).y as Float32Array;
    let diff = 0, max = 0;
    for (let i = 0; i < y.length; i++) {
      diff = Math.max(diff, Math.abs(y[i] - want[i])), max = Math.max(max, Math.abs(want[i]));
    }
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      await ex.run({ inputs });
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    rows.push({
      model: s.model,
      dtype,
      tokens: T,
      ms: times[runs >> 1],
      err: diff / max,
      reads: [ids.length, grouped],
    });
    ex.dispose();
    check.dispose();
  }
}
gpu.dispose();
ref.dispose();
if (flags.json) console.log(JSON.stringify(rows));
else {
  console.log("| shape | dtype | tokens | ms / run | normalised error | expert weight reads (per pair → grouped) |");
  console.log("| ----- | ----- | ------ | -------- | ---------------- | ---------------------------------------- |");
  for (const r of rows) {
    const reads = `${r.reads[0]} → ${r.reads[1]}`;
    console.log(
      `| ${r.model} | ${r.dtype} | ${r.tokens} | ${r.ms.toFixed(2)} | ${r.err.toExponential(1)} | ${reads} |`,
    );
  }
}
