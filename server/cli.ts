/**
 * `deno task serve`: flags → tokenizer → listen (503 on /health while loading) → load model → engine.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { isDType } from "../graph/dtype.ts";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import { Tokenizer } from "../chat/tokenizer.ts";
import type { Engine, EngineStats, GenerateRequest, Generation, VisionSettings } from "../engine/types.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel } from "../engine/model.ts";
import { createServer } from "./server.ts";

const USAGE = `usage: deno task serve [options]
  --model DIR|PRESET         checkpoint directory (HF or Mistral layout) or preset (default: demo)
  --tokenizer FILE           tekken.json (default: DIR/tekken.json; the demo uses the built-in vocabulary)
  --host ADDR                listen address (default 127.0.0.1)
  --port N                   listen port (default 8000; 0 picks a free one)
  --api-key KEY              require Authorization: Bearer KEY on /v1/*
  --backend NAME             backend (default: the best available)
  --dtype NAME               weight dtype (f32, bf16, f8e4m3, q8)
  --threads N                CPU threads
  --max-model-len N          context length per sequence (default min(model, 4096))
  --max-num-seqs N           sequences decoded together (default 8)
  --max-num-batched-tokens N token budget of one step (default 256)
  --chat-template FILE       a Jinja chat template instead of the built-in v15 encoder
  --served-model-name NAME   the model name clients use (default: the preset or directory name)
  --max-body-bytes N         largest request body (default 32 MiB)
  --seed N                   seed of a preset's random weights (default 0)
  --max-images N             images accepted per request (default 8)
  --max-image-bytes N        largest image, downloaded or inline (default 20 MB)
  --allow-private-image-urls let image URLs reach private and loopback addresses (trusted networks only)`;

/** An engine that answers "not ready" until the real one is loaded, so /health can say 503 meanwhile. */
class LoadingEngine implements Engine {
  inner: Engine | null = null;
  constructor(readonly maxModelLen: number) {}
  get ready(): boolean {
    return this.inner?.ready ?? false;
  }
  get vision(): VisionSettings | null {
    return this.inner?.vision ?? null;
  }
  generate(req: GenerateRequest): Generation {
    if (!this.inner) throw new Error("the model is still loading");
    return this.inner.generate(req);
  }
  stats(): EngineStats {
    return this.inner?.stats() ??
      { running: 0, waiting: 0, batchSize: 0, cacheBlocksUsed: 0, cacheBlocksTotal: 0, tokensProcessed: 0 };
  }
}

function intFlag(values: Record<string, unknown>, name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${v}`);
  return n;
}

/** Runs the server until the process is stopped. */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: "demo" },
      tokenizer: { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8000" },
      "api-key": { type: "string" },
      backend: { type: "string" },
      dtype: { type: "string" },
      threads: { type: "string" },
      "max-model-len": { type: "string" },
      "max-num-seqs": { type: "string" },
      "max-num-batched-tokens": { type: "string" },
      "chat-template": { type: "string" },
      "served-model-name": { type: "string" },
      "max-body-bytes": { type: "string" },
      seed: { type: "string" },
      "max-images": { type: "string" },
      "max-image-bytes": { type: "string" },
      "allow-private-image-urls": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.dtype !== undefined && !isDType(values.dtype)) throw new Error(`--dtype ${values.dtype} is unknown`);
  const model = values.model!;
  const isPreset = !model.includes("/") && !(await exists(model));
  const tokenizer = values.tokenizer
    ? await Tokenizer.fromFile(values.tokenizer)
    : isPreset
    ? await loadDemoTokenizer()
    : await Tokenizer.fromFile(join(model, "tekken.json"));
  const chatTemplate = values["chat-template"] ? await Deno.readTextFile(values["chat-template"]) : undefined;
  const maxModelLen = intFlag(values, "max-model-len");
  const maxSeqs = intFlag(values, "max-num-seqs") ?? 8;
  const maxTokens = intFlag(values, "max-num-batched-tokens") ?? 256;

  const engine = new LoadingEngine(maxModelLen ?? 4096);
  const server = createServer({
    engine,
    tokenizer,
    modelName: values["served-model-name"] ?? model.replace(/\/+$/, "").split("/").pop()!,
    apiKey: values["api-key"],
    maxBodyBytes: intFlag(values, "max-body-bytes"),
    chatTemplate,
    images: {
      maxImages: intFlag(values, "max-images"),
      maxBytes: intFlag(values, "max-image-bytes"),
      allowPrivate: values["allow-private-image-urls"],
    },
  });
  const handle = server.serve({ hostname: values.host, port: intFlag(values, "port") });
  console.log(`tramontane: listening on ${handle.url} (loading ${model}…)`);
  if (isPreset) {
    console.log("tramontane: a preset has random weights: its text is noise. Use --model DIR for real weights.");
  }
  const t0 = performance.now();
  const loaded = await loadModel(model, {
    backend: values.backend,
    dtype: values.dtype as never,
    threads: intFlag(values, "threads"),
    seed: intFlag(values, "seed"),
    maxModelLen,
    maxSeqs,
    maxTokens: Math.max(maxTokens, maxSeqs),
  });
  // The real context length is known only now (the model's own maximum caps the default).
  Object.defineProperty(engine, "maxModelLen", { value: loaded.limits.maxModelLen });
  engine.inner = await ModelEngine.create(loaded, { eosId: tokenizer.eosId });
  console.log(
    `tramontane: ${model} ready on ${loaded.backend.name} in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(context ${loaded.limits.maxModelLen}, ${maxSeqs} sequences, ${loaded.limits.numBlocks} cache blocks)`,
  );
  await handle.finished;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
