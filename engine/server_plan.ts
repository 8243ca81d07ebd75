/**
 * Sizing a CPU server for a model (`inspect --host-memory 128GiB --bandwidth 200GB/s`): what a decoded token reads
 * from memory as the backend stores the weights (every weight once, the routed experts' top-k share), the latent
 * cache it adds per token of context, and the decode speed that bandwidth allows. Decode on the CPU backend is
 * bound by these bytes (q8 decode measures ~90% of the roofline on `ms4-mini`), so bytes / bandwidth is the
 * ceiling a machine of that bandwidth reaches. Pure arithmetic on the graph and the backend's layout: nothing is
 * allocated.
 *
 * @module
 */

import { activeFraction } from "../graph/inspect.ts";
import { type Graph, maxShape } from "../graph/ir.ts";
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import { type Backend, tensorBytes, weightBytes } from "../runtime/backend.ts";

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

function parseAmount(text: string, flag: string, what: string, perSecond: boolean): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)\s*$/i.exec(perSecond ? text.replace(/\/s\s*$/i, "") : text);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  const value = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!(value > 0 && Number.isFinite(value))) {
    const example = perSecond ? "200GB/s, 51.2GiB/s or 2e11" : "128GiB, 512GB or 68719476736";
    throw new RangeError(`${flag} must be ${what} such as ${example}, got "${text}"`);
  }
  return value;
}

/**
 * A memory size: a positive number with an optional unit, decimal (`KB`, `MB`, `GB`, `TB`, or `K`, `M`, `G`, `T`)
 * or binary (`KiB`, `MiB`, `GiB`, `TiB`), any case. Throws a RangeError naming `flag` otherwise.
 *
 * @example
 * ```ts
 * parseByteSize("128GiB", "--host-memory"); // 137438953472
 * ```
 */
export function parseByteSize(text: string, flag: string): number {
  return parseAmount(text, flag, "a positive size", false);
}

/**
 * A memory bandwidth in bytes per second: a size as {@link parseByteSize} reads it, with an optional `/s`.
 *
 * @example
 * ```ts
 * parseBandwidth("200GB/s", "--bandwidth"); // 2e11
 * ```
 */
export function parseBandwidth(text: string, flag: string): number {
  return parseAmount(text, flag, "a positive bandwidth", true);
}

/** What one decoded token reads, and what that allows at a bandwidth. */
export interface DecodeTraffic {
  /** Weight bytes read per decoded token as `backend` stores them (top-k of the routed experts, no embedding). */
  weightBytesPerToken: number;
  /** Latent-cache bytes per token of context (all layers) as the backend stores the cache. */
  cacheBytesPerToken: number;
  /** Bytes read per decoded token, and the decode ceiling in tokens/s at the bandwidth given, at sample contexts. */
  at: { context: number; bytes: number; tokensPerSecond?: number }[];
}

/** Contexts the decode speed is predicted at. */
export const TRAFFIC_CONTEXTS: readonly number[] = [0, 4096, 32768];

/**
 * The decode traffic of `graph` (a decode graph over a one-token cache, as `inspect` builds it) with weights stored
 * as `backend` stores them; `bandwidth` (bytes/s) adds the predicted speed: bandwidth / bytes per token.
 */
export function decodeTraffic(
  graph: Graph,
  backend: Backend,
  config: Mistral4Config,
  bandwidth?: number,
): DecodeTraffic {
  let weights = 0;
  for (const w of graph.weights) {
    weights += weightBytes(backend, maxShape(w.shape), w.dtype) * activeFraction(w.name, config);
  }
  // The graph's cache holds one token: its states' bytes are the bytes per token of context.
  const states = graph.inputs.filter((i) => i.state);
  const cache = states.reduce((n, s) => n + tensorBytes(backend.caps, { kind: "state", ...s }), 0);
  const at = TRAFFIC_CONTEXTS.map((context) => {
    const bytes = weights + context * cache;
    return bandwidth === undefined ? { context, bytes } : { context, bytes, tokensPerSecond: bandwidth / bytes };
  });
  return { weightBytesPerToken: weights, cacheBytesPerToken: cache, at };
}
