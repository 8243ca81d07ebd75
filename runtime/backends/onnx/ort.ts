/**
 * Loads onnxruntime-node on demand and names the part of its API the backend uses. The specifier is computed, not
 * a literal, so that nothing that imports the library (mod.ts, a browser bundle, a device carry) sees the package
 * in its module graph: only a process that probes or creates the `onnx` backend fetches its ~290 MB (Deno installs
 * an `npm:` specifier on first dynamic import, from the registry or its cache).
 *
 * @module
 */

/** Element types of the tensors the backend makes. */
export type OrtType = "float32" | "int32" | "uint8" | "int64";

/** An onnxruntime tensor: a typed array viewed as a shape (no copy for ArrayBuffer-backed arrays). */
export interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
  readonly type: string;
}

/** A session: one loaded model. */
export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Runs the model; tensors in `fetches` are preallocated outputs that ORT writes in place. */
  run(feeds: Record<string, OrtTensor>, fetches?: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}

/** The module's entry points we use. */
export interface OrtModule {
  Tensor: new (type: OrtType, data: ArrayBufferView, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, options: Record<string, unknown>): Promise<OrtSession> };
}

/** The pinned package (the version deno.json's import map and the lockfile name too). */
export const ORT_PACKAGE = "onnxruntime-node@1.30.0";

let loading: Promise<OrtModule> | undefined;

/**
 * onnxruntime-node, loaded once; rejects with what to do when it cannot load (not installed, no `--allow-ffi`, a
 * platform without its prebuilt binary).
 */
export function loadOrt(): Promise<OrtModule> {
  loading ??= (async () => {
    try {
      // Computed on purpose (`deno publish` warns that it cannot analyse it: that is the point).
      const mod = await import(`npm:${ORT_PACKAGE}`);
      const ort = (mod.default ?? mod) as OrtModule;
      if (typeof ort.InferenceSession?.create !== "function") throw new Error("it has no InferenceSession");
      return ort;
    } catch (e) {
      loading = undefined;
      throw new Error(
        `onnxruntime-node does not load here (${(e as Error).message.split("\n")[0]}): npm:${ORT_PACKAGE} must be ` +
          `reachable (registry or Deno's cache), and the process needs --allow-ffi, --allow-env and --allow-read`,
      );
    }
  })();
  return loading;
}

/**
 * Session options: `threads` intra-op threads, one inter-op thread, and no spinning when idle, so ORT's pool does
 * not take the cores the wasm pool needs between segments.
 */
export function sessionOptions(threads: number, spinning = false): Record<string, unknown> {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    // Errors only reach the caller, through the backend's own message naming the segment.
    logSeverityLevel: 4,
    extra: { session: { intra_op: { allow_spinning: spinning ? "1" : "0" } } },
  };
}
