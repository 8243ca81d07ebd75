/**
 * `deno task build:web`: bundles the chat page (and the in-page engine's worker) with esbuild into `web/dist/`, the
 * committed files the server serves. `--check` builds into memory and compares with the committed files instead
 * (CI), as `build:kernels:check` does for the wasm kernels.
 *
 * npm packages (marked, dompurify, and the library's own) come from Deno's npm cache through web/esbuild_deno.ts's
 * plugin, so there is no node_modules. Minified output names no file paths, so the bundle is the same bytes wherever
 * the cache lives.
 *
 * @module
 */

import * as esbuild from "esbuild";
import { buildWorker } from "./build_worker.ts";
import { denoImports } from "./esbuild_deno.ts";
// Imported so that Deno fetches them into its npm cache before esbuild reads their files.
import "marked";
import "dompurify";

/** What gets bundled: source (relative to web/) → output file in web/dist/. Append new entries here. */
export const ENTRIES: { in: string; out: string }[] = [
  { in: "page/main.ts", out: "page.js" },
  { in: "page.css", out: "page.css" },
];

/** Files copied as they are. */
const STATIC = ["index.html"];

/** The page script's budget, gzipped (issue 19). */
const PAGE_BUDGET = 150 * 1024;

const web = new URL("./", import.meta.url);
const dist = new URL("./dist/", web);

async function gzipSize(bytes: Uint8Array): Promise<number> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return (await new Response(stream).arrayBuffer()).byteLength;
}

/** Builds every entry into memory: output name → bytes. */
export async function buildWeb(): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  try {
    for (const entry of ENTRIES) {
      const result = await esbuild.build({
        entryPoints: [new URL(entry.in, web).pathname],
        bundle: true,
        minify: true,
        platform: "browser",
        format: "esm",
        target: "es2022",
        charset: "utf8",
        legalComments: "eof",
        write: false,
        plugins: [denoImports()],
        logLevel: "silent",
      });
      out.set(entry.out, result.outputFiles[0].contents);
    }
  } finally {
    await esbuild.stop();
  }
  for (const name of STATIC) out.set(name, await Deno.readFile(new URL(name, web)));
  for (const [name, bytes] of await buildWorker()) out.set(name, bytes);
  return out;
}

async function main(check: boolean): Promise<number> {
  const files = await buildWeb();
  let stale = 0;
  for (const [name, bytes] of files) {
    const target = new URL(name, dist);
    const gz = await gzipSize(bytes);
    const size = `${bytes.length} bytes, ${gz} gzipped`;
    if (name === "page.js" && gz > PAGE_BUDGET) {
      console.error(`web/dist/page.js is ${gz} bytes gzipped, over the budget of ${PAGE_BUDGET}`);
      stale = 1;
    }
    if (check) {
      const committed = await Deno.readFile(target).catch(() => null);
      if (committed !== null && committed.length === bytes.length && committed.every((b, i) => b === bytes[i])) {
        console.log(`web/dist/${name} is up to date (${size})`);
      } else {
        console.error(`web/dist/${name} is stale: run deno task build:web and commit the result`);
        stale = 1;
      }
    } else {
      await Deno.mkdir(dist, { recursive: true });
      await Deno.writeFile(target, bytes);
      console.log(`built web/dist/${name} (${size})`);
    }
  }
  return stale;
}

if (import.meta.main) Deno.exit(await main(Deno.args.includes("--check")));
