/**
 * WGSL shared by every kernel of the `webgpu` backend: the parameter block and the flat invocation index.
 *
 * Every kernel binds its parameters at `@binding(0)` as a read-only array of u32 words (floats travel as their
 * bits, read with `bitcast<f32>`), then its tensors from `@binding(1)` on, each bound at the tensor's own offset:
 * a storage array needs no 16-byte stride and one parameter layout serves all kernels. Work is dispatched as a
 * 2-D grid of 64-wide workgroups, because one grid dimension stops at 65,535 groups; `flatIndex` undoes that.
 *
 * @module
 */

/** Threads per workgroup of the one-thread-per-element kernels. */
export const WG = 64;

/** The parameter binding and `flatIndex(wid, lid, nwg)`. */
export const PRELUDE = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
fn pf(i: u32) -> f32 { return bitcast<f32>(P[i]); }
fn flatIndex(wid: vec3<u32>, lid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * ${WG}u + lid.x;
}
`;

/** The builtins of a one-thread-per-element entry point. */
export const ELEMENT_ARGS =
  `@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>`;

/**
 * How a float tensor is stored on the device: f32; bf16 or f16 packed two to a 32-bit word (low half first); or a weight
 * quantised to bytes (FP8 E4M3 with one f32 scale per K-row, q8 int8 with one per 32 values of a K-row), its codes
 * packed four to a word, then its scales; NVFP4 E2M1 codes two to a byte (even value in the low nibble), one f32
 * scale per 16 values: the scales start at word `off`, K being the row length. q4 (Q4_0's numbers: codes 0..15
 * for (code − 8) · d, one f16 scale d per block of 32 along K) keeps the wasm layout of weights/codecs.ts: each
 * K-row is ⌈K/32⌉ blocks of 16 bytes (byte j holds element j in its low nibble, j + 16 in its high one; a short last
 * block padded), then from word `off` the f16 scales packed two to a word, each K-row's starting a word (a K-row of
 * an odd count of blocks ends with a half word of padding), so every row's codes and scales are whole words.
 */
export type Stored = "f32" | "bf16" | "f16" | "f8e4m3" | "q8" | "nvfp4" | "q4";

/**
 * A read-write storage binding `name` at `binding` holding floats stored as `dtype`, and `name_at(i)`, its element
 * `i` as f32: a bf16 is the high half of an f32, so widening is a shift; a quantised code is decoded and scaled.
 * `k` and `off` are WGSL expressions giving K and the first scale word (quantised weights only).
 */
export function floats(name: string, binding: number, dtype: Stored, k = "0u", off = "0u"): string {
  if (dtype === "f32") {
    return `@group(0) @binding(${binding}) var<storage, read_write> ${name}: array<f32>;
fn ${name}_at(i: u32) -> f32 { return ${name}[i]; }
`;
  }
  const decl = `@group(0) @binding(${binding}) var<storage, read_write> ${name}: array<u32>;
`;
  if (dtype === "bf16") {
    return decl + `fn ${name}_at(i: u32) -> f32 {
  let w = ${name}[i >> 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u));
}
`;
  }
  if (dtype === "f16") {
    // unpack2x16float is core WGSL: f16 storage needs no shader-f16 (which only f16 arithmetic would).
    return decl + `fn ${name}_at(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }
`;
  }
  if (dtype === "nvfp4") {
    // E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign; one scale per 16 values.
    return decl + `fn ${name}_at(i: u32) -> f32 {
  let c = (${name}[i >> 3u] >> ((i & 7u) * 4u)) & 15u;
  let e = (c >> 1u) & 3u;
  let m = f32(c & 1u);
  var v = select((2.0 + m) * f32(1u << e) * 0.25, m * 0.5, e == 0u);
  if ((c & 8u) != 0u) { v = -v; }
  return v * bitcast<f32>(${name}[${off} + i / 16u]);
}
`;
  }
  if (dtype === "q4") {
    // Element i is column c of K-row r; its block b = c / 32 holds it at byte c mod 16, high nibble from c mod 32 = 16.
    return decl + `fn ${name}_at(i: u32) -> f32 {
  let k = ${k};
  let nb = (k + 31u) / 32u;
  let r = i / k;
  let c = i - r * k;
  let b = c >> 5u;
  let w = ${name}[(r * nb + b) * 4u + ((c & 15u) >> 2u)];
  let q = (w >> ((c & 3u) * 8u + select(0u, 4u, (c & 16u) != 0u))) & 15u;
  let d = unpack2x16float(${name}[${off} + r * ((nb + 1u) >> 1u) + (b >> 1u)])[b & 1u];
  return (f32(q) - 8.0) * d;
}
`;
  }
  const byte = `let c = (${name}[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;`;
  if (dtype === "q8") {
    // One scale per 32 values of a K-row (K a multiple of 32), so the scale of value i is scale i / 32.
    return decl + `fn ${name}_at(i: u32) -> f32 {
  ${byte}
  return f32(i32(c << 24u) >> 24u) * bitcast<f32>(${name}[${off} + i / 32u]);
}
`;
  }
  // OCP E4M3FN: bias 7, subnormals m·2^-9, S.1111.111 is NaN; one scale per K-row.
  return decl + `fn ${name}_at(i: u32) -> f32 {
  ${byte}
  let s = (c & 0x80u) << 24u;
  let e = (c >> 3u) & 15u;
  let m = c & 7u;
  var v: f32;
  if (e == 15u && m == 7u) {
    v = bitcast<f32>(s | 0x7fc00000u);
  } else if (e != 0u) {
    v = bitcast<f32>(s | ((e + 120u) << 23u) | (m << 20u));
  } else {
    v = select(1.0, -1.0, s != 0u) * f32(m) * 0.001953125;
  }
  return v * bitcast<f32>(${name}[${off} + i / (${k})]);
}
`;
}
