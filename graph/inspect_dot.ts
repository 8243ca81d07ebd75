/**
 * Graphviz DOT of a graph. Decoder layers repeat, so only the first `expandLayers` are drawn node by node; the
 * rest collapse into one box, which keeps the real model's 36 layers readable.
 *
 * @example
 * ```ts
 * import { renderDot } from "./inspect_dot.ts";
 * import { decodeGraph } from "./inspect.ts";
 * import { resolveModel } from "./models/mod.ts";
 * const graph = decodeGraph(await resolveModel("tiny"));
 * const dot = renderDot(graph); // save it, then: dot -Tsvg model.dot > model.svg
 * ```
 *
 * @module
 */

import { formatShape, type Graph, tensorTable } from "./ir.ts";

/** Options of {@link renderDot}. */
export interface DotOptions {
  /** Layers drawn in full (default 1); the others become one box. */
  expandLayers?: number;
}

/** A DOT string literal; lines are joined with DOT's `\n` escape. */
const quote = (...lines: string[]) =>
  `"${lines.map((s) => s.replaceAll("\\", "\\\\").replaceAll('"', '\\"')).join("\\n")}"`;

/** The layer a tensor belongs to: nodes carry it, inputs/weights are read from a `layers.{i}.` name. */
function layerOf(name: string, layer: number | undefined): number | undefined {
  if (layer !== undefined) return layer;
  const m = /^layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** DOT text: inputs as parallelograms, weights as notes, ops as boxes labelled `name: op [shape]`. */
export function renderDot(graph: Graph, options: DotOptions = {}): string {
  const expand = options.expandLayers ?? 1;
  const table = tensorTable(graph);
  const hidden = new Set<number>();
  const collapsedLayers = new Set<number>();
  for (const t of table) {
    if (!t) continue;
    const l = layerOf(t.name, t.layer);
    if (l !== undefined && l >= expand) {
      hidden.add(t.id);
      collapsedLayers.add(l);
    }
  }
  const lines = ["digraph model {", "  rankdir=TB;", '  node [fontname="monospace", fontsize=10];'];
  const label = (id: number) => {
    const t = table[id];
    return quote(t.name, `${formatShape(t.shape)} ${t.dtype}`);
  };
  for (const i of graph.inputs) {
    if (!hidden.has(i.id)) lines.push(`  t${i.id} [shape=parallelogram, label=${label(i.id)}];`);
  }
  for (const w of graph.weights) {
    if (!hidden.has(w.id)) lines.push(`  t${w.id} [shape=note, color=gray40, label=${label(w.id)}];`);
  }
  const box = "collapsed";
  if (collapsedLayers.size > 0) {
    const ls = [...collapsedLayers].sort((a, b) => a - b);
    const text = `layers ${ls[0]}..${ls[ls.length - 1]} (${ls.length} more, same as layer ${expand - 1})`;
    lines.push(`  ${box} [shape=box3d, style=filled, fillcolor=lightyellow, label=${quote(text)}];`);
  }
  const edges = new Set<string>();
  for (const n of graph.nodes) {
    const inside = hidden.has(n.id);
    if (!inside) {
      const text = quote(`${n.name}: ${n.op}`, `${formatShape(n.shape)} ${n.dtype}`);
      lines.push(`  t${n.id} [shape=box, style=rounded, label=${text}];`);
    }
    for (const id of n.inputs) {
      const from = hidden.has(id) ? box : `t${id}`;
      const to = inside ? box : `t${n.id}`;
      // Inside the collapsed box only what enters it from outside is drawn; its own weights and caches are not.
      if (from === box && to === box) continue;
      if (to === box && table[id].kind === "weight") continue;
      edges.add(`  ${from} -> ${to};`);
    }
  }
  for (const o of graph.outputs) {
    lines.push(`  out_${o.id} [shape=doublecircle, label=${quote(o.name)}];`);
    edges.add(`  ${hidden.has(o.id) ? box : `t${o.id}`} -> out_${o.id};`);
  }
  return [...lines, ...edges, "}"].join("\n") + "\n";
}
