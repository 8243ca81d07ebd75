/**
 * The engine on the real `tiny` model (reference backend): it must give exactly the tokens of a plain greedy loop,
 * whatever else shares the batch, however prompts are chunked, cached or preempted, and free every cache block
 * when sequences end or are cancelled.
 */
import { assert, assertEquals, assertNotEquals, assertRejects } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { EngineClosedError, ModelEngine, type ModelEngineOptions } from "./engine.ts";
import type { GeneratedToken, GenerateRequest, Generation, GenerationEnd, SamplingParams } from "./types.ts";
import { loadModel, type LoadModelOptions, type Model } from "./model.ts";
import { GREEDY } from "./sampler.ts";
import type { TokenStream } from "./stream.ts";

const EOS = 2;

async function withModel<T>(opts: LoadModelOptions, fn: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel("tiny", {
    backend: "reference",
    maxModelLen: 128,
    maxSeqs: 4,
    maxTokens: 16,
    quiet: true,
    ...opts,
  });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

async function withEngine<T>(
  model: Model,
  opts: Partial<ModelEngineOptions>,
  fn: (e: ModelEngine) => Promise<T>,
): Promise<T> {
  const engine = await ModelEngine.create(model, { eosId: EOS, ...opts });
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}

/** A prompt of `n` ids: `<s>` then ids drawn from the seed (never the special ids 0–2). */
function prompt(seed: number, n: number): number[] {
  const rand = mulberry32(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(rand() * 131000))];
}

interface Result {
  ids: number[];
  tokens: GeneratedToken[];
  end: GenerationEnd;
}

async function collect(gen: Generation): Promise<Result> {
  const tokens: GeneratedToken[] = [];
  for (;;) {
    const r = await gen.next();
    if (r.done) return { ids: tokens.map((t) => t.id), tokens, end: r.value };
    tokens.push(r.value);
  }
}

function request(promptIds: number[], maxTokens: number, extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return { promptIds, sampling: GREEDY, maxTokens, ...extra };
}

/** Each request on its own, one after another. */
async function alone(engine: ModelEngine, reqs: GenerateRequest[]): Promise<number[][]> {
  const out: number[][] = [];
  for (const req of reqs) out.push((await collect(engine.generate(req))).ids);
  return out;
}

/** All requests at once. */
async function together(engine: ModelEngine, reqs: GenerateRequest[]): Promise<number[][]> {
  return (await Promise.all(reqs.map((req) => collect(engine.generate(req))))).map((r) => r.ids);
}

function assertIdle(engine: ModelEngine, model: Model): void {
  const s = engine.stats();
  assertEquals([s.running, s.waiting, s.cacheBlocksUsed], [0, 0, 0], "no sequence and no block left");
  assertEquals(model.pool.usedBlocks, 0);
}

/** Greedy decoding the plain way: the whole sequence through `model.forward`, argmax of the last row, repeat. */
async function manualGreedy(model: Model, ids: number[], n: number): Promise<number[]> {
  const vocab = model.config.vocab_size;
  const seq = [...ids];
  const out: number[] = [];
  while (out.length < n) {
    const logits = await model.forward(seq);
    const last = logits.subarray((seq.length - 1) * vocab, seq.length * vocab);
    let best = 0;
    for (let j = 1; j < vocab; j++) if (last[j] > last[best]) best = j;
    if (best === EOS) break;
    out.push(best);
    seq.push(best);
  }
  return out;
}

Deno.test("engine: greedy generation equals a manual greedy loop over model.forward", async () => {
  await withModel({}, async (model) => {
    const p = prompt(1, 6);
    const expected = await manualGreedy(model, p, 8);
    assertEquals(expected.length, 8, "the reference loop did not hit </s>");
    await withEngine(model, {}, async (engine) => {
      assert(engine.ready);
      assertEquals(engine.maxModelLen, 128);
      const r = await collect(engine.generate(request(p, 8, { sampling: { ...GREEDY, logprobs: 2 } })));
      assertEquals(r.ids, expected);
      assertEquals(r.end, { reason: "length", cachedTokens: 0 });
      for (const t of r.tokens) {
        assert(t.logprob! <= 0 && t.topLogprobs!.length === 2);
        assertEquals(t.topLogprobs![0].id, t.id, "greedy picks the most likely");
      }
      const s = engine.stats();
      // The prompt, then every generated token but the last (sampled, never fed back).
      assertEquals(s.tokensProcessed, p.length + 7);
      assertEquals(s.cacheBlocksTotal, model.limits.numBlocks);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: two and four concurrent requests give the same greedy tokens as alone", async () => {
  await withModel({}, async (model) => {
    await withEngine(model, {}, async (engine) => {
      const reqs = [5, 9, 13, 20].map((n, i) => request(prompt(10 + i, n), 10 - i));
      const solo = await alone(engine, reqs);
      assertEquals(await together(engine, reqs.slice(0, 2)), solo.slice(0, 2));
      assertEquals(await together(engine, reqs), solo);
      assertEquals(engine.stats().batchSize > 0, true);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: a prompt longer than the step budget is chunked; running streams keep decoding meanwhile", async () => {
  const long = prompt(20, 40);
  const short = prompt(21, 4);
  // Reference: the whole prompt in one step, on a model whose step takes 64 tokens.
  const expected = await withModel(
    { maxTokens: 64 },
    (model) => withEngine(model, {}, async (engine) => (await collect(engine.generate(request(long, 6)))).ids),
  );
  await withModel({}, async (model) => {
    await withEngine(model, { maxTokensPerStep: 5 }, async (engine) => {
      const events: string[] = [];
      const log = async (name: string, gen: Generation) => {
        const r = await collect(gen);
        for (const _ of r.ids) events.push(name);
        events.push(`${name}:end`);
        return r.ids;
      };
      const a = log("short", engine.generate(request(short, 8)));
      const b = log("long", engine.generate(request(long, 6)));
      const [, longIds] = await Promise.all([a, b]);
      assertEquals(longIds, expected);
      // 1 decode + 4 prompt tokens per step: the short stream is done before the long prompt has been read.
      assertEquals(events.indexOf("short:end") < events.indexOf("long"), true, events.join(" "));
      assert(engine.stats().steps >= 40 / 4, "the long prompt took many steps");
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: a shared prefix is served from the cache and gives the same tokens", async () => {
  const prefix = prompt(30, 40);
  const first = [...prefix, 501, 502, 503];
  const second = [...prefix, 601, 602, 603, 604, 605];
  await withModel({}, async (model) => {
    const uncached = await withEngine(model, { prefixCaching: false }, async (engine) => {
      const r = await collect(engine.generate(request(second, 6)));
      assertEquals(r.end.cachedTokens, 0);
      return r.ids;
    });
    await withEngine(model, {}, async (engine) => {
      const a = await collect(engine.generate(request(first, 6)));
      const tokensBefore = engine.stats().tokensProcessed;
      const b = await collect(engine.generate(request(second, 6)));
      assertEquals(b.end.cachedTokens, 32, "two full blocks of the 40-token prefix");
      assertEquals(b.ids, uncached);
      assertEquals(engine.stats().tokensProcessed - tokensBefore, second.length - 32 + 5, "cached tokens are skipped");
      assert(a.ids.length === 6);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: when cache blocks run out, sequences are preempted and recomputed with the same tokens", async () => {
  // 3 blocks of 16 tokens: prompts of one block each are admitted, then need a second block to go on.
  await withModel({ numBlocks: 3 }, async (model) => {
    const reqs = [0, 1, 2, 3].map((i) => request(prompt(40 + i, 15 - i), 10));
    for (const prefixCaching of [true, false]) {
      await withEngine(model, { prefixCaching }, async (engine) => {
        const solo = await alone(engine, reqs);
        assertEquals(engine.stats().preemptions, 0);
        assertEquals(await together(engine, reqs), solo);
        assert(engine.stats().preemptions > 0, "the pool was too small for all four");
        assertIdle(engine, model);
      });
    }
    // A sequence that cannot fit even alone fails (after the others had their turn) instead of looping forever.
    await withEngine(model, {}, async (engine) => {
      const big = engine.generate(request(prompt(45, 40), 30));
      const small = collect(engine.generate(reqs[0]));
      await assertRejects(() => collect(big), RangeError, "does not fit in the KV cache");
      assertEquals((await small).ids, (await alone(engine, [reqs[0]]))[0]);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: cancelling (abort, return()) mid-stream or while queued frees the slot and the blocks", async () => {
  await withModel({}, async (model) => {
    await withEngine(model, { maxNumSeqs: 3 }, async (engine) => {
      const controller = new AbortController();
      const a = engine.generate(request(prompt(50, 8), 30, { signal: controller.signal }));
      const b = engine.generate(request(prompt(51, 9), 30));
      const c = engine.generate(request(prompt(52, 10), 12));
      const queuedAbort = new AbortController();
      const d = engine.generate(request(prompt(53, 11), 30, { signal: queuedAbort.signal }));
      const e = engine.generate(request(prompt(54, 5), 30)); // queued, ended by return() before its first read
      assertEquals(engine.stats().waiting, 5);

      assertEquals((await a.next()).done, false);
      assertEquals((await a.next()).done, false);
      assertEquals((await b.next()).done, false);
      assertEquals(engine.stats().waiting, 2, "d and e wait for a slot");
      queuedAbort.abort();
      assertEquals(await d.next(), { done: true, value: { reason: "abort", cachedTokens: 0 } });
      await e.return({ reason: "abort", cachedTokens: 0 });
      assertEquals(engine.stats().waiting, 0);

      const pending = a.next(); // aborted while waiting for a token
      controller.abort();
      assertEquals((await pending).value, { reason: "abort", cachedTokens: 0 });
      assertEquals(engine.stats().running, 2, "a's slot is free at once");

      await b.next();
      const ret = await b.return({ reason: "abort", cachedTokens: 0 });
      assertEquals(ret.done, true);
      assertEquals(await b.next(), { done: true, value: { reason: "abort", cachedTokens: 0 } });

      const rest = await collect(c);
      assertEquals(rest.end.reason, "length");
      assertEquals(rest.ids.length, 12);
      assertIdle(engine, model);
      // Later requests still run.
      assertEquals((await collect(engine.generate(request(prompt(55, 6), 3)))).ids.length, 3);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: a seed gives the same tokens at temperature 1 whatever shares the batch", async () => {
  await withModel({}, async (model) => {
    await withEngine(model, {}, async (engine) => {
      const sampling = (seed?: number): SamplingParams => ({ ...GREEDY, temperature: 1, topP: 0.95, seed });
      const p = prompt(60, 7);
      const seeded = request(p, 10, { sampling: sampling(1234) });
      const [solo] = await alone(engine, [seeded]);
      const others = [
        request(prompt(61, 12), 10, { sampling: sampling(5) }),
        request(prompt(62, 3), 10),
        request(prompt(63, 9), 10, { sampling: { ...sampling(), topK: 40, presencePenalty: 1 } }),
      ];
      const [mixed] = await together(engine, [seeded, ...others]);
      assertEquals(mixed, solo);
      const [other] = await alone(engine, [request(p, 10, { sampling: sampling(1235) })]);
      assertNotEquals(other, solo);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: maxTokens ends with length, stop ids with stop, </s> with eos (neither yielded)", async () => {
  await withModel({}, async (model) => {
    const p = prompt(70, 8);
    const full = await withEngine(model, {}, async (engine) => {
      const full = (await collect(engine.generate(request(p, 10)))).ids;
      assertEquals(full.length, 10);
      const short = await collect(engine.generate(request(p, 3)));
      assertEquals(short, { ids: full.slice(0, 3), tokens: short.tokens, end: { reason: "length", cachedTokens: 0 } });
      const at = full.findIndex((id, i) => i >= 2 && full.indexOf(id) === i);
      const stopped = await collect(engine.generate(request(p, 10, { stopIds: [full[at], 99] })));
      assertEquals(stopped.ids, full.slice(0, at));
      assertEquals(stopped.end, { reason: "stop", stopId: full[at], cachedTokens: 0 });
      // Context end: a prompt of maxModelLen − 2 tokens has room for 2.
      const edge = await collect(engine.generate(request(prompt(71, 126), 10)));
      assertEquals([edge.ids.length, edge.end.reason], [2, "length"]);
      const none = await collect(engine.generate(request(prompt(72, 128), 10)));
      assertEquals([none.ids.length, none.end.reason], [0, "length"]);
      assertIdle(engine, model);
      return full;
    });
    const at = full.findIndex((id, i) => i >= 2 && full.indexOf(id) === i);
    await withEngine(model, { eosId: full[at] }, async (engine) => {
      const r = await collect(engine.generate(request(p, 10)));
      assertEquals(r.ids, full.slice(0, at));
      assertEquals(r.end, { reason: "eos", cachedTokens: 0 });
    });
  });
});

Deno.test("engine: bad requests reject; close rejects pending generations and frees their blocks", async () => {
  await withModel({}, async (model) => {
    const engine = await ModelEngine.create(model, { eosId: EOS });
    await assertRejects(() => engine.generate(request([], 4)).next(), RangeError, "empty");
    await assertRejects(() => engine.generate(request(prompt(80, 129), 4)).next(), RangeError, "maxModelLen");
    await assertRejects(() => engine.generate(request([1, 200_000], 4)).next(), RangeError, "out of range");
    const running = engine.generate(request(prompt(81, 10), 50));
    assertEquals((await running.next()).done, false);
    const queued = [1, 2, 3, 4].map((i) => engine.generate(request(prompt(81 + i, 10), 50)));
    await engine.close();
    assert(!engine.ready);
    await assertRejects(() => running.next(), EngineClosedError);
    for (const q of queued) await assertRejects(() => q.next(), EngineClosedError);
    await assertRejects(() => engine.generate(request(prompt(90, 4), 4)).next(), EngineClosedError);
    assertEquals(model.pool.usedBlocks, 0);
    await engine.close(); // twice is fine
  });
});

Deno.test("engine: a reader that stops reading pauses its sequence at the bound; others go on; reading resumes it", async () => {
  await withModel({}, async (model) => {
    // No </s> (an id never sampled), so every sequence runs to its maxTokens.
    const opts = { eosId: -1 };
    const reqA = request(prompt(100, 6), 40), reqB = request(prompt(101, 7), 30);
    const [soloA] = await withEngine(model, opts, (e) => alone(e, [reqA]));
    await withEngine(model, { ...opts, streamBufferTokens: 4 }, async (engine) => {
      const a = engine.generate(reqA) as TokenStream;
      const first = await a.next(); // one token read, then none while b runs
      const b = await collect(engine.generate(reqB));
      assertEquals([b.ids.length, b.end.reason], [30, "length"], "the other sequence finishes");
      assertEquals(a.buffered, 4, "a generated the token read and 4 more, then stopped");
      const stats = engine.stats();
      assertEquals([stats.running, stats.paused], [1, 1]);
      // Asleep, not spinning or stepping: a few event-loop turns run no step.
      for (let i = 0; i < 3; i++) await new Promise((resolve) => setTimeout(resolve, 0));
      assertEquals([engine.stats().steps, a.buffered], [stats.steps, 4]);
      const rest = await collect(a);
      assertEquals(rest.end.reason, "length");
      assertEquals([first.value as GeneratedToken, ...rest.tokens].map((t) => t.id), soloA, "same tokens as alone");
      assertEquals(engine.stats().paused, 0);
      assertIdle(engine, model);
    });
  });
});

Deno.test("engine: paused sequences give their slots to new requests; cancelling one frees its blocks", async () => {
  await withModel({}, async (model) => {
    const opts = { eosId: -1 };
    const [reqA, reqB, reqC] = [110, 111, 112].map((seed, i) => request(prompt(seed, 5 + i), 12));
    const [, , soloC] = await withEngine(model, opts, (e) => alone(e, [reqA, reqB, reqC]));
    await withEngine(model, { ...opts, streamBufferTokens: 2, maxNumSeqs: 2 }, async (engine) => {
      // a and c take both slots and are never read; b can only run if a paused one steps aside.
      const a = engine.generate(reqA) as TokenStream, c = engine.generate(reqC) as TokenStream;
      const b = await collect(engine.generate(reqB));
      assertEquals(b.ids.length, 12);
      const s = engine.stats();
      assert(s.preemptions >= 1, "c (the latest admitted paused one) was preempted for b");
      assertEquals([s.running, s.waiting, s.paused, a.buffered, c.buffered], [1, 1, 2, 2, 2]);
      assert(s.cacheBlocksUsed > 0, "a still holds its blocks");
      await a.return({ reason: "abort", cachedTokens: 0 });
      assertEquals([engine.stats().running, engine.stats().cacheBlocksUsed], [0, 0], "a's slot and blocks are free");
      // Reading c resumes it: readmitted, its prompt and output recomputed, to the same tokens as alone.
      assertEquals((await collect(c)).ids, soloC);
      assertIdle(engine, model);
    });
    await assertRejects(() => ModelEngine.create(model, { ...opts, streamBufferTokens: 0 }), RangeError, "≥ 1");
  });
});
