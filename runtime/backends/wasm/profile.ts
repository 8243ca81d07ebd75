/**
 * Opt-in per-op timing of the `wasm` backend: when {@link wasmProfile} is enabled, every step of every run is timed
 * with `performance.now()` and charged to a key (the op; for matmuls also the stored weight dtype and the node name
 * without its layer prefix), along with the thread-pool jobs it dispatched. Off by default, and then free: the
 * backend checks one boolean per run. `deno task bench --profile` prints the table for one decode step.
 *
 * @example
 * ```ts
 * import { wasmProfile } from "./profile.ts";
 * wasmProfile.reset();
 * wasmProfile.enabled = true;
 * // ... run steps on a wasm backend ...
 * wasmProfile.enabled = false;
 * for (const r of wasmProfile.rows()) console.log(r.key, r.ms, r.calls, r.jobs);
 * ```
 *
 * @module
 */

/** One line of the profile: total wall time, calls and multi-threaded jobs of one key since the last reset. */
export interface ProfileRow {
  key: string;
  ms: number;
  calls: number;
  /** Thread-pool jobs that woke workers (single-threaded calls are not counted). */
  jobs: number;
}

/** Per-op wall time accumulator (a process-wide singleton: {@link wasmProfile}). */
export class OpProfile {
  /** When true, backends record every step. */
  enabled = false;
  /** Time in `run` calls (all steps of a segment, plus the loop around them). */
  runMs = 0;
  /** Thread-pool jobs that woke workers, counted by the pools while enabled. */
  jobs = 0;
  #rows = new Map<string, ProfileRow>();

  /** Adds one timed call of `key`. */
  record(key: string, ms: number, jobs: number): void {
    let r = this.#rows.get(key);
    if (!r) this.#rows.set(key, r = { key, ms: 0, calls: 0, jobs: 0 });
    r.ms += ms;
    r.calls++;
    r.jobs += jobs;
  }

  /** Forgets everything recorded. */
  reset(): void {
    this.#rows.clear();
    this.runMs = 0;
    this.jobs = 0;
  }

  /** Rows by decreasing time. */
  rows(): ProfileRow[] {
    return [...this.#rows.values()].sort((a, b) => b.ms - a.ms);
  }
}

/** The profile every wasm backend and thread pool of this process records into when enabled. */
export const wasmProfile: OpProfile = new OpProfile();

/**
 * The profile key of a node: its op; matmuls add the weight's stored dtype and the node name with any `layers.N.`
 * prefix removed (so the 8 layers' `attn.q_a` add up to one row).
 */
export function profileKey(op: string, name: string, weightDtype?: string): string {
  if (op !== "matmul") return op;
  return `matmul ${weightDtype ?? "?"} ${name.replace(/^layers\.\d+\./, "")}`;
}
