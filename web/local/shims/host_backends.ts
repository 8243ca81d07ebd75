/**
 * The in-page engine's stand-ins for the backends that only run under Deno (`onnx`: onnxruntime-node; `cuda`: the
 * driver through `Deno.dlopen`): web/build_worker.ts puts these in the browser bundle instead of their modules, so
 * the page does not carry their code. Probing says why they are absent; the registry then skips them.
 *
 * @module
 */

import type { BackendFactory } from "../../../runtime/backend.ts";

function hostOnly(name: string, needs: string): BackendFactory {
  const absent = () => new Error(`the ${name} backend needs ${needs}: it does not run in a browser page`);
  return {
    name,
    probe: () => Promise.reject(absent()),
    create: () => Promise.reject(absent()),
  };
}

/** `onnx` in a page: unavailable (onnxruntime-node is a native Node add-on). */
export const onnxBackend: BackendFactory = hostOnly("onnx", "onnxruntime-node under Deno");
/** `cuda` in a page: unavailable (the driver is reached through `Deno.dlopen`). */
export const cudaBackend: BackendFactory = hostOnly("cuda", "the NVIDIA driver through Deno.dlopen");
