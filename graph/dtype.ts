/**
 * Element types. Quantisation is a weight dtype, not another model file: `--dtype` flags take these names.
 *
 * @module
 */

/** Every element type a tensor may have. */
export type DType = "f32" | "bf16" | "f16" | "f8e4m3" | "nvfp4" | "q8" | "q4" | "i32" | "u8";

/** All dtype names, for flag validation and messages. */
export const DTYPES: readonly DType[] = ["f32", "bf16", "f16", "f8e4m3", "nvfp4", "q8", "q4", "i32", "u8"];

/** The dtypes weights can be loaded as (`--dtype`, `loadModel({ dtype })`); the others are not weight encodings. */
export const WEIGHT_DTYPES: readonly DType[] = ["f32", "bf16", "f16", "f8e4m3", "nvfp4", "q8", "q4"];

/**
 * Storage bits per element, including block scales for the block-quantised types
 * (nvfp4: 4 bits + one f8 scale per 16 → 4.5; q8: 8 bits + one f32 scale per 32 → 9; q4: 4 bits + one f16 scale
 * per 32 → 4.5).
 */
export const BITS_PER_ELEMENT: Readonly<Record<DType, number>> = {
  f32: 32,
  bf16: 16,
  f16: 16,
  f8e4m3: 8,
  nvfp4: 4.5,
  q8: 9,
  q4: 4.5,
  i32: 32,
  u8: 8,
};

/** True when `name` is a known dtype. */
export function isDType(name: string): name is DType {
  return (DTYPES as readonly string[]).includes(name);
}

/** The dtypes the lm head may be stored as (`--head-dtype`, `loadModel({ headDType })`). */
export const HEAD_DTYPES: readonly DType[] = ["q4", "q8", "bf16"];

/**
 * `name` checked as a head dtype: a RangeError naming `flag` and {@link HEAD_DTYPES} otherwise.
 *
 * @example
 * ```ts
 * headDTypeOf("q8", "--head-dtype"); // "q8"
 * ```
 */
export function headDTypeOf(name: string, flag: string): DType {
  if (!(HEAD_DTYPES as readonly string[]).includes(name)) {
    throw new RangeError(`${flag} must be one of ${HEAD_DTYPES.join(", ")}, got ${JSON.stringify(name)}`);
  }
  return name as DType;
}
