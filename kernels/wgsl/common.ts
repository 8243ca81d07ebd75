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
@group(0) @binding(0) var<storage, read_write> P: array<u32>;
fn pf(i: u32) -> f32 { return bitcast<f32>(P[i]); }
fn flatIndex(wid: vec3<u32>, lid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * ${WG}u + lid.x;
}
`;

/** The builtins of a one-thread-per-element entry point. */
export const ELEMENT_ARGS =
  `@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>`;

/** How a float tensor is stored on the device: f32, or bf16 packed two to a 32-bit word (low half first). */
export type Stored = "f32" | "bf16";

/**
 * A read-write storage binding `name` at `binding` holding floats stored as `dtype`, and `name_at(i)`, its element
 * `i` as f32 (a bf16 is the high half of an f32, so widening is a shift).
 */
export function floats(name: string, binding: number, dtype: Stored): string {
  if (dtype === "f32") {
    return `@group(0) @binding(${binding}) var<storage, read_write> ${name}: array<f32>;
fn ${name}_at(i: u32) -> f32 { return ${name}[i]; }
`;
  }
  return `@group(0) @binding(${binding}) var<storage, read_write> ${name}: array<u32>;
fn ${name}_at(i: u32) -> f32 {
  let w = ${name}[i >> 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u));
}
`;
}
