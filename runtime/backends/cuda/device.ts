/**
 * The `cuda` backend's device description and kernel module: which committed build of kernels/cuda a device
 * loads (the sm_90 cubin on compute capability 9.x, else PTX for compute_90 or compute_80, JIT-compiled by the
 * driver), read next to this module.
 *
 * @module
 */

import { ATTR, type Driver } from "./ffi.ts";

/** A CUDA device as the backend reports it. */
export type DeviceInfo = {
  /** The `CUdevice` handle. */
  handle: number;
  name: string;
  /** Compute capability, e.g. 9.0 as `[9, 0]`. */
  capability: readonly [number, number];
  /** Bytes of device memory. */
  totalMem: number;
  multiprocessors: number;
  /** `cuDriverGetVersion` (13000 = CUDA 13.0). */
  driverVersion: number;
};

/** What device `ordinal` is. */
export function deviceInfo(d: Driver, ordinal: number): DeviceInfo {
  const handle = d.device(ordinal);
  return {
    handle,
    name: d.deviceName(handle),
    capability: [d.attribute(handle, ATTR.computeCapabilityMajor), d.attribute(handle, ATTR.computeCapabilityMinor)],
    totalMem: d.totalMem(handle),
    multiprocessors: d.attribute(handle, ATTR.multiprocessorCount),
    driverVersion: d.driverVersion(),
  };
}

/** The committed kernel file a device of compute capability `cc` loads (throws below 8.0). */
export function kernelFile(cc: readonly [number, number]): string {
  if (cc[0] === 9) return "kernels.sm_90.cubin";
  if (cc[0] > 9) return "kernels.compute_90.ptx";
  if (cc[0] === 8) return "kernels.compute_80.ptx";
  throw new Error(
    `the cuda backend needs a GPU of compute capability 8.0 or newer (Ampere, Hopper…); this one is ${cc.join(".")}`,
  );
}

/** Loads the kernels' module for `device` (the current context's). */
export function loadKernels(d: Driver, device: DeviceInfo): Deno.PointerValue {
  const file = kernelFile(device.capability);
  const bytes = Deno.readFileSync(new URL(`../../../kernels/cuda/${file}`, import.meta.url));
  return d.moduleLoadData(bytes);
}
