/**
 * Whether the `webgpu` tests run here. They run wherever `navigator.gpu` finds an adapter (lavapipe, Mesa's
 * software Vulkan, on CI). Without one they are ignored, with one printed line saying why, except under `CI=true`:
 * `.ci/run` installs lavapipe, so there a missing adapter must fail the tests rather than skip them.
 *
 * @module
 */

import { webgpuBackend } from "../runtime/backends/webgpu/backend.ts";

/** Why the probe found nothing (undefined when it found an adapter). */
export const WEBGPU_MISSING: string | undefined = await webgpuBackend.probe().then(
  (s) => s > 0 ? undefined : "the probe scored 0",
  (e) => (e as Error).message,
);

/** True under CI, where a missing adapter is a failure. */
export const IN_CI = Deno.env.get("CI") === "true";

/** `ignore` for a webgpu test: only where no adapter exists and this is not CI. */
export const WEBGPU_IGNORE = WEBGPU_MISSING !== undefined && !IN_CI;

if (WEBGPU_IGNORE) console.log(`webgpu tests skipped: ${WEBGPU_MISSING}`);

/** What {@link instrumentedAdapter} gives: the adapter, and the devices it made (for tests to destroy). */
export type Instrumented = { adapter: GPUAdapter; devices: GPUDevice[] };

/**
 * The real adapter, whose devices are kept in `devices` and, while `oom()` says so for a buffer descriptor, report
 * that buffer's creation as out of memory through the `out-of-memory` error scope around it (as a device that ran
 * out would; the buffer itself is made, so nothing else breaks).
 */
export async function instrumentedAdapter(
  oom: (d: GPUBufferDescriptor) => boolean = () => false,
): Promise<Instrumented> {
  const adapter = (await navigator.gpu.requestAdapter())!;
  const devices: GPUDevice[] = [];
  const wrapped = Object.create(adapter);
  wrapped.requestDevice = async (descriptor?: GPUDeviceDescriptor) => {
    const device = await adapter.requestDevice(descriptor);
    devices.push(device);
    // Per open scope: whether an injected out-of-memory happened inside it.
    const scopes: { filter: GPUErrorFilter; oom: boolean }[] = [];
    const push = device.pushErrorScope.bind(device), pop = device.popErrorScope.bind(device);
    const create = device.createBuffer.bind(device);
    device.pushErrorScope = (filter) => (scopes.push({ filter, oom: false }), push(filter));
    device.popErrorScope = () => {
      const scope = scopes.pop();
      const real = pop();
      if (!scope?.oom) return real;
      return real.then((e) => e ?? ({ message: "injected out-of-memory" } as GPUError));
    };
    device.createBuffer = (d: GPUBufferDescriptor) => {
      const scope = scopes.findLast((s) => s.filter === "out-of-memory");
      if (scope && oom(d)) scope.oom = true;
      return create(d);
    };
    return device;
  };
  for (const k of ["info", "features", "limits"] as const) Object.defineProperty(wrapped, k, { value: adapter[k] });
  return { adapter: wrapped, devices };
}

/**
 * An adapter (the real one underneath) whose devices count the workgroup dispatches of each kernel, by its WGSL
 * source: tests see which kernel variant ran (a kernel's first line names it).
 */
export async function dispatchCountingAdapter(): Promise<{ adapter: GPUAdapter; dispatches: Map<string, number> }> {
  const adapter = (await navigator.gpu.requestAdapter())!;
  const dispatches = new Map<string, number>(), code = new WeakMap<object, string>();
  const requestDevice = adapter.requestDevice.bind(adapter);
  const wrapped = Object.create(adapter);
  wrapped.requestDevice = async (descriptor?: GPUDeviceDescriptor) => {
    const device = await requestDevice(descriptor);
    const module = device.createShaderModule.bind(device), pipeline = device.createComputePipeline.bind(device);
    const encoder = device.createCommandEncoder.bind(device);
    device.createShaderModule = (d) => {
      const m = module(d);
      code.set(m, d.code);
      return m;
    };
    device.createComputePipeline = (d) => {
      const p = pipeline(d);
      code.set(p, code.get(d.compute.module) ?? "");
      return p;
    };
    device.createCommandEncoder = (d) => {
      const e = encoder(d), begin = e.beginComputePass.bind(e);
      e.beginComputePass = (pd) => {
        const pass = begin(pd), set = pass.setPipeline.bind(pass), run = pass.dispatchWorkgroups.bind(pass);
        let current = "";
        pass.setPipeline = (p) => (current = code.get(p) ?? "", set(p));
        pass.dispatchWorkgroups = (x, y, z) => {
          dispatches.set(current, (dispatches.get(current) ?? 0) + 1);
          run(x, y, z);
        };
        return pass;
      };
      return e;
    };
    return device;
  };
  for (const k of ["info", "features", "limits"] as const) Object.defineProperty(wrapped, k, { value: adapter[k] });
  return { adapter: wrapped, dispatches };
}

/** Dispatches counted by {@link dispatchCountingAdapter} of the kernels whose source holds `marker` (a first-line name). */
export function dispatchesOf(dispatches: Map<string, number>, marker: string): number {
  let n = 0;
  for (const [code, count] of dispatches) if (code.includes(marker)) n += count;
  return n;
}
