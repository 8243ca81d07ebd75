/**
 * The plan section of `inspect`: where the decode graph would run on the backends asked for, with `wasm` grown as
 * `loadModel` grows it (memory64, or instances split by layer), and, when it does not fit, by how much and what would:
 * a smaller `--dtype`, or a GPU with enough memory. It never fails for lack of memory; it reports it.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import type { PlanSection } from "../graph/inspect.ts";
import type { Graph } from "../graph/ir.ts";
import type { Backend, BackendOptions } from "../runtime/backend.ts";
import { createBackend, createBackends } from "../runtime/registry.ts";
import { formatPlan, type Plan } from "../runtime/schedule.ts";
import { formatBytes } from "../runtime/schedule/format.ts";
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import { type PlacementPreview, previewPlacement } from "./placement.ts";
import { type DecodeTraffic, decodeTraffic } from "./server_plan.ts";

/** Linear dtypes offered as alternatives when the model does not fit (those the first backend holds natively). */
const DTYPES: readonly DType[] = ["bf16", "f8e4m3", "q8", "q4", "nvfp4"];

/** Options of {@link planSection}. */
export interface PlanSectionOptions {
  /** Backend names in preference order, comma-separated (`auto`: the one best backend, as `loadModel` takes). */
  backends: string;
  /** The decode graph with its linears stored as `dtype` (undefined: as the model's default). */
  graphFor: (dtype?: DType) => Graph;
  /** The dtype asked for (undefined: the model's default). */
  dtype?: DType;
  /** The dtype of the plan's quantised linears (`--dtype`, or the checkpoint's): not offered again. */
  linearDtype?: DType;
  /** The host's memory (default: read from the system where permitted). */
  hostMemoryBytes?: number;
  /** Handed to the backend factories. */
  backendOptions?: BackendOptions & Record<string, unknown>;
  /** The model's config: adds the decode traffic (bytes read per token as the first backend stores them). */
  config?: Mistral4Config;
  /** The host's memory bandwidth in bytes/s (with `config`): adds the decode speed it allows. */
  bandwidthBytesPerSecond?: number;
}

/** A smaller `--dtype` and whether the model would fit with it. */
export interface DTypeAlternative {
  dtype: DType;
  /** What the plan needs with it, all backends together. */
  needBytes: number;
  fits: boolean;
  /** How `wasm` would grow for it. */
  growth?: PlacementPreview["growth"];
}

/** The section: the preview's facts, the step plan when it fits, lines for the text report. */
export type PlanSectionReport = PlanSection & {
  fits: boolean;
  /** The step plan, when it fits. */
  plan?: Plan;
  preview: Omit<PlacementPreview, "plans">;
  alternatives: DTypeAlternative[];
  /** With `config`: what a decoded token reads, and the speed `bandwidthBytesPerSecond` allows. */
  traffic?: DecodeTraffic;
  /** With `config`, when the plan fits a host of known memory: what is left for the latent cache. */
  cacheRoom?: { bytes: number; tokens: number };
};

/** Plans the decode graph over `o.backends` (created, then disposed) without loading anything. */
export async function planSection(o: PlanSectionOptions): Promise<PlanSectionReport> {
  const backendOptions = o.backendOptions ?? {};
  const backends: Backend[] = o.backends.trim() === "auto"
    ? [await createBackend("auto", backendOptions)]
    : await createBackends(o.backends, backendOptions);
  try {
    const preview = (graph: Graph, log: (line: string) => void = () => {}) =>
      previewPlacement([graph], backends, { backendOptions, log, hostMemoryBytes: o.hostMemoryBytes });
    const growthLines: string[] = [];
    const graph = o.graphFor(o.dtype);
    const { plans, ...facts } = await preview(graph, (line) => growthLines.push(line));
    const total = (p: { needBytes: Record<string, number> }) => Object.values(p.needBytes).reduce((a, b) => a + b, 0);
    const alternatives: DTypeAlternative[] = [];
    if (!facts.fits) {
      for (
        const dtype of DTYPES.filter((d) => d !== (o.linearDtype ?? o.dtype) && backends[0].caps.dtypes.includes(d))
      ) {
        const p = await preview(o.graphFor(dtype));
        if (total(p) < total(facts)) alternatives.push({ dtype, needBytes: total(p), fits: p.fits, growth: p.growth });
      }
      alternatives.sort((a, b) => b.needBytes - a.needBytes);
    }
    const traffic = o.config && decodeTraffic(graph, backends[0], o.config, o.bandwidthBytesPerSecond);
    const host = facts.hostMemoryBytes;
    const room = traffic && plans && host !== undefined ? Math.max(0, host - total(facts)) : undefined;
    const cacheRoom = room !== undefined
      ? { bytes: room, tokens: Math.floor(room / traffic!.cacheBytesPerToken) }
      : undefined;
    const lines = [
      ...(plans
        ? [...growthLines, ...formatPlan(plans[0], graph).split("\n")]
        : unfitLines(facts, alternatives, total(facts))),
      ...(traffic ? serverLines(traffic, facts, total(facts), cacheRoom, o.bandwidthBytesPerSecond) : []),
    ];
    const n = facts.growth?.instances ?? 1;
    return {
      backend: !facts.fits && n > 1 ? `wasm:0…wasm:${n - 1}` : facts.backends.join(","),
      fits: facts.fits,
      lines,
      ...(plans ? { plan: plans[0] } : {}),
      preview: facts,
      alternatives,
      ...(traffic ? { traffic } : {}),
      ...(cacheRoom ? { cacheRoom } : {}),
    };
  } finally {
    for (const b of backends) b.dispose();
  }
}

/** The host summary and the decode traffic: memory by kind, what is left for the cache, the predicted speed. */
function serverLines(
  t: DecodeTraffic,
  p: Omit<PlacementPreview, "plans">,
  need: number,
  room: { bytes: number; tokens: number } | undefined,
  bandwidth: number | undefined,
): string[] {
  const out = ["host"];
  const g = p.growth;
  const size = g && formatBytes(g.instanceBytes), kind = g?.memory64 ? " (memory64)" : "";
  const held = !g
    ? p.backends.join(", ")
    : g.instances === 1
    ? `one memory64 wasm instance of ${size}`
    : `${g.instances} wasm instances${kind} of ${size}, split by layer`;
  const weights = Object.values(p.needWeightBytes).reduce((a, b) => a + b, 0);
  out.push(
    `  memory                    ${p.hostMemoryBytes === undefined ? "unknown" : formatBytes(p.hostMemoryBytes)}`,
  );
  const parts = `weights ${formatBytes(weights)}, arena/state/io ${formatBytes(need - weights)}`;
  out.push(`  the plan needs            ${formatBytes(need)} (${parts}) on ${held}`);
  out.push(`  latent cache per token    ${t.cacheBytesPerToken.toLocaleString("en-US")} B`);
  if (room) {
    const tokens = room.tokens.toLocaleString("en-US");
    out.push(
      `  left on the host          ${
        formatBytes(room.bytes)
      }: the latent cache of ${tokens} tokens (context × sequences)`,
    );
  }
  out.push("decode traffic per token (weights as stored, top-k routed experts, the cache at the context)");
  out.push(`  weights read              ${formatBytes(t.weightBytesPerToken)}`);
  for (const a of t.at) {
    const speed = a.tokensPerSecond === undefined
      ? ""
      : `: ≤ ${a.tokensPerSecond.toFixed(1)} tok/s at ${rate(bandwidth!)}`;
    out.push(`  ${`at context ${a.context}`.padEnd(26)}${formatBytes(a.bytes)}${speed}`);
  }
  if (bandwidth === undefined) out.push("  (--bandwidth B/s predicts the decode speed: bytes per token / bandwidth)");
  return out;
}

/** `200 GB/s`. */
function rate(bytesPerSecond: number): string {
  return bytesPerSecond >= 1e9
    ? `${+(bytesPerSecond / 1e9).toFixed(2)} GB/s`
    : `${+(bytesPerSecond / 1e6).toFixed(2)} MB/s`;
}

/** What does not fit, by how much, and what would. */
function unfitLines(p: Omit<PlacementPreview, "plans">, alternatives: DTypeAlternative[], need: number): string[] {
  const out: string[] = [];
  for (const [name, bytes] of Object.entries(p.needBytes)) {
    const has = p.capacityBytes[name], holds = has === Infinity ? "" : `; ${name} holds ${formatBytes(has)} as created`;
    out.push(
      `${name}: the plan needs ${formatBytes(bytes)} (weights ${formatBytes(p.needWeightBytes[name] ?? 0)})${holds}`,
    );
  }
  const g = p.growth;
  if (g) {
    const into = g.instances === 1 ? "one memory64 instance" : `${g.instances} instances, split by layer,`;
    out.push(`loadModel grows wasm by itself into ${into} of ${formatBytes(g.instanceBytes)}`);
  }
  const host = p.hostMemoryBytes;
  if (g && host !== undefined && need > host) {
    out.push(`this host has ${formatBytes(host)} of memory: short by ${formatBytes(need - host)}`);
  } else {
    out.push(p.error ?? "");
  }
  out.push("what would fit:");
  for (const a of alternatives) {
    const how = a.growth && a.growth.instances > 1 ? ` (${a.growth.instances} wasm instances)` : "";
    out.push(
      `  --dtype ${a.dtype}: the plan needs ${formatBytes(a.needBytes)}, ${a.fits ? `fits here${how}` : "not here"}`,
    );
  }
  out.push(`  a GPU backend with at least ${formatBytes(need)} of device memory`);
  if (host !== undefined) out.push(`  a host with at least ${formatBytes(need)} of memory, for the CPU backend`);
  return out;
}
