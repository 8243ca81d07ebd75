/**
 * Finding the WebGPU adapter the `webgpu` backend runs on, and telling a software one (lavapipe, SwiftShader, WARP)
 * from a GPU.
 *
 * @module
 */

/** What the factory found: the adapter and whether it is a software one. */
export type Found = { adapter: GPUAdapter; fallback: boolean; description: string };

/** `gpu`'s adapter (`navigator.gpu` by default), or an error naming what is missing. */
export async function findAdapter(gpu: GPU | undefined): Promise<Found> {
  if (!gpu) {
    throw new Error(
      "this runtime has no WebGPU (navigator.gpu is undefined): use a browser with WebGPU or Deno ≥ 2 " +
        "(which has it built in)",
    );
  }
  const adapter = await gpu.requestAdapter();
  if (!adapter) {
    throw new Error(
      "navigator.gpu.requestAdapter() found no GPU adapter: no Vulkan, Metal or D3D12 driver is usable here " +
        "(on Linux without a GPU, `apt-get install mesa-vulkan-drivers` gives the software lavapipe adapter)",
    );
  }
  return { adapter, fallback: isFallback(adapter), description: describe(adapter) };
}

/** Where the adapter says it is software: `info.isFallbackAdapter` (current spec) or the older adapter field. */
export function isFallback(adapter: GPUAdapter): boolean {
  const a = adapter as GPUAdapter & { isFallbackAdapter?: boolean; info?: { isFallbackAdapter?: boolean } };
  return a.info?.isFallbackAdapter ?? a.isFallbackAdapter ?? false;
}

/** The adapter's vendor, architecture and description, for messages and `inspect`. */
export function describe(adapter: GPUAdapter): string {
  const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  return [info?.vendor, info?.architecture, info?.description].filter((s) => s).join(" ") || "unknown adapter";
}
