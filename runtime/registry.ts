/**
 * The backend registry: every backend factory the engine knows, by static import (one line per backend), probed
 * on demand. `--backend NAME` goes through {@link createBackend}; `auto` picks the highest probe score, and a list
 * (`cuda,wasm`) gives the scheduler its preference order through {@link createBackends}.
 *
 * @example
 * ```ts
 * import { createBackend, probeAll } from "./registry.ts";
 * await probeAll(); // [{ name: "reference", score: 1 }, { name: "wasm", score: 10 }]
 * const backend = await createBackend("auto", { threads: 4 });
 * backend.dispose();
 * ```
 *
 * @module
 */

import type { Backend, BackendFactory, BackendOptions } from "./backend.ts";
import { referenceBackend } from "./backends/reference.ts";
import { wasmBackend } from "./backends/wasm/backend.ts";
import { webgpuBackend } from "./backends/webgpu/backend.ts";
import { onnxBackend } from "./backends/onnx/backend.ts";
import { cudaBackend } from "./backends/cuda/backend.ts";

/** Every known backend factory. A new backend is one import and one entry here. */
export const BACKENDS: readonly BackendFactory[] = [
  referenceBackend,
  wasmBackend,
  webgpuBackend,
  onnxBackend,
  cudaBackend,
];

/** What a probe found: `score` 0 means unavailable (`error` says why when the probe threw). */
export type ProbeResult = { name: string; score: number; error?: string };

/** A backend that does not exist or cannot run here; the message lists the ones that can. */
export class BackendUnavailableError extends Error {
  /** Names of the backends available here, best first. */
  readonly available: string[];

  /** `available`: the names that would have worked. */
  constructor(message: string, available: string[]) {
    super(message);
    this.name = "BackendUnavailableError";
    this.available = available;
  }
}

/** Probes every factory (concurrently), in registry order; a probe that throws scores 0. */
export function probeAll(factories: readonly BackendFactory[] = BACKENDS): Promise<ProbeResult[]> {
  return Promise.all(factories.map(async (f): Promise<ProbeResult> => {
    try {
      const score = await f.probe();
      return { name: f.name, score: Number.isFinite(score) && score > 0 ? score : 0 };
    } catch (e) {
      return { name: f.name, score: 0, error: e instanceof Error ? e.message : String(e) };
    }
  }));
}

/**
 * Creates the backend named `name`, or with `"auto"` the available one with the highest probe score. Throws
 * {@link BackendUnavailableError} for an unknown name or one whose probe is 0 here.
 */
export async function createBackend(
  name: string,
  options: BackendOptions = {},
  factories: readonly BackendFactory[] = BACKENDS,
): Promise<Backend> {
  if (name.trim() === "auto") {
    // Only the best: `createBackends("auto")` would create every available backend.
    const best = (await probeAll(factories)).filter((p) => p.score > 0).sort((a, b) => b.score - a.score)[0];
    if (!best) throw new BackendUnavailableError("no backend is available here", []);
    name = best.name;
  }
  const [backend] = await createBackends([name], options, factories);
  return backend;
}

/**
 * Creates backends in preference order for the scheduler, from names or a comma-separated list (`"cuda,wasm"`).
 * `"auto"` expands to every available backend, best score first, without repeating one named explicitly.
 */
export async function createBackends(
  names: string | readonly string[],
  options: BackendOptions = {},
  factories: readonly BackendFactory[] = BACKENDS,
): Promise<Backend[]> {
  const list = (typeof names === "string" ? names.split(",") : names).map((n) => n.trim()).filter((n) => n);
  if (list.length === 0) throw new BackendUnavailableError("no backend named", []);
  const probes = await probeAll(factories);
  const available = probes.filter((p) => p.score > 0).sort((a, b) => b.score - a.score);
  const availableNames = available.map((p) => p.name);
  const listing = `available here: ${availableNames.join(", ") || "none"}`;
  const chosen: string[] = [];
  for (const name of list) {
    if (name === "auto") {
      if (available.length === 0) throw new BackendUnavailableError(`no backend is available here`, []);
      for (const p of available) if (!list.includes(p.name) && !chosen.includes(p.name)) chosen.push(p.name);
      continue;
    }
    const probe = probes.find((p) => p.name === name);
    if (!probe) {
      const known = factories.map((f) => f.name).join(", ");
      throw new BackendUnavailableError(`unknown backend "${name}" (known: ${known}; ${listing})`, availableNames);
    }
    if (probe.score === 0) {
      const why = probe.error ? `: ${probe.error}` : "";
      throw new BackendUnavailableError(`backend "${name}" is not available here${why} (${listing})`, availableNames);
    }
    if (!chosen.includes(name)) chosen.push(name);
  }
  const created: Backend[] = [];
  try {
    for (const name of chosen) created.push(await factories.find((f) => f.name === name)!.create(options));
  } catch (e) {
    for (const b of created) b.dispose();
    throw e;
  }
  return created;
}
