/**
 * Tuning of the `webgpu` kernels: defaults suited to GPUs, each overridable through the factory's `webgpuTuning`
 * option (tests force the paths lavapipe would not take at their small sizes).
 *
 * @module
 */

/** How the `webgpu` backend picks its kernel variants. */
export type WebGpuTuning = {
  /**
   * Positions per chunk of the split-context MLA decode (kernels/wgsl/mla_split.ts): a step whose longest context
   * is longer, with at most `splitTokens` tokens, splits each (token, head) over chunks of this many positions (or
   * more, so that a context has at most {@link MAX_SPLITS} chunks); others take the one-pass kernel. 128: a 4K
   * context of 32 heads (4 groups of 8) is then 128 workgroups at batch 1, about one per SM of a large GPU.
   */
  splitChunk: number;
  /** The most tokens a step may have to take the split path (prefill steps have parallelism enough). */
  splitTokens: number;
  /** Use `shader-f16` kernels where the device has the feature (`false` forces the core-WGSL fallback). */
  f16: boolean;
  /** Threads per output row of the decode matvec (a power of two up to 64), or 0 to choose by K (`matvecThreads`). */
  matvecThreads: number;
};

/** The most chunks one (token, head) is split in: bounds the scratch of partial results. */
export const MAX_SPLITS = 32;

/** The defaults. */
export const DEFAULT_WEBGPU_TUNING: WebGpuTuning = { splitChunk: 128, splitTokens: 16, f16: true, matvecThreads: 0 };
