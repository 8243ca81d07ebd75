/**
 * Load test: many concurrent streaming clients for a while, half of them walking away mid-stream, for several
 * rounds; after each round every slot and cache block must be free again (read from `/metrics`, as an operator would
 * see it) and the process must not grow.
 *
 *   deno run -A bench/load.ts [--model demo] [--backend auto] [--rounds 3]
 *     [--seconds 20] [--clients 32] [--json]
 *
 * Each client sends streamed chat requests one after another until the round ends: prompts of random length, half
 * of them behind a shared system prompt (so prefix-cache blocks are shared between live sequences), some with n = 2.
 * Odd-numbered clients abort each request after a random number of output chunks (an `AbortController`: the
 * connection drops, as when a user closes the tab). When the round's time is up, requests still in flight are
 * aborted too ("cut"): that also frees queued requests that never got a slot. Then the script waits for the engine
 * to settle and reads `/metrics`.
 *
 * A round fails on any error (HTTP error, error event or missing `[DONE]` in a stream, a server-side error log),
 * on a round without a single generated token, or on slots or blocks still in use once settled; the run fails when
 * RSS after a later round exceeds RSS after round 1 by more than `--rss-growth-mb`. The exit status is 1 on failure.
 * A round where tokens flowed but no request finished is only noted: the backend is too slow for the load.
 *
 * `tests/load_test.ts` runs a short version of this ({@link runLoad}) in CI.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { mulberry32 } from "../tests/fixtures.ts";
import { type InProcessOptions, promptOf, readGauges, startInProcess, streamChat } from "./serve.ts";

/** Options of {@link runLoad}. */
export interface LoadOptions extends InProcessOptions {
  rounds: number;
  /** Length of a round. */
  seconds: number;
  clients: number;
  /** `max_tokens` of a request (each asks for between half of it and all of it). */
  maxTokens?: number;
  /** Longest prompt in tokens (default 96). */
  promptTokens?: number;
  /** Most seconds to wait, after a round, for the engine to release everything (default 30). */
  settleSeconds?: number;
  /** Allowed RSS growth over round 1, MiB (default 64). */
  rssGrowthMb?: number;
  /** Seed of the clients' choices. */
  seed?: number;
  /** Called with each finished round (to print it as it comes). */
  onRound?: (round: RoundResult) => void;
}

/** What one round did and left behind. */
export interface RoundResult {
  round: number;
  seconds: number;
  /** Requests that ran to their end (finish reason, usage, `[DONE]`). */
  ok: number;
  errors: number;
  /** Requests a client aborted mid-stream on purpose. */
  disconnects: number;
  /** Requests still in flight (running or queued) when the round ended, aborted then. */
  cut: number;
  /** Tokens generated in the round (`generation_tokens_total`, aborted requests included). */
  tokens: number;
  /** Gauges of `/metrics` once settled. */
  running: number;
  waiting: number;
  cacheBlocksUsed: number;
  cacheBlocksTotal: number;
  /** Seconds it took after the round for the gauges to reach zero (or the settle timeout). */
  settleSeconds: number;
  rssMb: number;
  heapMb: number;
  /** The first few error messages. */
  errorSamples: string[];
}

/** The whole run. */
export interface LoadResult {
  model: string;
  backend: string;
  loadSeconds: number;
  rounds: RoundResult[];
  /** Why the run failed; empty when it passed. */
  failures: string[];
  /** Things worth knowing that are not failures. */
  notes: string[];
}

const SYSTEM = "You are a helpful assistant who answers briefly and precisely, in the language of the question.";

/**
 * A round in progress. At its end only requests whose response has started are cut; the others are cut when it
 * starts: a client that leaves while its request body is still being read is a different case from leaving a
 * stream (the server logs it as an internal error today), and not the one this test is about.
 */
interface Round {
  over: boolean;
  inFlight: Map<AbortController, { streaming: boolean }>;
}

/** A small tally that clients update as their requests end. */
interface Tally {
  ok: number;
  errors: number;
  disconnects: number;
  cut: number;
  errorSamples: string[];
}

function recordError(t: Tally, message: string): void {
  t.errors++;
  if (t.errorSamples.length < 5) t.errorSamples.push(message);
}

/** Collects garbage before RSS is read, when the runtime exposes `gc` (`--v8-flags=--expose-gc`). */
function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc === "function") gc();
}

const MIB = 1 << 20;

/** Runs the load rounds against a fresh in-process server and checks what they leave behind. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const maxTokens = o.maxTokens ?? 16;
  const maxPrompt = o.promptTokens ?? 96;
  const settleLimit = o.settleSeconds ?? 30;
  const rssLimit = o.rssGrowthMb ?? 64;
  const s = await startInProcess(o);
  const rand = mulberry32(o.seed ?? 1);
  const failures: string[] = [];
  const notes: string[] = [];
  const rounds: RoundResult[] = [];
  let tag = 0;

  /** One request of client `c`: counts itself in `t`. Never throws. */
  async function oneRequest(c: number, t: Tally, round: Round): Promise<void> {
    const controller = new AbortController();
    round.inFlight.set(controller, { streaming: false });
    const shared = rand() < 0.5;
    const promptLength = 16 + Math.floor(rand() * (maxPrompt - 16));
    const content = promptOf(s.tokenizer, promptLength, `#${tag++}`, rand);
    const messages = shared ? [{ role: "system", content: SYSTEM }, { role: "user", content }] : [
      { role: "user", content },
    ];
    // Odd clients leave after 1..maxTokens output chunks; when the answer is shorter, they just read it all.
    const leaveAfter = c % 2 === 1 ? 1 + Math.floor(rand() * maxTokens) : Infinity;
    const body = {
      model: s.modelName,
      messages,
      max_tokens: Math.ceil(maxTokens / 2) + Math.floor(rand() * Math.ceil(maxTokens / 2)),
      n: rand() < 0.125 ? 2 : 1,
      temperature: 1,
      seed: Math.floor(rand() * 1e9),
    };
    try {
      const r = await streamChat(s.url, body, {
        signal: controller.signal,
        onResponse: () => {
          round.inFlight.get(controller)!.streaming = true;
          if (round.over) controller.abort("round over");
        },
        onChunk: (n) => {
          if (n >= leaveAfter) controller.abort("disconnect");
        },
      });
      if (r.error !== null) recordError(t, r.error);
      else if (r.finishReasons.length !== body.n || r.finishReasons.some((f) => !f) || r.completionTokens === 0) {
        recordError(t, `incomplete answer: finish ${JSON.stringify(r.finishReasons)}, ${r.completionTokens} tokens`);
      } else t.ok++;
    } catch (e) {
      if (controller.signal.reason === "disconnect") t.disconnects++;
      else if (controller.signal.reason === "round over") t.cut++;
      else if (controller.signal.reason === "no response") recordError(t, "no response before the settle timeout");
      else recordError(t, `request failed: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      round.inFlight.delete(controller);
    }
  }

  try {
    // Warm up (JIT, first allocations) so round 1 measures the steady state and its RSS is a fair baseline.
    await Promise.all(Array.from({ length: Math.min(o.clients, 4) }, async (_, i) => {
      const content = promptOf(s.tokenizer, maxPrompt, `warm-up ${i}`, rand);
      const r = await streamChat(s.url, { model: s.modelName, messages: [{ role: "user", content }], max_tokens: 2 });
      if (r.error !== null) failures.push(`warm-up: ${r.error}`);
    }));
    let baselineRss: number | null = null;
    for (let round = 1; round <= o.rounds; round++) {
      const tally: Tally = { ok: 0, errors: 0, disconnects: 0, cut: 0, errorSamples: [] };
      const state: Round = { over: false, inFlight: new Map() };
      const serverErrors = s.logger.errors.length;
      const before = await readGauges(s.url);
      const t0 = performance.now();
      const deadline = t0 + o.seconds * 1000;
      const timers = [
        setTimeout(() => {
          state.over = true;
          for (const [c, { streaming }] of state.inFlight) if (streaming) c.abort("round over");
        }, o.seconds * 1000),
        // Responses start as soon as the server has read the body; one that never starts is a hang, not a cut.
        setTimeout(() => {
          for (const c of state.inFlight.keys()) c.abort("no response");
        }, (o.seconds + settleLimit) * 1000),
      ];
      await Promise.all(Array.from({ length: o.clients }, async (_, c) => {
        while (performance.now() < deadline) await oneRequest(c, tally, state);
      }));
      timers.forEach(clearTimeout);
      const seconds = (performance.now() - t0) / 1000;

      // Aborts reach the engine as the server notices the closed connections; wait until it has let go.
      const settleStart = performance.now();
      let g = await readGauges(s.url);
      while (
        (g.num_requests_running > 0 || g.num_requests_waiting > 0 || g.cache_blocks_used > 0) &&
        performance.now() - settleStart < settleLimit * 1000
      ) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        g = await readGauges(s.url);
      }
      const settleSeconds = (performance.now() - settleStart) / 1000;
      for (const line of s.logger.errors.slice(serverErrors)) recordError(tally, `server: ${line}`);
      collectGarbage();
      const mem = Deno.memoryUsage();
      const result: RoundResult = {
        round,
        seconds,
        ok: tally.ok,
        errors: tally.errors,
        disconnects: tally.disconnects,
        cut: tally.cut,
        tokens: g.generation_tokens_total - before.generation_tokens_total,
        running: g.num_requests_running,
        waiting: g.num_requests_waiting,
        cacheBlocksUsed: g.cache_blocks_used,
        cacheBlocksTotal: g.cache_blocks_total,
        settleSeconds,
        rssMb: mem.rss / MIB,
        heapMb: mem.heapUsed / MIB,
        errorSamples: tally.errorSamples,
      };
      rounds.push(result);
      o.onRound?.(result);

      const fail = (why: string) => failures.push(`round ${round}: ${why}`);
      if (result.errors > 0) fail(`${result.errors} errors, e.g. ${result.errorSamples.join(" | ")}`);
      // No token at all is a hang; tokens without a finished request is a backend too slow for the round (notes).
      if (result.tokens === 0) fail("no token was generated");
      else if (result.ok === 0) notes.push(`round ${round}: no request ran to its end (tokens flowed: a slow backend)`);
      if (result.running > 0 || result.waiting > 0) {
        fail(`${result.running} running and ${result.waiting} waiting after ${settleSeconds.toFixed(1)} s`);
      }
      if (result.cacheBlocksUsed > 0) fail(`${result.cacheBlocksUsed} cache blocks still used`);
      baselineRss ??= result.rssMb;
      if (round > 1 && result.rssMb - baselineRss > rssLimit) {
        fail(`RSS grew ${(result.rssMb - baselineRss).toFixed(0)} MiB over round 1 (limit ${rssLimit} MiB)`);
      }
    }
    return { model: o.model, backend: s.model.backend.name, loadSeconds: s.loadSeconds, rounds, failures, notes };
  } finally {
    await s.close();
  }
}

/** A markdown table row of a round. */
function row(r: RoundResult): string {
  return `| ${r.round} | ${
    r.seconds.toFixed(1)
  } | ${r.ok} | ${r.errors} | ${r.disconnects} | ${r.cut} | ${r.tokens} | ` +
    `${r.running} | ${r.waiting} | ${r.cacheBlocksUsed}/${r.cacheBlocksTotal} | ${r.settleSeconds.toFixed(1)} | ` +
    `${r.rssMb.toFixed(0)} | ${r.heapMb.toFixed(0)} |`;
}

const USAGE = `usage: deno run -A bench/load.ts [options]
  --model PRESET|DIR       model (default demo)
  --backend NAME           backend (default auto)
  --rounds N               rounds (default 3)
  --seconds N              length of a round (default 20)
  --clients N              concurrent streaming clients; odd ones disconnect mid-stream (default 32)
  --max-tokens N           max_tokens of a request, randomised down to half (default 16)
  --prompt N               longest prompt in tokens (default 96)
  --max-model-len N        context length (default 1024)
  --max-num-seqs N         engine slots (default 8, as deno task serve)
  --max-num-batched-tokens N  token budget of a step (default 256)
  --settle N               seconds to wait for the engine to release everything after a round (default 30)
  --rss-growth-mb N        allowed RSS growth over round 1 (default 64)
  --seed N                 seed of the clients' choices (default 1)
  --json                   one JSON object instead of the table
Run with --v8-flags=--expose-gc for steadier RSS readings (a collection before each reading).`;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: "demo" },
      backend: { type: "string", default: "auto" },
      rounds: { type: "string", default: "3" },
      seconds: { type: "string", default: "20" },
      clients: { type: "string", default: "32" },
      "max-tokens": { type: "string", default: "16" },
      prompt: { type: "string", default: "96" },
      "max-model-len": { type: "string", default: "1024" },
      "max-num-seqs": { type: "string", default: "8" },
      "max-num-batched-tokens": { type: "string", default: "256" },
      settle: { type: "string", default: "30" },
      "rss-growth-mb": { type: "string", default: "64" },
      seed: { type: "string", default: "1" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const num = (name: keyof typeof values, min = 1) => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min}, got ${values[name]}`);
    return n;
  };
  const prompt = num("prompt", 17);
  if (!values.json) {
    console.log(
      `${values.model}: ${num("rounds")} rounds of ${num("seconds")} s, ${num("clients")} streaming clients ` +
        `(odd ones disconnect mid-stream)`,
    );
  }
  let headed = false;
  const result = await runLoad({
    model: values.model!,
    backend: values.backend,
    rounds: num("rounds"),
    seconds: num("seconds"),
    clients: num("clients"),
    maxTokens: num("max-tokens"),
    promptTokens: prompt,
    maxModelLen: num("max-model-len"),
    maxNumSeqs: num("max-num-seqs"),
    maxNumBatchedTokens: num("max-num-batched-tokens"),
    settleSeconds: num("settle", 0),
    rssGrowthMb: num("rss-growth-mb", 0),
    seed: num("seed", 0),
    onRound: (r) => {
      if (values.json) return;
      if (!headed) {
        headed = true;
        console.log(
          "\n| round | s | ok | errors | disconnects | cut at end | tokens | running | waiting | blocks used | " +
            "settle s | RSS MiB | heap MiB |",
        );
        console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
      }
      console.log(row(r));
    },
  });
  if (values.json) console.log(JSON.stringify(result));
  else {
    console.log(`\n${result.model} on ${result.backend}, loaded in ${result.loadSeconds.toFixed(1)} s`);
    for (const note of result.notes) console.log(`note: ${note}`);
    console.log(result.failures.length === 0 ? "PASS" : `FAIL\n  ${result.failures.join("\n  ")}`);
  }
  return result.failures.length === 0 ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`bench/load: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
