/**
 * Prefill matmul GFLOPS: our WASM kernel against onnxruntime-node's MatMul on the same shapes, in one run; also
 * the WASM kernel on the same weights quantised to q8 (int8 products where the host allows, see
 * kernels/wasm/gemm_q8.c; f32 panels elsewhere), in multiply-adds × 2 per second like the others.
 *
 * ```
 * ONNXRUNTIME_NODE_INSTALL=skip deno task bench:matmul [--threads 2] [--json]
 * ```
 *
 * The ONNX model (one MatMul with the weight as an initializer) is encoded here by hand: a few protobuf fields.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DT, q8Bytes, WasmKernels } from "../runtime/backends/wasm/module.ts";
import { ThreadPool } from "../runtime/backends/wasm/threads.ts";

const { values } = parseArgs({ options: { threads: { type: "string" }, json: { type: "boolean", default: false } } });
const threads = values.threads ? Number(values.threads) : navigator.hardwareConcurrency;
// ms4-mini prefill shapes (M = 512 tokens): q_a / attention out, a SwiGLU gate‖up, a down projection.
const SHAPES: [number, number, number][] = [[512, 1024, 1024], [512, 1024, 2048], [512, 2048, 1024]];

// --- minimal protobuf writer (varints, length-delimited fields) ---
function varint(n: number | bigint): number[] {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const int = (field: number, n: number) => [...varint(field << 3), ...varint(n)];
const bytes = (
  field: number,
  data: ArrayLike<number>,
) => [...varint((field << 3) | 2), ...varint(data.length), ...Array.from(data)];
const str = (field: number, s: string) => bytes(field, new TextEncoder().encode(s));
const msg = (field: number, body: number[]) => bytes(field, body);

/** `Y[M,N] = X[M,K] · W[K,N]` with W an initializer, float32. */
function matmulModel(m: number, k: number, n: number, w: Float32Array): Uint8Array {
  const dim = (d: number) => msg(1, int(1, d));
  const valueInfo = (field: number, name: string, shape: number[]) =>
    msg(field, [...str(1, name), ...msg(2, msg(1, [...int(1, 1), ...msg(2, shape.flatMap(dim))]))]);
  const node = msg(1, [...str(1, "X"), ...str(1, "W"), ...str(2, "Y"), ...str(3, "mm"), ...str(4, "MatMul")]);
  const init = msg(5, [
    ...int(1, k),
    ...int(1, n),
    ...int(2, 1),
    ...str(8, "W"),
    ...bytes(9, new Uint8Array(w.buffer)),
  ]);
  const graph = [...node, ...str(2, "g"), ...init, ...valueInfo(11, "X", [m, k]), ...valueInfo(12, "Y", [m, n])];
  return new Uint8Array([...int(1, 8), ...msg(8, [...str(1, ""), ...int(2, 17)]), ...msg(7, graph)]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const random = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);

const k = await WasmKernels.load();
const pool = await ThreadPool.create(k, threads);
const ort = await import("onnxruntime-node");
const int8 = k.exports.q8_prefill_int8(1) === 1;
const rows: { shape: string; wasm: number; wasmQ8: number; onnx: number }[] = [];
try {
  for (const [M, K, N] of SHAPES) {
    const flops = 2 * M * K * N;
    const x = random(M * K), wNK = random(N * K);
    // Our layout is W[N, K] (nn.Linear); ONNX MatMul takes W[K, N].
    const wKN = new Float32Array(K * N);
    for (let r = 0; r < N; r++) for (let c = 0; c < K; c++) wKN[c * N + r] = wNK[r * K + c];
    const [px, pw, py] = [k.alloc(4 * M * K), k.alloc(4 * N * K), k.alloc(4 * M * N)];
    k.f32(px, M * K).set(x);
    k.f32(pw, N * K).set(wNK);
    const wasmTimes: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      pool.parallelFor("matmul", [px, pw, DT.f32, 1, 0, py, M, N, K], N, { align: 8 });
      wasmTimes.push((performance.now() - t) / 1000);
    }
    const wasmOut = k.f32(py, M * N).slice();
    // The same weights in q8 (quantised by the kernels' own quantize_q8), same activations.
    const q = q8Bytes(N, K), pq = k.alloc(q.scalesOffset + q.scales);
    k.exports.quantize_q8(pw, pq, pq + q.scalesOffset, K, 0, N);
    const q8Times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      pool.parallelFor("matmul", [px, pq, DT.q8, 1, pq + q.scalesOffset, py, M, N, K], N, { align: 8 });
      q8Times.push((performance.now() - t) / 1000);
    }
    const q8Out = k.f32(py, M * N).slice();
    for (const p of [px, pw, py, pq]) k.free(p);

    const session = await ort.InferenceSession.create(matmulModel(M, K, N, wKN), {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionProviders: ["cpu"],
    });
    const feeds = { X: new ort.Tensor("float32", x, [M, K]) };
    const onnxTimes: number[] = [];
    let onnxOut: Float32Array | null = null;
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      const out = await session.run(feeds);
      onnxTimes.push((performance.now() - t) / 1000);
      onnxOut = out.Y.data as Float32Array;
    }
    await session.release();
    // Same math, so the outputs must agree: a wrong shape or transposition would show here.
    let err = 0, norm = 0;
    for (let i = 0; i < M * N; i++) [err, norm] = [err + (wasmOut[i] - onnxOut![i]) ** 2, norm + onnxOut![i] ** 2];
    if (Math.sqrt(err / norm) > 1e-4) throw new Error(`outputs differ at ${M}×${K}×${N}: ${Math.sqrt(err / norm)}`);
    [err, norm] = [0, 0];
    for (let i = 0; i < M * N; i++) [err, norm] = [err + (q8Out[i] - onnxOut![i]) ** 2, norm + onnxOut![i] ** 2];
    if (Math.sqrt(err / norm) > 2e-2) throw new Error(`q8 output off at ${M}×${K}×${N}: ${Math.sqrt(err / norm)}`);
    rows.push({
      shape: `${M}×${K}×${N}`,
      wasm: flops / median(wasmTimes) / 1e9,
      wasmQ8: flops / median(q8Times) / 1e9,
      onnx: flops / median(onnxTimes) / 1e9,
    });
  }
} finally {
  pool.dispose();
}

if (values.json) console.log(JSON.stringify({ threads, int8, rows }));
else {
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(
    `| M×K×N | wasm f32 GFLOPS | onnxruntime f32 GFLOPS | ratio | wasm q8 (${int8 ? "int8" : "f32 panels"}) |`,
  );
  console.log(`|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(`| ${r.shape} | ${f(r.wasm)} | ${f(r.onnx)} | ${f(r.wasm / r.onnx, 2)} | ${f(r.wasmQ8)} |`);
  }
  console.log(`\n${threads} threads, medians of 7 runs each.`);
}
