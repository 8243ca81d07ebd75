import { join } from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { fixture } from "../tests/fixtures.ts";
import { presetConfig } from "../graph/models/mistral4.ts";
import { makeCheckpoint } from "../weights/make_checkpoint.ts";
import { defaultMaxTokens, loadServeTokenizer, main, parseServeArgs, type ServeOptions, UsageError } from "./cli.ts";

const DEFAULTS: ServeOptions = {
  help: false,
  model: "demo",
  tokenizer: undefined,
  host: "127.0.0.1",
  port: 8000,
  apiKey: undefined,
  backend: undefined,
  strict: false,
  dtype: undefined,
  headDType: undefined,
  threads: undefined,
  maxModelLen: undefined,
  maxNumSeqs: 8,
  maxNumBatchedTokens: 256,
  maxTokensDefault: undefined,
  chatTemplate: undefined,
  servedModelName: "demo",
  maxBodyBytes: undefined,
  seed: undefined,
  maxImages: undefined,
  maxImageBytes: undefined,
  allowPrivateImageUrls: false,
  softmaxScale: undefined,
  shutdownGrace: 10,
  speculative: undefined,
  cacheDtype: undefined,
  webUi: true,
  webUiModels: [],
};

Deno.test("serve flags: defaults", () => {
  assertEquals(parseServeArgs([]), DEFAULTS);
});

Deno.test("serve flags: every flag is read into its option", () => {
  const args = [
    ["--model", "/ckpt/Mistral-Small-4-119B-2603/"],
    ["--tokenizer", "/ckpt/tekken.json"],
    ["--host", "0.0.0.0"],
    ["--port", "0"],
    ["--api-key", "secret"],
    ["--backend", "wasm,reference"],
    ["--strict"],
    ["--dtype", "q8"],
    ["--head-dtype", "bf16"],
    ["--threads", "2"],
    ["--max-model-len", "8200"],
    ["--max-num-seqs", "4"],
    ["--max-num-batched-tokens", "512"],
    ["--max-tokens-default", "300"],
    ["--chat-template", "/t/v15.jinja"],
    ["--max-body-bytes", "1048576"],
    ["--seed", "0"],
    ["--max-images", "0"],
    ["--max-image-bytes", "1000"],
    ["--allow-private-image-urls"],
    ["--softmax-scale", "deepseek_yarn"],
    ["--shutdown-grace", "30"],
    ["--speculative-model", "/ckpt/eagle"],
    ["--num-speculative-tokens", "5"],
    ["--cache-dtype", "f32"],
    ["--no-web-ui"],
    ["--web-ui-models", "/ckpt/a,/ckpt/b", "--web-ui-models", "/ckpt/c"],
  ].flat();
  assertEquals(parseServeArgs(args), {
    help: false,
    model: "/ckpt/Mistral-Small-4-119B-2603/",
    tokenizer: "/ckpt/tekken.json",
    host: "0.0.0.0",
    port: 0,
    apiKey: "secret",
    backend: "wasm,reference",
    strict: true,
    dtype: "q8",
    headDType: "bf16",
    threads: 2,
    maxModelLen: 8200,
    maxNumSeqs: 4,
    maxNumBatchedTokens: 512,
    maxTokensDefault: 300,
    chatTemplate: "/t/v15.jinja",
    // The directory's last component, trailing slash or not.
    servedModelName: "Mistral-Small-4-119B-2603",
    maxBodyBytes: 1048576,
    seed: 0,
    maxImages: 0,
    maxImageBytes: 1000,
    allowPrivateImageUrls: true,
    softmaxScale: "deepseek_yarn",
    shutdownGrace: 30,
    speculative: { model: "/ckpt/eagle", numTokens: 5 },
    cacheDtype: "f32",
    webUi: false,
    webUiModels: ["/ckpt/a", "/ckpt/b", "/ckpt/c"],
  });
  assertEquals(parseServeArgs(["--model", "tiny", "--served-model-name", "m"]).servedModelName, "m");
  assertEquals(parseServeArgs(["--port=9000", "--softmax-scale=plain"]).port, 9000);
  assertEquals(parseServeArgs(["--softmax-scale", "plain"]).softmaxScale, "plain");
  assertEquals(parseServeArgs(["--dtype", "f8e4m3"]).dtype, "f8e4m3");
  assertEquals(parseServeArgs(["--dtype", "q4"]).dtype, "q4");
  for (const head of ["q4", "q8", "bf16"]) assertEquals(parseServeArgs(["--head-dtype", head]).headDType, head);
  // none: up to the context (OpenAI's behaviour), even for a preset.
  assertEquals(parseServeArgs(["--max-tokens-default", "none"]).maxTokensDefault, null);
  assertEquals(parseServeArgs(["--max-tokens-default=1"]).maxTokensDefault, 1);
  // 0: running requests are cancelled at once; a day is the most.
  assertEquals(parseServeArgs(["--shutdown-grace", "0"]).shutdownGrace, 0);
  assertEquals(parseServeArgs(["--shutdown-grace=86400"]).shutdownGrace, 86400);
  assertEquals(parseServeArgs(["-h"]).help, true);
  assertEquals(parseServeArgs(["--help"]).help, true);
});

Deno.test("serve flags: bad values are UsageErrors naming the flag, the value and what it takes", () => {
  const bad: [string[], string][] = [
    [["--port", "abc"], '--port must be an integer from 0 to 65535, got "abc"'],
    [["--port", "65536"], '--port must be an integer from 0 to 65535, got "65536"'],
    [["--port=-1"], '--port must be an integer from 0 to 65535, got "-1"'],
    [["--port", ""], '--port must be an integer from 0 to 65535, got ""'],
    // Number() would read these as 1000, 16 and 8.
    [["--max-num-seqs", "1e3"], '--max-num-seqs must be an integer ≥ 1, got "1e3"'],
    [["--threads", "0x10"], '--threads must be an integer ≥ 1, got "0x10"'],
    [["--max-num-batched-tokens", " 8"], '--max-num-batched-tokens must be an integer ≥ 1, got " 8"'],
    [["--max-num-seqs", "0"], '--max-num-seqs must be an integer ≥ 1, got "0"'],
    [["--max-num-batched-tokens", "0"], "--max-num-batched-tokens must be an integer ≥ 1"],
    [["--max-model-len", "0"], "--max-model-len must be an integer ≥ 1"],
    [["--max-model-len", "4k"], '--max-model-len must be an integer ≥ 1, got "4k"'],
    [["--threads", "1.5"], '--threads must be an integer ≥ 1, got "1.5"'],
    [["--max-body-bytes", "0"], "--max-body-bytes must be an integer ≥ 1"],
    [["--max-image-bytes=-5"], "--max-image-bytes must be an integer ≥ 1"],
    [["--max-images", "many"], '--max-images must be an integer ≥ 0, got "many"'],
    [["--seed=-1"], '--seed must be an integer ≥ 0, got "-1"'],
    [["--max-tokens-default", "0"], '--max-tokens-default must be an integer ≥ 1 or none, got "0"'],
    [["--max-tokens-default", "256k"], '--max-tokens-default must be an integer ≥ 1 or none, got "256k"'],
    [["--max-tokens-default", "1e3"], '--max-tokens-default must be an integer ≥ 1 or none, got "1e3"'],
    [["--max-tokens-default", ""], '--max-tokens-default must be an integer ≥ 1 or none, got ""'],
    [["--max-tokens-default", "None"], '--max-tokens-default must be an integer ≥ 1 or none, got "None"'],
    [["--max-tokens-default"], "--max-tokens-default"],
    [["--shutdown-grace=-1"], '--shutdown-grace must be an integer from 0 to 86400, got "-1"'],
    [["--shutdown-grace", "2.5"], '--shutdown-grace must be an integer from 0 to 86400, got "2.5"'],
    [["--shutdown-grace", "10s"], '--shutdown-grace must be an integer from 0 to 86400, got "10s"'],
    [["--shutdown-grace", "86401"], '--shutdown-grace must be an integer from 0 to 86400, got "86401"'],
    [["--shutdown-grace", ""], '--shutdown-grace must be an integer from 0 to 86400, got ""'],
    [["--dtype", "int4"], '--dtype must be one of f32, bf16, f16, f8e4m3, nvfp4, q8, q4, got "int4"'],
    [["--dtype", "i32"], '--dtype must be one of f32, bf16, f16, f8e4m3, nvfp4, q8, q4, got "i32"'],
    [["--head-dtype", "f32"], '--head-dtype must be one of q4, q8, bf16, got "f32"'],
    [["--head-dtype", "Q8"], '--head-dtype must be one of q4, q8, bf16, got "Q8"'],
    [["--head-dtype"], "--head-dtype"],
    [
      ["--softmax-scale", "mscale"],
      '--softmax-scale: unknown value "mscale" (accepted: "plain", "deepseek_yarn")',
    ],
    // An empty key would turn authentication off without a word.
    [["--api-key", ""], "--api-key must not be empty"],
    [["--model", " "], "--model must not be empty"],
    [["--served-model-name", ""], "--served-model-name must not be empty"],
    // node:util parseArgs: unknown flags, stray arguments, a string flag without its value, a value on a switch.
    [["--max-tokens", "5"], "--max-tokens"],
    [["tiny"], "tiny"],
    [["--model"], "--model"],
    [["--allow-private-image-urls=yes"], "--allow-private-image-urls"],
    [["--port", "-1"], "--port"],
  ];
  for (const [args, message] of bad) {
    const e = assertThrows(() => parseServeArgs(args), UsageError, message);
    assert(e.message.endsWith("(deno task serve --help lists the flags)"), e.message);
  }
});

Deno.test("serve CLI: --help prints a usage line for every flag and starts nothing", async () => {
  const log = console.log;
  let out = "";
  console.log = (...a: unknown[]) => void (out += a.join(" ") + "\n");
  try {
    await main(["--help"]);
  } finally {
    console.log = log;
  }
  assert(out.startsWith("usage: deno task serve"), out);
  const flags = [
    "model",
    "tokenizer",
    "host",
    "port",
    "api-key",
    "backend",
    "strict",
    "dtype",
    "head-dtype",
    "threads",
    "max-model-len",
    "max-num-seqs",
    "max-num-batched-tokens",
    "max-tokens-default",
    "chat-template",
    "served-model-name",
    "max-body-bytes",
    "seed",
    "max-images",
    "max-image-bytes",
    "allow-private-image-urls",
    "softmax-scale",
    "shutdown-grace",
    "speculative-model",
    "num-speculative-tokens",
    "cache-dtype",
    "no-web-ui",
    "web-ui-models",
    "help",
  ];
  for (const f of flags) assert(new RegExp(`^  --${f}\\b`, "m").test(out), `--${f} is not in the usage`);
  assertEquals(out.match(/^ {2}--[a-z-]+/gm)!.length, flags.length, "a flag in the usage that the test does not know");
  assert(/--shutdown-grace S .*\n.*\(default 10;/.test(out), "--shutdown-grace's default is not in the usage");
});

Deno.test("serve CLI: the default answer length comes from the flag, a preset, or the checkpoint's generation_config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_serve_" });
  try {
    // A make-checkpoint directory: generation_config.json says 256 (random weights never end an answer).
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir });
    assertEquals(await defaultMaxTokens({ model: dir }, false), {
      limit: 256,
      source: `max_new_tokens of ${join(dir, "generation_config.json")}`,
    });
    assertEquals((await defaultMaxTokens({ model: dir, maxTokensDefault: 9 }, false)).limit, 9);
    assertEquals((await defaultMaxTokens({ model: dir, maxTokensDefault: null }, false)).limit, null);
    assertEquals((await defaultMaxTokens({ model: "demo" }, true)).limit, 256);
    assertEquals((await defaultMaxTokens({ model: "demo", maxTokensDefault: null }, true)).limit, null);
    // A real checkpoint without max_new_tokens (or without the file) keeps OpenAI's behaviour: up to the context.
    await Deno.writeTextFile(join(dir, "generation_config.json"), '{"bos_token_id": 1, "eos_token_id": 2}');
    assertEquals((await defaultMaxTokens({ model: dir }, false)).limit, null);
    await Deno.remove(join(dir, "generation_config.json"));
    assertEquals((await defaultMaxTokens({ model: dir }, false)).limit, null);
    await Deno.writeTextFile(join(dir, "generation_config.json"), '{"max_new_tokens": -3}');
    await assertRejects(
      () => defaultMaxTokens({ model: dir }, false),
      Error,
      "max_new_tokens must be a positive integer",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve CLI: a directory without tekken.json is an error that says what to do; --tokenizer serves it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_serve_" });
  try {
    const e = await assertRejects(() => loadServeTokenizer({ model: dir }, false), Error);
    assert(e.message.includes(`${join(dir, "tekken.json")} does not exist`), e.message);
    assert(e.message.includes("--tokenizer PATH") && e.message.includes("make-checkpoint"), e.message);
    await assertRejects(() => loadServeTokenizer({ model: join(dir, "nope") }, false), Error, "no such directory");
    const tok = await loadServeTokenizer(
      { model: dir, tokenizer: fixture("tokenizer/tekken_small4_v15_derived.json").pathname },
      false,
    );
    assertEquals(tok.version, "v15");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
