/**
 * Exact conversions between Float32Array and the checkpoint element formats: bf16, f16, f8e4m3 (OCP E4M3FN),
 * NVFP4 (compressed-tensors), per-tensor/per-expert scaled FP8, and our CPU q8 format.
 *
 * All encoders round to nearest, ties to even (RNE). Array codecs work on the raw bits through Uint32Array views,
 * so NaN payloads survive a decode → encode round trip. Typed-array views assume a little-endian host, which every
 * platform Deno ships for is.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";

// Scratch for scalar bit casts.
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

function bitsOf(x: number): number {
  F32[0] = x;
  return U32[0];
}

function fromBits(bits: number): number {
  U32[0] = bits;
  return F32[0];
}

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

// ---------------------------------------------------------------------------------------------------------------
// bf16: the top half of an f32.

function bf16FromF32Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) {
    // NaN: keep sign and top payload bits; set the quiet bit if truncation would leave an infinity pattern.
    const h = x >>> 16;
    return (h & 0x7f) === 0 ? h | 0x40 : h;
  }
  // RNE: add 0x7fff plus the lsb of the kept half; a carry into the exponent is the correct rounding (to inf too).
  return (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/** Decodes one bf16 code (0..65535) to a number. @example `decodeBf16(0x3f80) // 1` */
export function decodeBf16(code: number): number {
  return fromBits((code << 16) >>> 0);
}

/** Encodes a number as a bf16 code, round-to-nearest-even. @example `encodeBf16(1) // 0x3f80` */
export function encodeBf16(x: number): number {
  return bf16FromF32Bits(bitsOf(x));
}

/**
 * Decodes bf16 codes to f32 (exact).
 *
 * @example
 * ```ts
 * bf16ToF32(new Uint16Array([0x3f80, 0xc000])); // Float32Array [1, -2]
 * ```
 */
export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const out = u32View(dst);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return dst;
}

/** Encodes f32 values as bf16 codes, round-to-nearest-even. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) dst[i] = bf16FromF32Bits(bits[i]);
  return dst;
}

// ---------------------------------------------------------------------------------------------------------------
// f16: IEEE binary16.

function f16ToF32Bits(h: number): number {
  const s = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return (s | 0x7f800000 | (m << 13)) >>> 0;
  if (e !== 0) return (s | ((e + 112) << 23) | (m << 13)) >>> 0;
  if (m === 0) return s >>> 0;
  // Subnormal m·2^-24: shift the leading one into the implicit position.
  let exp = 113;
  let mm = m;
  while ((mm & 0x400) === 0) {
    mm <<= 1;
    exp--;
  }
  return (s | (exp << 23) | ((mm & 0x3ff) << 13)) >>> 0;
}

function f16FromF32Bits(x: number): number {
  const s = (x >>> 16) & 0x8000;
  const e = (x >>> 23) & 0xff;
  const m = x & 0x7fffff;
  if (e === 0xff) return m === 0 ? s | 0x7c00 : s | 0x7c00 | (m >>> 13 || 0x200);
  const exp = e - 112; // f16 biased exponent
  if (exp >= 31) return s | 0x7c00;
  if (exp <= 0) {
    // Subnormal result in units of 2^-24: drop (14 - exp) bits of the 24-bit significand.
    if (exp < -10) return s;
    const sig = m | 0x800000;
    const shift = 14 - exp;
    const half = 1 << (shift - 1);
    const rem = sig & ((1 << shift) - 1);
    let h = sig >>> shift;
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return s | h;
  }
  let h = (exp << 10) | (m >>> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry into the exponent rounds up to inf
  return s | h;
}

let f16Table: Uint32Array | undefined;

function f16Lut(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32Bits(h);
  }
  return f16Table;
}

/** Decodes one f16 code to a number. @example `decodeF16(0x3c00) // 1` */
export function decodeF16(code: number): number {
  return fromBits(f16ToF32Bits(code));
}

/** Encodes a number as an f16 code, round-to-nearest-even, overflow to ±inf. @example `encodeF16(1) // 0x3c00` */
export function encodeF16(x: number): number {
  return f16FromF32Bits(bitsOf(x));
}

/** Decodes f16 codes to f32 (exact). */
export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const lut = f16Lut();
  const out = u32View(dst);
  for (let i = 0; i < src.length; i++) out[i] = lut[src[i]];
  return dst;
}

/** Encodes f32 values as f16 codes, round-to-nearest-even. */
export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) dst[i] = f16FromF32Bits(bits[i]);
  return dst;
}

// ---------------------------------------------------------------------------------------------------------------
// f8e4m3: OCP E4M3FN — bias 7, no infinities, max 448, NaN = S.1111.111.

/** Largest finite f8e4m3 value. */
export const F8E4M3_MAX = 448;

function f8ToF32Bits(c: number): number {
  const s = (c & 0x80) << 24;
  const e = (c >>> 3) & 0xf;
  const m = c & 7;
  if (e === 15 && m === 7) return (s | 0x7fc00000) >>> 0;
  if (e !== 0) return (s | ((e + 120) << 23) | (m << 20)) >>> 0;
  if (m === 0) return s >>> 0;
  // Subnormal m·2^-9.
  let exp = 121;
  let mm = m;
  while ((mm & 8) === 0) {
    mm <<= 1;
    exp--;
  }
  return (s | (exp << 23) | ((mm & 7) << 20)) >>> 0;
}

function f8FromF32Bits(x: number): number {
  const s = (x >>> 24) & 0x80;
  const a = x & 0x7fffffff;
  if (a > 0x7f800000) return s | 0x7f;
  // Saturate: |x| ≥ 448 (including ±inf) encodes as ±448, as CUDA's __NV_SATFINITE does.
  if (a >= 0x43e00000) return s | 0x7e;
  const e = a >>> 23;
  if (e < 117) return s; // below 2^-10: rounds to zero (2^-10 itself ties to even zero)
  const m = a & 0x7fffff;
  if (e <= 120) {
    // Subnormal result in units of 2^-9: drop (141 - e) bits of the 24-bit significand.
    const sig = m | 0x800000;
    const shift = 141 - e;
    const half = 1 << (shift - 1);
    const rem = sig & ((1 << shift) - 1);
    let h = sig >>> shift;
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return s | h;
  }
  let h = ((e - 120) << 3) | (m >>> 20);
  const rem = m & 0xfffff;
  if (rem > 0x80000 || (rem === 0x80000 && (h & 1) === 1)) h++; // cannot reach 0x7f: |x| < 448 here
  return s | h;
}

const F8_LUT = new Uint32Array(256);
for (let c = 0; c < 256; c++) F8_LUT[c] = f8ToF32Bits(c);
/** f32 value of each FP8 E4M3 code (NaN codes decode to NaN). */
export const F8_VALUES = new Float32Array(F8_LUT.buffer);

/** Decodes one f8e4m3 code (0..255) to a number. @example `decodeF8e4m3(0x7e) // 448` */
export function decodeF8e4m3(code: number): number {
  return F8_VALUES[code & 0xff];
}

/** Encodes a number as an f8e4m3 code: RNE, saturating at ±448, NaN → 0x7f/0xff. @example `encodeF8e4m3(1) // 0x38` */
export function encodeF8e4m3(x: number): number {
  return f8FromF32Bits(bitsOf(x));
}

/** Decodes f8e4m3 codes to f32 (exact). */
export function f8e4m3ToF32(src: Uint8Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const out = u32View(dst);
  for (let i = 0; i < src.length; i++) out[i] = F8_LUT[src[i]];
  return dst;
}

/** Encodes f32 values as f8e4m3 codes (RNE, saturating). */
export function f32ToF8e4m3(src: Float32Array, dst: Uint8Array = new Uint8Array(src.length)): Uint8Array {
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) dst[i] = f8FromF32Bits(bits[i]);
  return dst;
}

// ---------------------------------------------------------------------------------------------------------------
// Raw checkpoint bytes ↔ f32.

/** Element dtypes that decode to f32 one element at a time (no block scales). */
export type FloatDType = "f32" | "bf16" | "f16" | "f8e4m3";

/** Bytes per element of each {@link FloatDType}. */
export const FLOAT_BYTES: Readonly<Record<FloatDType, number>> = { f32: 4, bf16: 2, f16: 2, f8e4m3: 1 };

function aligned(bytes: Uint8Array, align: number): Uint8Array {
  // Typed views need an aligned offset; a sub-view of a bigger buffer may not have one.
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

/**
 * Decodes little-endian checkpoint bytes of a float dtype to a fresh Float32Array (f32 input is copied).
 *
 * @example
 * ```ts
 * const w = bytesToF32(await reader.read("norm.weight"), "bf16");
 * ```
 */
export function bytesToF32(bytes: Uint8Array, dtype: FloatDType, dst?: Float32Array): Float32Array {
  const size = FLOAT_BYTES[dtype];
  if (size === undefined) throw new RangeError(`bytesToF32: ${dtype} is not an element-wise float dtype`);
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`bytesToF32: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const b = aligned(bytes, size), n = b.byteLength / size;
  switch (dtype) {
    case "f32": {
      const src = new Float32Array(b.buffer, b.byteOffset, n);
      if (dst) return (dst.set(src), dst);
      return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
    }
    case "bf16":
      return bf16ToF32(new Uint16Array(b.buffer, b.byteOffset, n), dst);
    case "f16":
      return f16ToF32(new Uint16Array(b.buffer, b.byteOffset, n), dst);
    case "f8e4m3":
      return f8e4m3ToF32(b, dst);
  }
}

/** Encodes f32 values as little-endian bytes of a float dtype (RNE; f8e4m3 saturates). */
export function f32ToBytes(values: Float32Array, dtype: FloatDType): Uint8Array {
  switch (dtype) {
    case "f32":
      return new Uint8Array(values.slice().buffer);
    case "bf16":
      return new Uint8Array(f32ToBf16(values).buffer);
    case "f16":
      return new Uint8Array(f32ToF16(values).buffer);
    case "f8e4m3":
      return f32ToF8e4m3(values);
    default:
      throw new RangeError(`f32ToBytes: ${dtype as DType} is not an element-wise float dtype`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Scaled FP8: HF `weight_scale_inv`, Mistral `qscale_weight`. W = fp8 · scale (a multiply).

/**
 * Dequantizes FP8 weights with one scale per contiguous block: a number (one scale per tensor) or an array of k
 * scales splitting the tensor into k equal blocks — `[E,1,1]` expert scales give one scale per expert, `[out,1]`
 * one per row.
 *
 * @example
 * ```ts
 * // experts [E, out, in] with scale [E, 1, 1]
 * const w = dequantizeFp8(codes, bytesToF32(scaleBytes, "f32"));
 * ```
 */
export function dequantizeFp8(
  codes: Uint8Array,
  scale: number | ArrayLike<number>,
  dst: Float32Array = new Float32Array(codes.length),
): Float32Array {
  const scales = typeof scale === "number" ? [scale] : scale;
  const k = scales.length;
  if (k === 0 || codes.length % k !== 0) {
    throw new RangeError(`dequantizeFp8: ${codes.length} elements do not split into ${k} scale blocks`);
  }
  const block = codes.length / k;
  for (let b = 0; b < k; b++) {
    const s = Math.fround(scales[b]);
    const end = (b + 1) * block;
    for (let i = b * block; i < end; i++) dst[i] = F8_VALUES[codes[i]] * s;
  }
  return dst;
}

/** FP8 codes with their block scales (`W ≈ fp8 · scale`). */
export interface Fp8Tensor {
  /** f8e4m3 codes, same element order as the input. */
  codes: Uint8Array;
  /** One f32 scale per contiguous block. */
  scales: Float32Array;
}

/** Largest magnitude of `values` (0 when empty); `amax` carries a running maximum across calls. */
export function absMax(values: Float32Array, amax = 0): number {
  for (let i = 0; i < values.length; i++) amax = Math.max(amax, Math.abs(values[i]));
  return amax;
}

/** The FP8 scale of a block whose largest magnitude is `amax`: amax/448 in f32, 1 for an all-zero block. */
export function fp8BlockScale(amax: number): number {
  return amax > 0 ? Math.fround(amax / F8E4M3_MAX) : 1;
}

/**
 * Encodes `values / scale` as f8e4m3 codes into `out`, the quotient rounded to f32 before encoding. Element-wise,
 * so a block may be encoded in any number of pieces with the same result ({@link quantizeFp8} is one piece).
 */
export function encodeFp8Scaled(values: Float32Array, scale: number, out: Uint8Array, tmp?: Float32Array): void {
  const q = tmp && tmp.length >= values.length ? tmp.subarray(0, values.length) : new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) q[i] = values[i] / scale;
  f32ToF8e4m3(q, out);
}

/** Quantizes to FP8 with `blocks` equal contiguous blocks, scale = amax/448 (1 for an all-zero block). */
export function quantizeFp8(values: Float32Array, blocks = 1): Fp8Tensor {
  if (blocks <= 0 || values.length % blocks !== 0) {
    throw new RangeError(`quantizeFp8: ${values.length} elements do not split into ${blocks} blocks`);
  }
  const block = values.length / blocks;
  const codes = new Uint8Array(values.length);
  const scales = new Float32Array(blocks);
  const tmp = new Float32Array(block);
  for (let b = 0; b < blocks; b++) {
    const part = values.subarray(b * block, (b + 1) * block);
    const s = fp8BlockScale(absMax(part));
    scales[b] = s;
    encodeFp8Scaled(part, s, codes.subarray(b * block, (b + 1) * block), tmp);
  }
  return { codes, scales };
}

// ---------------------------------------------------------------------------------------------------------------
// NVFP4 (compressed-tensors): weight_packed u8 [out, in/2], weight_scale f8e4m3 [out, in/16],
// weight_global_scale f32[1] as a divisor: W = e2m1 · (weight_scale / weight_global_scale).

/** Elements per NVFP4 scale block. */
export const NVFP4_BLOCK = 16;

/** E2M1 magnitudes for codes 0..7; bit 3 is the sign. */
export const E2M1_VALUES: readonly number[] = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

const E2M1_LUT = new Float32Array(16);
for (let c = 0; c < 16; c++) E2M1_LUT[c] = (c & 8 ? -1 : 1) * E2M1_VALUES[c & 7];

/** Decodes one 4-bit E2M1 code. @example `decodeE2m1(0xf) // -6` */
export function decodeE2m1(code: number): number {
  return E2M1_LUT[code & 15];
}

/**
 * Encodes a number as a 4-bit E2M1 code: RNE with the same boundaries as compressed-tensors' `cast_to_fp4`
 * (≤0.25 → 0, <0.75 → 0.5, ≤1.25 → 1, <1.75 → 1.5, ≤2.5 → 2, <3.5 → 3, ≤5 → 4, else 6). Zero and NaN give code 0.
 */
export function encodeE2m1(x: number): number {
  const a = Math.abs(x);
  let c: number;
  if (!(a > 0.25)) c = 0; // also NaN
  else if (a < 0.75) c = 1;
  else if (a <= 1.25) c = 2;
  else if (a < 1.75) c = 3;
  else if (a <= 2.5) c = 4;
  else if (a < 3.5) c = 5;
  else if (a <= 5) c = 6;
  else c = 7;
  return c !== 0 && x < 0 ? c | 8 : c;
}

/** An NVFP4 weight as stored by compressed-tensors. */
export interface Nvfp4Tensor {
  /** `[rows, cols/2]`: element 2j in the low nibble, 2j+1 in the high nibble. */
  packed: Uint8Array;
  /** `[rows, cols/16]` f8e4m3 codes. */
  scale: Uint8Array;
  /** The divisor `weight_global_scale`. */
  globalScale: number;
}

function checkNvfp4Dims(rows: number, cols: number): void {
  if (cols % NVFP4_BLOCK !== 0) throw new RangeError(`NVFP4: input dim ${cols} is not a multiple of ${NVFP4_BLOCK}`);
  if (rows < 0 || !Number.isInteger(rows)) throw new RangeError(`NVFP4: bad row count ${rows}`);
}

/**
 * The f32 multiplier of one NVFP4 block: its f8e4m3 `weight_scale` code divided by the tensor's `weight_global_scale`,
 * both in f32 (`fround(scale / fround(global))`). Every NVFP4 decode goes through this, so a weight whose block scales
 * are kept folded (canonical weights) decodes bit-identically to one decoded from the stored codes.
 *
 * @example
 * ```ts
 * nvfp4BlockScale(0x40, 4); // f8 0x40 = 2, divided by the global scale 4: 0.5
 * ```
 */
export function nvfp4BlockScale(code: number, globalScale: number): number {
  return Math.fround(F8_VALUES[code & 0xff] / Math.fround(globalScale));
}

/**
 * Folds stored block scales into f32 multipliers: `out[b] = nvfp4BlockScale(codes[b], globals[j])` where global `j`
 * covers the `j`-th of `globals.length` equal runs of blocks (one run per source linear: a fused gate ‖ up has two,
 * a `[E, …]` expert tensor one per expert).
 */
export function foldNvfp4Scales(codes: Uint8Array, globals: ArrayLike<number>): Float32Array {
  const n = globals.length;
  if (n === 0 || codes.length % n !== 0) {
    throw new RangeError(`NVFP4: ${codes.length} block scales do not split into ${n} global-scale runs`);
  }
  const run = codes.length / n, out = new Float32Array(codes.length);
  for (let b = 0; b < codes.length; b++) out[b] = nvfp4BlockScale(codes[b], globals[Math.floor(b / run)]);
  return out;
}

/**
 * Inverts {@link foldNvfp4Scales}: the f8e4m3 code of each folded block scale. Exact for every value the fold can
 * produce (distinct f8 values stay distinct after the division); throws a RangeError for any other value.
 */
export function unfoldNvfp4Scales(scales: Float32Array, globals: ArrayLike<number>): Uint8Array {
  const n = globals.length;
  if (n === 0 || scales.length % n !== 0) {
    throw new RangeError(`NVFP4: ${scales.length} block scales do not split into ${n} global-scale runs`);
  }
  const run = scales.length / n, out = new Uint8Array(scales.length);
  for (let b = 0; b < scales.length; b++) {
    const g = globals[Math.floor(b / run)], s = scales[b];
    // The nearest f8 of s·g is the code but for the rounding of the division; its neighbours cover that.
    const guess = encodeF8e4m3(s * Math.fround(g));
    let code = -1;
    for (const c of [guess, guess + 1, guess - 1]) {
      if (c >= 0 && c < 256 && Object.is(nvfp4BlockScale(c, g), s)) code = c;
    }
    for (let c = 0; c < 256 && code < 0; c++) if (Object.is(nvfp4BlockScale(c, g), s)) code = c;
    if (code < 0) throw new RangeError(`NVFP4: block scale ${s} is no f8e4m3 value divided by ${g} (block ${b})`);
    out[b] = code;
  }
  return out;
}

/**
 * Decodes NVFP4 codes whose block scales are already folded ({@link foldNvfp4Scales}): `W = e2m1 · scales[b]`, the
 * same f32 product as {@link dequantizeNvfp4}, so both give identical bits.
 */
export function dequantizeNvfp4Folded(
  packed: Uint8Array,
  scales: ArrayLike<number>,
  dst: Float32Array = new Float32Array(packed.length * 2),
): Float32Array {
  if (packed.length * 2 !== scales.length * NVFP4_BLOCK || dst.length !== packed.length * 2) {
    throw new RangeError(`NVFP4: ${packed.length} packed bytes do not fit ${scales.length} blocks of ${NVFP4_BLOCK}`);
  }
  for (let b = 0; b < scales.length; b++) {
    const s = scales[b], p0 = b * (NVFP4_BLOCK / 2), o0 = b * NVFP4_BLOCK;
    for (let j = 0; j < NVFP4_BLOCK / 2; j++) {
      const byte = packed[p0 + j];
      dst[o0 + 2 * j] = E2M1_LUT[byte & 15] * s;
      dst[o0 + 2 * j + 1] = E2M1_LUT[byte >>> 4] * s;
    }
  }
  return dst;
}

/**
 * Dequantizes an NVFP4 weight `[rows, cols]` to f32: `W = e2m1 · fround(scale / global)`, the product rounded to
 * f32, as compressed-tensors does in f32.
 *
 * @example
 * ```ts
 * const w = dequantizeNvfp4({ packed, scale, globalScale: g[0] }, out, inDim); // Float32Array [out·in]
 * ```
 */
export function dequantizeNvfp4(
  t: Nvfp4Tensor,
  rows: number,
  cols: number,
  dst: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  checkNvfp4Dims(rows, cols);
  const blocks = cols / NVFP4_BLOCK;
  if (t.packed.length !== rows * cols / 2 || t.scale.length !== rows * blocks) {
    throw new RangeError(
      `NVFP4: packed ${t.packed.length} / scale ${t.scale.length} bytes do not fit [${rows}, ${cols}]`,
    );
  }
  for (let b = 0; b < rows * blocks; b++) {
    const s = nvfp4BlockScale(t.scale[b], t.globalScale);
    const p0 = b * (NVFP4_BLOCK / 2);
    const o0 = b * NVFP4_BLOCK;
    for (let j = 0; j < NVFP4_BLOCK / 2; j++) {
      const byte = t.packed[p0 + j];
      dst[o0 + 2 * j] = E2M1_LUT[byte & 15] * s;
      dst[o0 + 2 * j + 1] = E2M1_LUT[byte >>> 4] * s;
    }
  }
  return dst;
}

/**
 * Quantizes `[rows, cols]` to NVFP4 as compressed-tensors does: global = 448·6 / amax; per 16-block
 * scale = fp8(amax_block / 6 · global); codes = E2M1(x / (scale / global)). For tests and tiny checkpoints.
 */
export function quantizeNvfp4(values: Float32Array, rows: number, cols: number): Nvfp4Tensor {
  checkNvfp4Dims(rows, cols);
  const globalScale = nvfp4GlobalScale(absMax(values));
  const packed = new Uint8Array(rows * cols / 2);
  const scale = new Uint8Array(rows * cols / NVFP4_BLOCK);
  quantizeNvfp4Blocks(values, globalScale, packed, scale);
  return { packed, scale, globalScale };
}

/** The NVFP4 global scale (a divisor) of a tensor whose largest magnitude is `amax`: 448·6 / amax, 1 for zeros. */
export function nvfp4GlobalScale(amax: number): number {
  return amax > 0 ? Math.fround((F8E4M3_MAX * 6) / amax) : 1;
}

/**
 * Quantizes whole 16-element blocks of `values` under `globalScale` (as {@link quantizeNvfp4} does after choosing
 * it): E2M1 codes into `packed` (`values.length / 2` bytes) and f8e4m3 block scale codes into `scale`. Block by
 * block, so a tensor may be quantised in pieces of whole blocks with the same result.
 */
export function quantizeNvfp4Blocks(
  values: Float32Array,
  globalScale: number,
  packed: Uint8Array,
  scale: Uint8Array,
): void {
  const nBlocks = values.length / NVFP4_BLOCK;
  if (!Number.isInteger(nBlocks) || packed.length !== values.length / 2 || scale.length !== nBlocks) {
    throw new RangeError(`NVFP4: ${values.length} values do not fit ${packed.length} packed / ${scale.length} scales`);
  }
  for (let b = 0; b < nBlocks; b++) {
    const o0 = b * NVFP4_BLOCK;
    let bmax = 0;
    for (let j = 0; j < NVFP4_BLOCK; j++) bmax = Math.max(bmax, Math.abs(values[o0 + j]));
    const code = encodeF8e4m3(Math.fround(Math.fround(bmax / 6) * globalScale));
    scale[b] = code;
    const eff = Math.fround(F8_VALUES[code] / globalScale);
    for (let j = 0; j < NVFP4_BLOCK; j += 2) {
      const lo = eff > 0 ? encodeE2m1(values[o0 + j] / eff) : 0;
      const hi = eff > 0 ? encodeE2m1(values[o0 + j + 1] / eff) : 0;
      packed[(o0 + j) >>> 1] = lo | (hi << 4);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// q8: our CPU format, like llama.cpp Q8_0 but with an f32 scale (exact, no f16 decode in the kernel's inner loop;
// 9 bits per weight, as graph/dtype.ts counts). Blocks of 32 along the input (last) dim: x ≈ q · scale.

/** Elements per q8 block. */
export const Q8_BLOCK = 32;

/** A q8 weight `[rows, cols]`. */
export interface Q8Tensor {
  /** `[rows, cols]` int8 values. */
  values: Int8Array;
  /** `[rows, cols/32]` f32 scales, one per block of 32 consecutive inputs. */
  scales: Float32Array;
}

/**
 * Quantizes `[rows, cols]` f32 to q8 as llama.cpp's `quantize_row_q8_0_ref` does: scale = amax/127,
 * q = roundf(x · (1/scale)) (half away from zero).
 *
 * @example
 * ```ts
 * const q = quantizeQ8(w, 4096, 4096);
 * const back = dequantizeQ8(q, 4096, 4096);
 * ```
 */
export function quantizeQ8(values: Float32Array, rows: number, cols: number): Q8Tensor {
  if (cols % Q8_BLOCK !== 0) throw new RangeError(`quantizeQ8: input dim ${cols} is not a multiple of ${Q8_BLOCK}`);
  if (values.length !== rows * cols) throw new RangeError(`quantizeQ8: ${values.length} values ≠ ${rows}×${cols}`);
  const out = new Int8Array(values.length);
  const scales = new Float32Array(values.length / Q8_BLOCK);
  for (let b = 0; b < scales.length; b++) {
    const o0 = b * Q8_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_BLOCK; j++) amax = Math.max(amax, Math.abs(values[o0 + j]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    scales[b] = d;
    for (let j = 0; j < Q8_BLOCK; j++) {
      const v = Math.fround(values[o0 + j] * id);
      out[o0 + j] = v < 0 ? -Math.round(-v) : Math.round(v); // roundf: half away from zero
    }
  }
  return { values: out, scales };
}

/** Dequantizes q8 `[rows, cols]` to f32: x = q · scale. */
export function dequantizeQ8(
  t: Q8Tensor,
  rows: number,
  cols: number,
  dst: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  if (cols % Q8_BLOCK !== 0) throw new RangeError(`dequantizeQ8: input dim ${cols} is not a multiple of ${Q8_BLOCK}`);
  if (t.values.length !== rows * cols || t.scales.length !== rows * cols / Q8_BLOCK) {
    throw new RangeError(
      `dequantizeQ8: ${t.values.length} values / ${t.scales.length} scales do not fit [${rows}, ${cols}]`,
    );
  }
  for (let b = 0; b < t.scales.length; b++) {
    const d = t.scales[b];
    const o0 = b * Q8_BLOCK;
    for (let j = 0; j < Q8_BLOCK; j++) dst[o0 + j] = t.values[o0 + j] * d;
  }
  return dst;
}

// ---------------------------------------------------------------------------------------------------------------
// q4: our CPU 4-bit format, llama.cpp Q4_0's numbers (blocks of 32 along the input dim, one f16 scale, codes
// u ∈ 0..15 for q = u − 8) in a layout made for WASM SIMD: each block is 16 bytes whose byte j holds element j in
// its low nibble and element j + 16 in its high nibble, so one 16-byte load, an `and 15` and a `shr 4` give the 32
// codes in order (bench/README.md says why this layout). A row of K inputs takes ceil(K/32) blocks; a short last
// block is padded with code 8 (zero). x ≈ (u − 8) · scale.

/** Elements per q4 block. */
export const Q4_BLOCK = 32;

/** Bytes of the codes of one K-row of `cols` inputs in q4: 16 per block of 32, the last block padded. */
export function q4RowBytes(cols: number): number {
  return 16 * Math.ceil(cols / Q4_BLOCK);
}

/** A q4 weight `[rows, cols]`. */
export interface Q4Tensor {
  /** `[rows, ceil(cols/32), 16]` packed codes (see the section's comment). */
  packed: Uint8Array;
  /** `[rows, ceil(cols/32)]` scales, each an f16 value (exact in f32). */
  scales: Float32Array;
}

/**
 * Quantizes `[rows, cols]` f32 to q4 as llama.cpp's `quantize_row_q4_0_ref` chooses its numbers: per block, `m`
 * the value of largest magnitude, scale d = f16(m / −8), u = clamp(round(x / d) + 8, 0, 15) (half away from zero),
 * so m itself is code 0 exactly. Unlike Q4_0 the codes are taken against the stored (f16-rounded) scale, the one
 * the kernels multiply by. Any `cols` (a short last block is padded with zeros).
 *
 * @example
 * ```ts
 * const q = quantizeQ4(w, 4096, 4096);
 * const back = dequantizeQ4(q, 4096, 4096);
 * ```
 */
export function quantizeQ4(values: Float32Array, rows: number, cols: number): Q4Tensor {
  if (values.length !== rows * cols) throw new RangeError(`quantizeQ4: ${values.length} values ≠ ${rows}×${cols}`);
  const nb = Math.ceil(cols / Q4_BLOCK);
  const packed = new Uint8Array(rows * nb * 16), scales = new Float32Array(rows * nb);
  const u = new Uint8Array(Q4_BLOCK);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const o0 = r * cols + b * Q4_BLOCK, len = Math.min(Q4_BLOCK, cols - b * Q4_BLOCK);
      let m = 0;
      for (let j = 0; j < len; j++) if (Math.abs(values[o0 + j]) > Math.abs(m)) m = values[o0 + j];
      const d = m === 0 ? 0 : decodeF16(encodeF16(m / -8)); // +0 for an all-zero block
      scales[r * nb + b] = d;
      const id = d !== 0 ? 1 / d : 0;
      for (let j = 0; j < Q4_BLOCK; j++) {
        const v = j < len ? values[o0 + j] * id : 0;
        const q = v < 0 ? -Math.round(-v) : Math.round(v);
        u[j] = Math.max(0, Math.min(15, q + 8));
      }
      const p0 = (r * nb + b) * 16;
      for (let j = 0; j < 16; j++) packed[p0 + j] = u[j] | (u[j + 16] << 4);
    }
  }
  return { packed, scales };
}

/** Dequantizes q4 `[rows, cols]` to f32: x = (u − 8) · scale (exact in f32). */
export function dequantizeQ4(
  t: Q4Tensor,
  rows: number,
  cols: number,
  dst: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  const nb = Math.ceil(cols / Q4_BLOCK);
  if (t.packed.length !== rows * nb * 16 || t.scales.length !== rows * nb || dst.length < rows * cols) {
    throw new RangeError(
      `dequantizeQ4: ${t.packed.length} packed bytes / ${t.scales.length} scales do not fit [${rows}, ${cols}]`,
    );
  }
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const d = t.scales[r * nb + b], p0 = (r * nb + b) * 16, o0 = r * cols + b * Q4_BLOCK;
      const len = Math.min(Q4_BLOCK, cols - b * Q4_BLOCK);
      for (let j = 0; j < len; j++) {
        const byte = t.packed[p0 + (j & 15)];
        dst[o0 + j] = ((j < 16 ? byte & 15 : byte >>> 4) - 8) * d;
      }
    }
  }
  return dst;
}
