/**
 * Prometheus metrics in the text exposition format (version 0.0.4), without a client library: a few counters,
 * histograms and gauges read from the engine at scrape time.
 *
 * @module
 */

import type { EngineStats } from "../engine/types.ts";

/** Prefix of every metric name. */
const PREFIX = "tramontane_";

/** Seconds; spans a fast GPU decode step to a slow CPU prefill. */
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const ITL_BUCKETS = [0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 1];
const E2E_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960];

/** A histogram with fixed upper bounds; `observe` is O(buckets). */
class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: number[]) {
    this.counts = new Array(bounds.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]) this.counts[i]++;
  }
}

/** Formats a number as Prometheus does (`+Inf`, `NaN`, plain decimals). */
function num(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isNaN(v) ? "NaN" : String(v);
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/**
 * The server's metrics. Routes record into it; `/metrics` renders it with the engine's current stats.
 *
 * @example
 * ```ts
 * const m = new Metrics("demo");
 * m.request("/v1/chat/completions", 200);
 * m.timeToFirstToken(0.05);
 * const text = m.render(engine.stats());
 * ```
 */
export class Metrics {
  readonly #requests = new Map<string, number>(); // `${route}\u0000${status}` → count
  #promptTokens = 0;
  #generationTokens = 0;
  readonly #ttft = new Histogram(TTFT_BUCKETS);
  readonly #itl = new Histogram(ITL_BUCKETS);
  readonly #e2e = new Histogram(E2E_BUCKETS);

  /** `modelName` becomes the `model_name` label on every sample, as vLLM labels them. */
  constructor(readonly modelName: string) {}

  /** Counts one finished request by route and HTTP status. */
  request(route: string, status: number): void {
    const key = `${route}\u0000${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** Adds the token counts of one finished generation request. */
  tokens(prompt: number, generated: number): void {
    this.#promptTokens += prompt;
    this.#generationTokens += generated;
  }

  /** Records a time to first token, in seconds. */
  timeToFirstToken(seconds: number): void {
    this.#ttft.observe(seconds);
  }

  /** Records a gap between two tokens of one sequence, in seconds. */
  interTokenLatency(seconds: number): void {
    this.#itl.observe(seconds);
  }

  /** Records a whole generation request's duration, in seconds. */
  requestLatency(seconds: number): void {
    this.#e2e.observe(seconds);
  }

  /** Renders everything in the Prometheus text format. */
  render(stats: EngineStats): string {
    const model = `model_name="${escapeLabel(this.modelName)}"`;
    const out: string[] = [];
    const head = (name: string, type: string, help: string) => {
      out.push(`# HELP ${PREFIX}${name} ${help}`, `# TYPE ${PREFIX}${name} ${type}`);
    };
    const sample = (name: string, value: number, labels = "") => {
      out.push(`${PREFIX}${name}{${model}${labels}} ${num(value)}`);
    };

    head("requests_total", "counter", "HTTP requests finished, by route and status.");
    for (const [key, count] of this.#requests) {
      const [route, status] = key.split("\u0000");
      sample("requests_total", count, `,route="${escapeLabel(route)}",status="${status}"`);
    }
    head("prompt_tokens_total", "counter", "Prompt tokens of generation requests.");
    sample("prompt_tokens_total", this.#promptTokens);
    head("generation_tokens_total", "counter", "Tokens generated.");
    sample("generation_tokens_total", this.#generationTokens);
    head("engine_tokens_processed_total", "counter", "Tokens the engine ran through the model.");
    sample("engine_tokens_processed_total", stats.tokensProcessed);

    const gauges: [string, number, string][] = [
      ["num_requests_running", stats.running, "Sequences being generated."],
      ["num_requests_waiting", stats.waiting, "Sequences waiting for a slot or cache blocks."],
      ["batch_size", stats.batchSize, "Sequences in the last engine step."],
      ["cache_blocks_used", stats.cacheBlocksUsed, "KV-cache blocks in use."],
      ["cache_blocks_total", stats.cacheBlocksTotal, "KV-cache blocks in all."],
      [
        "cache_usage_ratio",
        stats.cacheBlocksTotal > 0 ? stats.cacheBlocksUsed / stats.cacheBlocksTotal : 0,
        "Fraction of KV-cache blocks in use.",
      ],
    ];
    for (const [name, value, help] of gauges) {
      head(name, "gauge", help);
      sample(name, value);
    }

    const spec = stats.speculative;
    if (spec) {
      // Speculative decoding (an EAGLE draft head): vLLM's spec_decode counters, and the two ratios they give.
      const counters: [string, number, string][] = [
        ["spec_decode_num_draft_tokens_total", spec.proposed, "Tokens the draft proposed that the target verified."],
        ["spec_decode_num_accepted_tokens_total", spec.accepted, "Proposed tokens the target accepted."],
        [
          "spec_decode_num_drafts_total",
          spec.verifications,
          "Verifications: one per sequence and step with proposals.",
        ],
        ["spec_decode_draft_steps_total", spec.draftSteps, "Forwards of the draft head."],
      ];
      for (const [name, value, help] of counters) {
        head(name, "counter", help);
        sample(name, value);
      }
      const ratios: [string, number, string][] = [
        ["spec_decode_num_speculative_tokens", spec.numTokens, "Tokens the draft proposes per sequence and step."],
        [
          "spec_decode_acceptance_rate",
          spec.proposed > 0 ? spec.accepted / spec.proposed : 0,
          "Accepted over proposed tokens since start.",
        ],
        [
          "spec_decode_mean_accepted_length",
          spec.verifications > 0 ? spec.accepted / spec.verifications : 0,
          "Proposals accepted per verification since start (each verification also gives one token of its own).",
        ],
      ];
      for (const [name, value, help] of ratios) {
        head(name, "gauge", help);
        sample(name, value);
      }
    }

    const histograms: [string, Histogram, string][] = [
      ["time_to_first_token_seconds", this.#ttft, "Time from request arrival to the first generated token."],
      ["inter_token_latency_seconds", this.#itl, "Time between consecutive tokens of one sequence."],
      ["request_duration_seconds", this.#e2e, "Time from arrival to the last token of a generation request."],
    ];
    for (const [name, h, help] of histograms) {
      head(name, "histogram", help);
      for (let i = 0; i < h.bounds.length; i++) sample(`${name}_bucket`, h.counts[i], `,le="${num(h.bounds[i])}"`);
      sample(`${name}_bucket`, h.count, `,le="+Inf"`);
      sample(`${name}_sum`, h.sum);
      sample(`${name}_count`, h.count);
    }
    return out.join("\n") + "\n";
  }
}
