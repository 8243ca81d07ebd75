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
