import { assert, assertEquals } from "../tests/assert.ts";
import { decodeGraph, inspectModel, renderDot, renderJson, renderText } from "./inspect.ts";
import { resolveModel } from "./models/mod.ts";
import { main } from "../inspect.ts";
import { presetConfig } from "./models/mistral4.ts";
import { hfConfigJson, mistralParamsJson } from "../weights/make_checkpoint.ts";

/** Runs the CLI with console output captured. */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const [log, error] = [console.log, console.error];
  let out = "", err = "";
  console.log = (...a: unknown[]) => void (out += a.join(" ") + "\n");
  console.error = (...a: unknown[]) => void (err += a.join(" ") + "\n");
  try {
    return { code: await main(args), out, err };
  } finally {
    [console.log, console.error] = [log, error];
  }
}

Deno.test("renderText: sections, grouped identical layers, plan hook", async () => {
  const text = renderText(await inspectModel("tiny"));
  for (const part of ["parameters", "active per token", "per context token", "latent cache (bf16)", "192 B"]) {
    assert(text.includes(part), `missing "${part}"`);
  }
  assert(/^\s+0-1\s+moe/m.test(text), "the two identical tiny layers share one row");
  assert(text.includes("plan: none"));
  const planned = await inspectModel("tiny", { plan: () => ({ backend: "null", lines: ["all on null"] }) });
  assert(renderText(planned).includes("plan (null)\n  all on null"));
});

Deno.test("renderJson: required fields; --dtype changes bytes, not parameters", async () => {
  const r = JSON.parse(renderJson(await inspectModel("ms4-mini")));
  assertEquals(r.params.total, 704_403_456);
  assertEquals(r.params.vision, 0);
  for (const k of ["text", "activePerToken", "embedding", "lmHead"]) assertEquals(typeof r.params[k], "number");
  assertEquals(r.kvCache.bytesPerToken, 320 * 8 * 2);
  assertEquals(r.weights.bytesByDtype, { bf16: 704_403_456 * 2 });
  const bf16 = await inspectModel("mistral-small-4", { dtype: "bf16" });
  assertEquals(Object.keys(bf16.weights.bytesByDtype), ["bf16"]);
  assertEquals(bf16.weights.totalBytes, 2 * bf16.params.total);
  const fp8 = await inspectModel("mistral-small-4");
  assertEquals(fp8.params.total, bf16.params.total);
  assert(fp8.weights.bytesByDtype.f8e4m3! > 100e9 && fp8.weights.bytesByDtype.f32! > 0, "FP8 linears + f32 scales");
});

Deno.test("inspect: --dtype q4 keeps the head (and W_kvb) in q8; --head-dtype sets the head; bad values are errors", async () => {
  const V = 131_072, D = 1024, head = V * D; // ms4-mini's lm head
  const q4 = await inspectModel("ms4-mini", { dtype: "q4" });
  assertEquals(q4.params.total, 704_403_456);
  assert(q4.weights.bytesByDtype.q4! > 0 && q4.weights.bytesByDtype.q8! >= head * (9 / 8), "head and W_kvb in q8");
  const q4Head = await inspectModel("ms4-mini", { dtype: "q4", headDtype: "q4" });
  assertEquals(q4.weights.bytesByDtype.q8! - q4Head.weights.bytesByDtype.q8!, head * (9 / 8));
  assertEquals(q4Head.weights.bytesByDtype.q4! - q4.weights.bytesByDtype.q4!, head * (4.5 / 8));
  const cliHead = JSON.parse(
    (await cli("--model", "ms4-mini", "--json", "--backend", "none", "--dtype", "q4", "--head-dtype", "bf16")).out,
  );
  assertEquals(cliHead.weights.bytesByDtype.bf16 - q4.weights.bytesByDtype.bf16!, head * 2);
  const bad = await cli("--model", "tiny", "--head-dtype", "f8e4m3");
  assertEquals(bad.code, 2);
  assert(bad.err.startsWith('--head-dtype must be one of q4, q8, bf16, got "f8e4m3"'), bad.err);
});

/** Every edge of a DOT text joins declared nodes. */
function checkDot(dot: string): void {
  assert(dot.startsWith("digraph model {") && dot.trimEnd().endsWith("}"));
  const declared = new Set([...dot.matchAll(/^ {2}(\w+) \[/gm)].map((m) => m[1]));
  for (const [, from, to] of dot.matchAll(/^ {2}(\w+) -> (\w+);/gm)) {
    assert(declared.has(from) && declared.has(to), `edge ${from} -> ${to} to an undeclared node`);
  }
}

Deno.test("renderDot: the real model collapses layers 1..35; tiny expands both layers", async () => {
  const real = renderDot(decodeGraph(await resolveModel("mistral-small-4")));
  checkDot(real);
  assert(real.includes("layers 1..35 (35 more, same as layer 0)"));
  assert(!real.includes("layers.1.attn"), "collapsed layers draw no nodes");
  const tiny = renderDot(decodeGraph(await resolveModel("tiny")), { expandLayers: 2 });
  checkDot(tiny);
  assert(!tiny.includes("collapsed") && tiny.includes("layers.1.moe.route: moe_topk"));
});

Deno.test("CLI: --json alias, --format dot, and errors with usage", async () => {
  const json = await cli("--model", "tiny", "--json");
  assertEquals(json.code, 0);
  assertEquals(JSON.parse(json.out).model, { name: "tiny", source: "preset", modelType: "mistral4", layout: null });
  const dot = await cli("--model", "tiny", "--format", "dot");
  assertEquals(dot.code, 0);
  checkDot(dot.out);
  const text = await cli("--model", "demo");
  assert(text.code === 0 && text.out.startsWith("model demo (mistral4, from preset)"));
  assertEquals((await cli("--format", "xml")).code, 2);
  assert((await cli("--dtype", "fp7")).err.includes('unknown dtype "fp7"'));
  assertEquals((await cli("--bogus")).code, 2);
  const missing = await cli("--model", "/nonexistent/dir");
  assert(missing.code === 1 && missing.err.includes("not a preset"));
  assert((await cli("--help")).out.startsWith("usage:"));
});

Deno.test("inspect CLI: --json includes the scheduler's plan for the chosen backend", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(s);
  try {
    assertEquals(await main(["--model", "tiny", "--json", "--backend", "reference"]), 0);
  } finally {
    console.log = log;
  }
  const report = JSON.parse(lines.join("\n"));
  assertEquals(report.plan.backend, "reference");
  assertEquals(report.plan.plan.fallbacks, []);
  assert(report.plan.plan.memory.perBackend.reference.arenaBytes > 0);
  assertEquals(report.kvCache.bytesPerToken, 2 * (32 + 16) * 2);
});

Deno.test("inspect CLI: --softmax-scale picks the scale, the report prints the one in use, bad values are errors", async () => {
  const plain = await cli("--model", "mistral-small-4", "--backend", "none");
  assert(plain.out.includes("softmax scale             plain (0.08838835)"), plain.out);
  const deepseek = await cli("--model", "mistral-small-4", "--backend", "none", "--softmax-scale", "deepseek_yarn");
  assert(deepseek.out.includes("softmax scale             deepseek_yarn (0.1949695)"), deepseek.out);
  const json = JSON.parse(
    (await cli("--model", "tiny", "--json", "--backend", "none", "--softmax-scale", "plain")).out,
  );
  assertEquals(json.attention.softmaxScaleMode, "plain");
  const bad = await cli("--model", "tiny", "--softmax-scale", "mscale");
  assertEquals(bad.code, 2);
  assert(bad.err.startsWith('--softmax-scale: unknown value "mscale" (accepted: "plain", "deepseek_yarn")'), bad.err);
});

Deno.test("inspect: the scale a checkpoint directory asks for, as the loader reads it; an unknown one is an error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tiny = hfConfigJson(presetConfig("tiny"));
    const write = (name: string, json: unknown) => Deno.writeTextFile(`${dir}/${name}`, JSON.stringify(json));
    await write("config.json", tiny);
    assertEquals((await inspectModel(dir)).attention.softmaxScaleMode, "plain");
    // params.json's yarn.apply_scale decides when config.json says nothing (weights/load.ts reads it the same way).
    const params = mistralParamsJson({ ...presetConfig("tiny"), softmax_scale_mode: "deepseek_yarn" });
    await write("params.json", params);
    assertEquals((await inspectModel(dir)).attention.softmaxScaleMode, "deepseek_yarn");
    assertEquals((await inspectModel(dir, { softmaxScale: "plain" })).attention.softmaxScaleMode, "plain");
    await write("config.json", { ...tiny, softmax_scale_mode: "mscale" });
    const bad = await cli("--model", dir, "--backend", "none");
    assertEquals(bad.code, 1);
    assert(
      bad.err.includes('softmax_scale_mode: unknown value "mscale" (accepted: "plain", "deepseek_yarn")'),
      bad.err,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inspect CLI: the real model exits 0 with its plan section, text and JSON, whether or not it fits here", async () => {
  const text = await cli("--model", "mistral-small-4");
  assertEquals(text.code, 0, text.err);
  assert(/^plan \(wasm[^)]*\)/m.test(text.out), text.out);
  // A 24 GiB host (CI) cannot hold it: the section says by how much and what would; a larger one shows the split.
  assert(text.out.includes("what would fit:") || text.out.includes("split by layer over"), text.out);
  const json = await cli("--model", "mistral-small-4", "--format", "json");
  assertEquals(json.code, 0, json.err);
  const plan = JSON.parse(json.out).plan;
  assertEquals(typeof plan.fits, "boolean");
  assert(plan.preview.needBytes.wasm > 100 * 2 ** 30, JSON.stringify(plan.preview));
  if (!plan.fits) assert(plan.preview.error.length > 0 && Array.isArray(plan.alternatives));
});
