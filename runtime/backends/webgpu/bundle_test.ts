/**
 * The `webgpu` backend is browser-safe: bundled with esbuild for the browser (no Node or Deno built-ins), its
 * code never names `Deno.`, so a page can import the same module. Needs no GPU.
 */
import * as esbuild from "esbuild";
import { assert, assertEquals } from "../../../tests/assert.ts";

Deno.test("webgpu: the backend bundles for the browser and never calls Deno", async () => {
  const entry = new URL("./backend.ts", import.meta.url).pathname;
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      logLevel: "silent",
    });
    assertEquals(result.errors, []);
    const text = result.outputFiles[0].text;
    // Its kernels and the adapter lookup are in it (the bundle is the backend, not an empty shell)…
    for (const needle of ["navigator", "requestAdapter", "rms_norm", "@compute"]) {
      assert(text.includes(needle), `the bundle lacks ${needle}`);
    }
    // …and nothing Deno-only.
    const deno = text.match(/\bDeno\.\w+/g) ?? [];
    assertEquals(deno, [], `the bundle calls ${[...new Set(deno)].join(", ")}`);
  } finally {
    await esbuild.stop();
  }
});
