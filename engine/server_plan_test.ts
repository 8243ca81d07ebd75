import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { decodeGraph } from "../graph/inspect.ts";
import { resolveModel } from "../graph/models/mod.ts";
import { main } from "../inspect.ts";
import { planSection } from "./plan_section.ts";
import { parseBandwidth, parseByteSize } from "./server_plan.ts";

const GiB = 2 ** 30;

Deno.test("server plan: sizes and bandwidths parse with their units; anything else is an error naming the flag", () => {
  assertEquals(parseByteSize("128GiB", "--host-memory"), 128 * GiB);
  assertEquals(parseByteSize("512 gb", "--host-memory"), 512e9);
  assertEquals(parseByteSize("1.5T", "--host-memory"), 1.5e12);
  assertEquals(parseByteSize("4096", "--host-memory"), 4096);
  assertEquals(parseBandwidth("200GB/s", "--bandwidth"), 200e9);
  assertEquals(parseBandwidth("51.2GiB/s", "--bandwidth"), 51.2 * GiB);
  assertEquals(parseBandwidth("2e11", "--bandwidth"), 2e11);
  for (const bad of ["", "lots", "-4GiB", "0GB", "12 parsecs", "GiB"]) {
    assertThrows(() => parseByteSize(bad, "--host-memory"), RangeError, `--host-memory must be a positive size`);
  }
  assertThrows(
    () => parseBandwidth("fast", "--bandwidth"),
    RangeError,
    "--bandwidth must be a positive bandwidth such",
  );
});

Deno.test("server plan: the real model in NVFP4 on a 128 GiB CPU host, planned without allocating anything", async () => {
  const resolved = await resolveModel("mistral-small-4");
  const rss = Deno.memoryUsage().rss;
  const s = await planSection({
    backends: "wasm",
    graphFor: (d) => decodeGraph(resolved, { dtype: d }),
    dtype: "nvfp4",
    hostMemoryBytes: 128 * GiB,
    backendOptions: { threads: 1 },
    config: resolved.config,
    bandwidthBytesPerSecond: 200e9,
  });
  // Planning ~65 GiB of weights grows no memory: nothing was allocated (the small wasm backend apart).
  assert(Deno.memoryUsage().rss - rss < 512 * 2 ** 20, "planning allocated memory");
  assertEquals(s.fits, true);
  const need = Object.values(s.preview.needBytes).reduce((a, b) => a + b, 0);
  assert(need > 60 * GiB && need < 70 * GiB, `${need / GiB} GiB`); // experts at 0.5625 B a value, the rest FP8/bf16
  const n = s.preview.growth!.instances;
  assertEquals([s.preview.growth!.memory64, s.plan!.backends.length], [true, n]);
  const t = s.traffic!;
  assertEquals(t.cacheBytesPerToken, 23_040); // 320 bf16 values × 36 layers
  assert(t.weightBytesPerToken > 4 * GiB && t.weightBytesPerToken < 5.5 * GiB, `${t.weightBytesPerToken / GiB}`);
  for (const a of t.at) {
    assertEquals(a.bytes, t.weightBytesPerToken + a.context * 23_040);
    assertEquals(a.tokensPerSecond, 200e9 / a.bytes);
  }
  assertEquals(s.cacheRoom!.bytes, 128 * GiB - need);
  assertEquals(s.cacheRoom!.tokens, Math.floor((128 * GiB - need) / 23_040));
  const text = s.lines!.join("\n");
  for (const part of ["memory                    128.0 GiB", `${n} wasm instances (memory64)`, "tok/s at 200 GB/s"]) {
    assert(text.includes(part), `missing "${part}" in\n${text}`);
  }
  // FP8 linears read about twice the experts' bytes per token: NVFP4 is what makes this host fast.
  const fp8 = await planSection({
    backends: "wasm",
    graphFor: (d) => decodeGraph(resolved, { dtype: d }),
    hostMemoryBytes: 128 * GiB,
    backendOptions: { threads: 1 },
    config: resolved.config,
  });
  assert(fp8.traffic!.weightBytesPerToken > 1.3 * t.weightBytesPerToken, "nvfp4 reads fewer bytes than FP8");
  assertEquals(fp8.traffic!.at[0].tokensPerSecond, undefined);
});

Deno.test("inspect CLI: --host-memory and --bandwidth print the host plan; bad values and --backend none are errors", async () => {
  const [log, error] = [console.log, console.error];
  let out = "", err = "";
  console.log = (...a: unknown[]) => void (out += a.join(" ") + "\n");
  console.error = (...a: unknown[]) => void (err += a.join(" ") + "\n");
  const run = (...args: string[]) => main(["--model", "tiny", "--backend", "wasm", ...args]);
  try {
    assertEquals(await run("--host-memory", "8GiB", "--bandwidth", "20GB/s"), 0);
    assert(out.includes("host\n") && out.includes("tok/s at 20 GB/s"), out);
    assertEquals(await run("--host-memory", "many"), 2);
    assert(err.includes('--host-memory must be a positive size such as 128GiB, 512GB or 68719476736, got "many"'), err);
    assertEquals(await run("--bandwidth", "0GB/s"), 2);
    assert(err.includes("--bandwidth must be a positive bandwidth"), err);
    assertEquals(await main(["--model", "tiny", "--backend", "none", "--bandwidth", "1GB/s"]), 2);
    assert(err.includes("they need --backend (not none)"), err);
  } finally {
    [console.log, console.error] = [log, error];
  }
});
