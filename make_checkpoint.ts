/**
 * `deno task make-checkpoint` — writes a random-weight checkpoint in the real HF or Mistral layout, for tests and
 * demos without the real weights. The directory is ready to serve: it holds the tokenizer the model was made with
 * (`tekken.json`) and a `generation_config.json` whose `max_new_tokens` (256) ends answers random weights never end.
 *
 * ```
 * deno run --allow-read --allow-write make_checkpoint.ts --model tiny --out /tmp/tiny [--dtype nvfp4] [--seed 0]
 *   [--layout hf|mistral] [--shard-mb 5000] [--force]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { loadDemoTekkenFile } from "./chat/demo_tokenizer.ts";
import { tekkenJson } from "./chat/tokenizer.ts";
import type { Mistral4Config } from "./graph/models/mistral4.ts";
import { configFromSpec, makeCheckpoint } from "./weights/make_checkpoint.ts";
import type { RandomDType } from "./weights/random.ts";

const USAGE = `usage: make_checkpoint.ts --model PRESET|DIR|config.json|params.json --out DIR
    [--dtype f32|bf16|f8e4m3|nvfp4] [--seed N] [--layout hf|mistral] [--shard-mb N] [--force]
  --model     preset (tiny, demo, ms4-mini, ms4-medium, mistral-small-4, or a draft head: tiny-eagle,
              demo-eagle, …), a checkpoint directory, or a config file
  --out       directory to write (created)
  --dtype     stored dtype: f32, bf16, f8e4m3 (FP8 text linears, the rest bf16) or nvfp4 (compressed-tensors
              NVFP4 experts as the NVFP4 release, the rest bf16); default the config's
  --seed      seed of the random weights (default 0; the same seed gives the same weights as the preset)
  --layout    hf (config.json + model-*.safetensors, default) or mistral (params.json + consolidated.safetensors;
              the default for a draft head, as its release: eagle_linear.weight, layers after the target's)
  --shard-mb  largest shard in MB (default 5000)
  --force     replace checkpoint files already in --out
Beside the weights it writes tekken.json (the source checkpoint's, else the demo's: Small 4's vocabulary and v15
control tokens) and generation_config.json (max_new_tokens 256), so serve --model OUT works as it is.`;

/** Ids of the demo vocabulary, control tokens included: a config with another vocabulary cannot use it. */
const DEMO_VOCAB_SIZE = 131072;

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * The tokenizer a checkpoint made from `spec` goes with: the `tekken.json` beside the source (a checkpoint
 * directory, or the directory of a config file), else the demo tokenizer when the vocabulary fits; null otherwise.
 */
async function tokenizerFor(spec: string, config: Mistral4Config): Promise<string | null> {
  const isDir = await Deno.stat(spec).then((s) => s.isDirectory, () => false);
  if (isDir || spec.endsWith(".json")) {
    const own = await readIfExists(join(isDir ? spec : dirname(spec), "tekken.json"));
    if (own !== null) return own;
  }
  return config.vocab_size === DEMO_VOCAB_SIZE ? tekkenJson(await loadDemoTekkenFile()) : null;
}

function size(bytes: number): string {
  return bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Runs the CLI on `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      args,
      options: {
        model: { type: "string" },
        out: { type: "string" },
        dtype: { type: "string" },
        seed: { type: "string", default: "0" },
        layout: { type: "string" },
        "shard-mb": { type: "string", default: "5000" },
        force: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  const seed = Number(flags.seed), shardMb = Number(flags["shard-mb"]);
  const bad = !flags.model || !flags.out
    ? "--model and --out are required"
    : flags.dtype !== undefined && !["f32", "bf16", "f8e4m3", "nvfp4"].includes(flags.dtype)
    ? `--dtype must be f32, bf16, f8e4m3 or nvfp4, got "${flags.dtype}"`
    : flags.layout !== undefined && flags.layout !== "hf" && flags.layout !== "mistral"
    ? `--layout must be hf or mistral, got "${flags.layout}"`
    : !Number.isSafeInteger(seed)
    ? `--seed must be an integer, got "${flags.seed}"`
    : !(shardMb > 0)
    ? `--shard-mb must be a positive number, got "${flags["shard-mb"]}"`
    : null;
  if (bad) {
    console.error(`${bad}\n${USAGE}`);
    return 2;
  }
  try {
    const config = await configFromSpec(flags.model!);
    const tokenizerJson = await tokenizerFor(flags.model!, config);
    const r = await makeCheckpoint({
      config,
      tokenizerJson: tokenizerJson ?? undefined,
      out: flags.out!,
      dtype: flags.dtype as RandomDType | undefined,
      seed,
      // A draft head defaults to the layout its release ships in (params.json + consolidated.safetensors).
      layout: (flags.layout ?? (config.eagle ? "mistral" : "hf")) as "hf" | "mistral",
      maxShardBytes: shardMb * 1e6,
      force: flags.force,
    });
    const dtype = r.config.quantization ? `${r.config.quantization.weight_dtype} + ${r.config.dtype}` : r.config.dtype;
    console.log(
      `wrote ${flags.model} (${dtype}, ${r.layout} layout, seed ${seed}) to ${flags.out}: ` +
        `${r.params.toLocaleString("en-US")} parameters, ${size(r.totalBytes)}`,
    );
    for (const f of r.files) console.log(`  ${f.path}  ${size(f.bytes)}`);
    if (tokenizerJson === null) {
      console.log(
        `no tekken.json written: the demo vocabulary has ${DEMO_VOCAB_SIZE} ids, this model ${config.vocab_size}; ` +
          `serve it with --tokenizer PATH (a tekken.json of that size)`,
      );
    }
    return 0;
  } catch (e) {
    console.error(`make-checkpoint: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
