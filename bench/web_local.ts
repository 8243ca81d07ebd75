/**
 * The in-page engine in headless chromium: load time and greedy decode speed of a preset on WebGPU (SwiftShader,
 * Chromium's CPU adapter: a correctness target, not a fast one) and on wasm (WebGPU disabled), against the same
 * model through `createLLM` in Deno (wasm). The tokens must agree; a run where they do not is reported as such.
 *
 *   deno run -A bench/web_local.ts [--model demo] [--tokens 32]
 *
 * Load is page-measured from the `load` message to `loaded` (weights made in the page from the seed, kernels
 * compiled); decode is the whole chat call (prefill of the short prompt included) over its tokens.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createLLM } from "../engine/llm.ts";
import {
  browserAvailable,
  chatInPage,
  loadInPage,
  NO_WEBGPU_FLAGS,
  openPage,
  serveTestPage,
  WEBGPU_FLAGS,
} from "../tests/web_local_helpers.ts";

const args = parseArgs({
  args: Deno.args,
  options: { model: { type: "string", default: "demo" }, tokens: { type: "string", default: "32" } },
}).values;
const model = args.model!;
const n = Number(args.tokens);
const prompt = "Write a haiku about the north wind.";
if (!(browserAvailable())) Deno.exit(1);

const t0 = performance.now();
const llm = await createLLM(model, { backend: "wasm", quiet: true });
const denoLoad = performance.now() - t0;
const want: string[] = [];
const t1 = performance.now();
const request = {
  messages: [{ role: "user" as const, content: prompt }],
  temperature: 0,
  max_tokens: n,
  logprobs: true,
};
for await (const c of llm.chat(request)) for (const t of c.choices[0]?.logprobs?.content ?? []) want.push(t.token);
const denoChat = performance.now() - t1;
await llm.close();

const rows = [["Deno (createLLM, wasm)", "wasm", denoLoad, denoChat, want.length, "reference"]];
const server = serveTestPage();
for (
  const [label, flags] of [["page, SwiftShader WebGPU", WEBGPU_FLAGS], [
    "page, WebGPU disabled",
    NO_WEBGPU_FLAGS,
  ]] as const
) {
  const { browser, page } = await openPage(server.url, [...flags]);
  try {
    const s = performance.now();
    const backend = await loadInPage(page, model);
    const load = performance.now() - s;
    const got = await chatInPage(page, prompt, n);
    const same = JSON.stringify(got.tokens) === JSON.stringify(want) ? "same" : `DIFFERENT (${got.error ?? ""})`;
    rows.push([label, backend, load, got.ms, got.tokens.length, same]);
  } finally {
    await browser.close();
  }
}
await server.close();
console.log(`${model}, ${n} greedy tokens, prompt "${prompt}"\n`);
console.log("| where | backend | load (ms) | chat (ms) | tokens | tok/s | tokens vs Deno |");
console.log("|---|---|---:|---:|---:|---:|---|");
for (const [label, backend, load, chat, count, same] of rows) {
  const rate = (count as number) / ((chat as number) / 1000);
  console.log(
    `| ${label} | ${backend} | ${(load as number).toFixed(0)} | ${(chat as number).toFixed(0)} | ${count} | ${
      rate.toFixed(1)
    } | ${same} |`,
  );
}
