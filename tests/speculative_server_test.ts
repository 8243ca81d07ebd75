/**
 * Speculative decoding behind the server: the same greedy requests to a server with an EAGLE draft and to one
 * without give the same answers — n > 1, logprobs (the target's), a JSON schema (the grammar's mask cuts proposals
 * it forbids), stop strings — a cancelled stream frees its sequence, and /metrics carries the spec_decode counters.
 */
import { assert, assertAlmostEquals, assertEquals } from "./assert.ts";
import { MemoryLogger, MODEL, tokenizer } from "./server_helpers.ts";
import { writeSpeculativePair } from "./speculative_helpers.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { createServer, type ServeHandle } from "../server/server.ts";

interface Served {
  model: Model;
  engine: ModelEngine;
  handle: ServeHandle;
  post(body: unknown): Promise<Record<string, any>>;
  close(): Promise<void>;
}

async function serve(target: string, draft?: string): Promise<Served> {
  const model = await loadModel(target, {
    backend: "wasm",
    dtype: "f32",
    cacheDtype: "f32",
    maxModelLen: 256,
    maxSeqs: 4,
    quiet: true,
    ...(draft ? { speculative: { model: draft, numTokens: 3 } } : {}),
  });
  const tok = await tokenizer();
  const engine = await ModelEngine.create(model, { eosId: tok.eosId });
  const server = createServer({ engine, tokenizer: tok, modelName: MODEL, logger: new MemoryLogger() });
  const handle = server.serve({ hostname: "127.0.0.1", port: 0 });
  return {
    model,
    engine,
    handle,
    async post(body) {
      const res = await fetch(`${handle.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, temperature: 0, ...body as object }),
      });
      const json = await res.json();
      assertEquals(res.status, 200, JSON.stringify(json));
      return json;
    },
    async close() {
      await handle.shutdown();
      await engine.close();
      model.dispose();
    },
  };
}

const messages = [{ role: "user", content: "Tell me about the mistral, the wind of the Rhône valley." }];

/** Choices without their ids and timings, logprobs compared to 1e-5 (same rows, same sampler). */
function assertSameChoices(a: Record<string, any>, b: Record<string, any>, what: string): void {
  assertEquals(a.choices.length, b.choices.length, what);
  for (const [i, ca] of a.choices.entries()) {
    const cb = b.choices[i];
    assertEquals(ca.message, cb.message, `${what}: choice ${i}`);
    assertEquals(ca.finish_reason, cb.finish_reason, `${what}: choice ${i}`);
    const la = ca.logprobs?.content ?? [], lb = cb.logprobs?.content ?? [];
    assertEquals(la.length, lb.length, what);
    for (const [j, t] of la.entries()) {
      assertEquals(t.token, lb[j].token, what);
      assertAlmostEquals(t.logprob, lb[j].logprob, 1e-5, what);
      assertEquals(t.top_logprobs.map((x: { token: string }) => x.token), lb[j].top_logprobs.map((x: any) => x.token));
    }
  }
  assertEquals(a.usage, b.usage, what);
}

Deno.test({
  name: "speculative server: the same answers as without (n, logprobs, JSON schema, stop), cancel frees, /metrics",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const pair = await writeSpeculativePair(dir, { outScale: 0.25 });
    const plain = await serve(pair.target), spec = await serve(pair.target, pair.draft);
    try {
      const requests: [string, Record<string, unknown>][] = [
        ["n and logprobs", { messages, n: 2, logprobs: true, top_logprobs: 2, max_tokens: 24 }],
        [
          "json schema",
          {
            messages,
            max_tokens: 48,
            response_format: {
              type: "json_schema",
              json_schema: {
                name: "wind",
                schema: {
                  type: "object",
                  properties: { name: { type: "string", maxLength: 12 }, speed: { type: "integer" } },
                  required: ["name", "speed"],
                },
              },
            },
          },
        ],
      ];
      for (const [what, body] of requests) {
        const [a, b] = [await plain.post(body), await spec.post(body)];
        assertSameChoices(b, a, what);
        if (what === "json schema") JSON.parse(b.choices[0].message.content);
      }
      // A stop string from the middle of the plain answer cuts both at the same place.
      const full = (await plain.post({ messages, max_tokens: 24 })).choices[0].message.content as string;
      const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
      const [a, b] = [
        await plain.post({ messages, max_tokens: 24, stop }),
        await spec.post({ messages, max_tokens: 24, stop }),
      ];
      assertSameChoices(b, a, `stop ${JSON.stringify(stop)}`);
      assertEquals(b.choices[0].finish_reason, "stop");

      // A stream cancelled after its first chunk frees its sequence and blocks.
      const res = await fetch(`${spec.handle.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, messages, stream: true, max_tokens: 200, temperature: 0 }),
      });
      const reader = res.body!.getReader();
      await reader.read();
      await reader.cancel();
      const t0 = performance.now();
      while (spec.engine.stats().running > 0 && performance.now() - t0 < 5000) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assertEquals(spec.engine.stats().running, 0);
      assertEquals(spec.engine.stats().cacheBlocksUsed, 0);

      const metrics = await (await fetch(`${spec.handle.url}/metrics`)).text();
      const value = (name: string) =>
        Number(new RegExp(`^tramontane_${name}\\{[^}]*\\} (\\S+)$`, "m").exec(metrics)?.[1]);
      assert(value("spec_decode_num_draft_tokens_total") > 0, metrics);
      assert(value("spec_decode_num_accepted_tokens_total") > 0, metrics);
      const rate = value("spec_decode_acceptance_rate");
      assert(rate > 0 && rate <= 1, metrics);
      assertEquals(value("spec_decode_num_speculative_tokens"), 3);
      assert(!(await (await fetch(`${plain.handle.url}/metrics`)).text()).includes("spec_decode"));
    } finally {
      await plain.close();
      await spec.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
