/**
 * `moe_experts` on onnx as gathered per-expert MatMuls: the tokens routed to each expert are gathered into rows,
 * one session (the expert MLP: gate ‖ up, SwiGLU, down, with the expert's weights fed as views of its slice of the
 * stacked tensors) runs on them, and the rows come back scaled by their routing weights and summed. Grouping reads
 * the routes from host memory (they are this backend's buffers), so only the selected experts are computed, in
 * one GEMM each rather than one per token; a graph of gathered weights would copy a `[2F, D]` matrix per token.
 *
 * @module
 */

import type { ModelDef, NodeDef, ValueInfo } from "./proto.ts";
import { Q8_BLOCK } from "../../../weights/codecs.ts";
import type { OrtModule, OrtSession, OrtTensor } from "./ort.ts";

/** How one stacked expert weight is stored here. */
export type ExpertDType = "f32" | "q8";

/** Shapes and dtypes of one `moe_experts` node. */
export type MoeShape = { d: number; f: number; experts: number; k: number; gateUp: ExpertDType; down: ExpertDType };

/** The expert MLP on `n` gathered rows: `x [n, D]` → `y [n, D]`, weights as inputs (`gu`, `dn`, or their q8 parts). */
export function expertModel(s: MoeShape): ModelDef {
  const nodes: NodeDef[] = [];
  const inputs: ValueInfo[] = [{ name: "x", elemType: "float32", dims: ["n", s.d] }];
  const linear = (x: string, w: string, n: number, k: number, out: string, dt: ExpertDType) => {
    if (dt === "q8") {
      inputs.push({ name: `${w}_q`, elemType: "uint8", dims: [n, k / Q8_BLOCK, Q8_BLOCK] });
      inputs.push({ name: `${w}_s`, elemType: "float32", dims: [n * (k / Q8_BLOCK)] });
      nodes.push({
        op: "MatMulNBits",
        domain: "com.microsoft",
        inputs: [x, `${w}_q`, `${w}_s`],
        outputs: [out],
        attrs: { K: { int: k }, N: { int: n }, bits: { int: 8 }, block_size: { int: Q8_BLOCK } },
      });
    } else {
      inputs.push({ name: w, elemType: "float32", dims: [n, k] });
      nodes.push({ op: "Gemm", inputs: [x, w], outputs: [out], attrs: { transB: { int: 1 } } });
    }
  };
  linear("x", "gu", 2 * s.f, s.d, "h", s.gateUp);
  nodes.push({
    op: "Split",
    inputs: ["h"],
    outputs: ["g", "u"],
    attrs: { axis: { int: -1 }, num_outputs: { int: 2 } },
  });
  nodes.push({ op: "Sigmoid", inputs: ["g"], outputs: ["sg"] });
  nodes.push({ op: "Mul", inputs: ["g", "sg"], outputs: ["gs"] });
  nodes.push({ op: "Mul", inputs: ["gs", "u"], outputs: ["a"] });
  linear("a", "dn", s.d, s.f, "y", s.down);
  return {
    opsets: [{ domain: "", version: 18 }, { domain: "com.microsoft", version: 1 }],
    graph: {
      name: `expert_d${s.d}_f${s.f}`,
      nodes,
      inputs,
      outputs: [{ name: "y", elemType: "float32", dims: ["n", s.d] }],
    },
  };
}

/** Where one stacked expert weight sits: its buffer and byte offset. */
export type WeightAt = { mem: ArrayBuffer; offset: number };

/** The host memory one `moe_experts` run reads and writes. */
export type MoeViews = {
  x: Float32Array;
  ids: Int32Array;
  weights: Float32Array;
  gateUp: WeightAt;
  down: WeightAt;
  out: Float32Array;
  tokens: number;
};

/** The feeds of expert `e`'s weight named `name` (`gu` / `dn`): views of its slice, no copy. */
function weightFeeds(
  ort: OrtModule,
  name: string,
  at: WeightAt,
  dt: ExpertDType,
  e: number,
  experts: number,
  n: number,
  k: number,
): Record<string, OrtTensor> {
  if (dt === "f32") {
    return { [name]: new ort.Tensor("float32", new Float32Array(at.mem, at.offset + 4 * e * n * k, n * k), [n, k]) };
  }
  const blocks = k / Q8_BLOCK;
  return {
    [`${name}_q`]: new ort.Tensor("uint8", new Uint8Array(at.mem, at.offset + e * n * k, n * k), [n, blocks, Q8_BLOCK]),
    [`${name}_s`]: new ort.Tensor(
      "float32",
      new Float32Array(at.mem, at.offset + experts * n * k + 4 * e * n * blocks, n * blocks),
      [n * blocks],
    ),
  };
}

/**
 * Runs one `moe_experts`: groups the tokens by expert, runs the expert MLP once per selected expert on its rows,
 * and sums `weight · y` into `out` in token order of the routes (`out` is overwritten).
 */
export async function runMoe(ort: OrtModule, session: OrtSession, s: MoeShape, v: MoeViews): Promise<void> {
  const { d, f, experts, k } = s, t = v.tokens;
  const rows: number[][] = Array.from({ length: experts }, () => []);
  for (let i = 0; i < t * k; i++) {
    const e = v.ids[i];
    if (!(e >= 0 && e < experts)) {
      throw new RangeError(`expert ${e} (token ${Math.floor(i / k)}) outside 0..${experts - 1}`);
    }
    rows[e].push(i);
  }
  const out = v.out.subarray(0, t * d);
  out.fill(0);
  for (let e = 0; e < experts; e++) {
    const routes = rows[e], n = routes.length;
    if (n === 0) continue;
    const xe = new Float32Array(n * d), ye = new Float32Array(n * d);
    routes.forEach((r, j) => xe.set(v.x.subarray(Math.floor(r / k) * d, (Math.floor(r / k) + 1) * d), j * d));
    await session.run({
      x: new ort.Tensor("float32", xe, [n, d]),
      ...weightFeeds(ort, "gu", v.gateUp, s.gateUp, e, experts, 2 * f, d),
      ...weightFeeds(ort, "dn", v.down, s.down, e, experts, d, f),
    }, { y: new ort.Tensor("float32", ye, [n, d]) });
    routes.forEach((r, j) => {
      const w = v.weights[r], o = Math.floor(r / k) * d, y = j * d;
      for (let c = 0; c < d; c++) out[o + c] += w * ye[y + c];
    });
  }
}
