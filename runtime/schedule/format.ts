/**
 * Text rendering of a plan, for `inspect` and logs: segments, copies, fallbacks, weight placement and memory per
 * backend. With the graph at hand, nodes are shown by name; without it, by id.
 *
 * @module
 */

import type { Graph } from "../../graph/ir.ts";
import type { Plan } from "./plan.ts";

/**
 * A readable, multi-line summary of `plan`.
 *
 * @example
 * ```ts
 * import { formatPlan } from "./format.ts";
 * // console.log(formatPlan(schedule(graph, backends), graph));
 * ```
 */
export function formatPlan(plan: Plan, graph?: Graph): string {
  const names = new Map<number, string>();
  for (const t of [...(graph?.inputs ?? []), ...(graph?.weights ?? []), ...(graph?.nodes ?? [])]) {
    names.set(t.id, t.name);
  }
  const label = (id: number) => names.has(id) ? `${names.get(id)} (#${id})` : `#${id}`;
  const bucket = Object.entries(plan.symbols).map(([s, max]) => `${s}≤${max}`).join(", ");
  const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
  const counts = [
    plural(plan.segments.length, "segment"),
    plural(plan.copies.length, "copy", "copies"),
    plural(plan.fallbacks.length, "fallback"),
  ];
  const out = [`plan for ${plan.backends.join(", ")}${bucket ? ` (bucket ${bucket})` : ""}: ${counts.join(", ")}`];
  out.push("segments");
  const width = Math.max(...plan.backends.map((b) => b.length));
  plan.segments.forEach((s, i) => {
    const first = s.nodes[0], last = s.nodes[s.nodes.length - 1];
    const span = s.nodes.length === 1 ? label(first) : `${label(first)} … ${label(last)}`;
    out.push(
      `  #${i} ${s.backend.padEnd(width)} ${plural(s.nodes.length, "node").padEnd(10)} ${span}` +
        `  (in ${s.inputs.length}, out ${s.outputs.length})`,
    );
  });
  if (plan.copies.length) out.push("copies");
  for (const c of plan.copies) {
    const dtypes = c.fromDType === c.toDType ? "" : ` (${c.fromDType} → ${c.toDType})`;
    out.push(`  before #${c.before}: ${label(c.tensor)} ${c.from} → ${c.to}, ${formatBytes(c.bytes)}${dtypes}`);
  }
  if (plan.fallbacks.length) out.push("fallbacks");
  for (const f of plan.fallbacks) out.push(`  ${f.op} "${f.name}" (#${f.node}) ${f.from} → ${f.to}: ${f.reason}`);
  const replicas = plan.weights.filter((w) => w.backends.length > 1);
  const homes = plan.backends.map((b) => `${b} ${plan.weights.filter((w) => w.backends[0] === b).length}`);
  out.push(`weights: ${homes.join(", ")}${replicas.length ? `; replicated: ${replicas.length}` : ""}`);
  for (const w of replicas) out.push(`  ${w.name} on ${w.backends.join(", ")}`);
  const cols = ["arena", "unshared", "weights", "state", "io"];
  out.push(`memory  ${"".padEnd(width)} ${cols.map((c) => c.padStart(10)).join("")}`);
  for (const b of plan.backends) {
    const m = plan.memory.perBackend[b];
    const values = [m.arenaBytes, m.unsharedBytes, m.weightBytes, m.stateBytes, m.ioBytes];
    out.push(`  ${b.padEnd(width)}       ${values.map((v) => formatBytes(v).padStart(10)).join("")}`);
  }
  return out.join("\n");
}

/** `512 B`, `1.5 KiB`, `3.2 GiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) [n, u] = [n / 1024, u + 1];
  return u === 0 ? `${n} B` : `${n.toFixed(1)} ${units[u]}`;
}
