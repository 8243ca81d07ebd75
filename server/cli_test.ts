import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { main, parseServeArgs, type ServeOptions, UsageError } from "./cli.ts";

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
  threads: undefined,
  maxModelLen: undefined,
  maxNumSeqs: 8,
  maxNumBatchedTokens: 256,
  chatTemplate: undefined,
  servedModelName: "demo",
  maxBodyBytes: undefined,
  seed: undefined,
  maxImages: undefined,
  maxImageBytes: undefined,
  allowPrivateImageUrls: false,
  softmaxScale: undefined,
  shutdownGrace: 10,
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
    ["--threads", "2"],
    ["--max-model-len", "8200"],
    ["--max-num-seqs", "4"],
    ["--max-num-batched-tokens", "512"],
    ["--chat-template", "/t/v15.jinja"],
    ["--max-body-bytes", "1048576"],
    ["--seed", "0"],
    ["--max-images", "0"],
    ["--max-image-bytes", "1000"],
    ["--allow-private-image-urls"],
    ["--softmax-scale", "deepseek_yarn"],
    ["--shutdown-grace", "30"],
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
    threads: 2,
    maxModelLen: 8200,
    maxNumSeqs: 4,
    maxNumBatchedTokens: 512,
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
  });
  assertEquals(parseServeArgs(["--model", "tiny", "--served-model-name", "m"]).servedModelName, "m");
  assertEquals(parseServeArgs(["--port=9000", "--softmax-scale=plain"]).port, 9000);
  assertEquals(parseServeArgs(["--softmax-scale", "plain"]).softmaxScale, "plain");
  assertEquals(parseServeArgs(["--dtype", "f8e4m3"]).dtype, "f8e4m3");
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
    [["--shutdown-grace=-1"], '--shutdown-grace must be an integer from 0 to 86400, got "-1"'],
    [["--shutdown-grace", "2.5"], '--shutdown-grace must be an integer from 0 to 86400, got "2.5"'],
    [["--shutdown-grace", "10s"], '--shutdown-grace must be an integer from 0 to 86400, got "10s"'],
    [["--shutdown-grace", "86401"], '--shutdown-grace must be an integer from 0 to 86400, got "86401"'],
    [["--shutdown-grace", ""], '--shutdown-grace must be an integer from 0 to 86400, got ""'],
    [["--dtype", "int4"], '--dtype must be one of f32, bf16, f16, f8e4m3, nvfp4, q8, got "int4"'],
    [["--dtype", "i32"], '--dtype must be one of f32, bf16, f16, f8e4m3, nvfp4, q8, got "i32"'],
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
    "threads",
    "max-model-len",
    "max-num-seqs",
    "max-num-batched-tokens",
    "chat-template",
    "served-model-name",
    "max-body-bytes",
    "seed",
    "max-images",
    "max-image-bytes",
    "allow-private-image-urls",
    "softmax-scale",
    "shutdown-grace",
    "help",
  ];
  for (const f of flags) assert(new RegExp(`^  --${f}\\b`, "m").test(out), `--${f} is not in the usage`);
  assertEquals(out.match(/^ {2}--[a-z-]+/gm)!.length, flags.length, "a flag in the usage that the test does not know");
  assert(/--shutdown-grace S .*\n.*\(default 10;/.test(out), "--shutdown-grace's default is not in the usage");
});
