import { assert, assertEquals, assertNotEquals } from "./assert.ts";
import type { GenerationEnd } from "../engine/types.ts";
import { FakeEngine } from "./fake_engine.ts";
import { GREEDY } from "../engine/sampler.ts";

async function drain(gen: AsyncGenerator<{ id: number }, GenerationEnd>): Promise<[number[], GenerationEnd]> {
  const ids: number[] = [];
  for (let r = await gen.next();; r = await gen.next()) {
    if (r.done) return [ids, r.value];
    ids.push(r.value.id);
  }
}

Deno.test("fake engine: temperature 0 plays the script, then </s>; maxTokens and stop ids cut it", async () => {
  const engine = new FakeEngine({ script: [1100, 1101, 1102, 1103] });
  assertEquals(await drain(engine.generate({ promptIds: [1], sampling: GREEDY, maxTokens: 10 })), [
    [1100, 1101, 1102, 1103],
    { reason: "eos", cachedTokens: 0 },
  ]);
  assertEquals(await drain(engine.generate({ promptIds: [1], sampling: GREEDY, maxTokens: 2 })), [
    [1100, 1101],
    { reason: "length", cachedTokens: 0 },
  ]);
  assertEquals(await drain(engine.generate({ promptIds: [1], sampling: GREEDY, maxTokens: 9, stopIds: [1102] })), [
    [1100, 1101],
    { reason: "stop", stopId: 1102, cachedTokens: 0 },
  ]);
  assertEquals(engine.stats().running, 0);
});

Deno.test("fake engine: the same seed gives the same tokens", async () => {
  const engine = new FakeEngine({ vocab: Array.from({ length: 100 }, (_, i) => 1000 + i) });
  const sample = (seed: number) =>
    drain(engine.generate({ promptIds: [1], sampling: { ...GREEDY, temperature: 1, seed }, maxTokens: 20 }));
  const [a] = await sample(3);
  const [b] = await sample(3);
  const [c] = await sample(4);
  assertEquals(a, b);
  assertNotEquals(a, c);
  assertEquals(a.length, 20);
});

Deno.test("fake engine: logprobs are consistent and the chosen token leads", async () => {
  const engine = new FakeEngine({ script: [1100, 1101], vocab: [1100, 1101, 1102, 1103] });
  const req = { promptIds: [1], sampling: { ...GREEDY, logprobs: 3 }, maxTokens: 5 };
  const first = [];
  for await (const t of engine.generate(req)) first.push(t);
  const second = [];
  for await (const t of engine.generate(req)) second.push(t);
  assertEquals(first, second);
  for (const t of first) {
    assertEquals(t.topLogprobs!.length, 3);
    assertEquals(t.topLogprobs![0], { id: t.id, logprob: t.logprob });
    assertEquals(new Set(t.topLogprobs!.map((x) => x.id)).size, 3);
  }
});

Deno.test("fake engine: abort ends a slow sequence at once and frees its slot", async () => {
  const engine = new FakeEngine({ script: Array(1000).fill(1100), delayMs: 50 });
  const controller = new AbortController();
  const gen = engine.generate({ promptIds: [1, 2, 3], sampling: GREEDY, maxTokens: 1000, signal: controller.signal });
  await gen.next();
  assertEquals(engine.stats().running, 1);
  assert(engine.stats().cacheBlocksUsed > 0);
  const t0 = performance.now();
  const pending = gen.next();
  controller.abort();
  assertEquals(await pending, { done: true, value: { reason: "abort", cachedTokens: 0 } });
  assert(performance.now() - t0 < 40);
  assertEquals(engine.stats().running, 0);
  // return() by the consumer frees it too.
  const gen2 = engine.generate({ promptIds: [1], sampling: GREEDY, maxTokens: 1000 });
  await gen2.next();
  await gen2.return({ reason: "abort", cachedTokens: 0 });
  assertEquals(engine.stats().running, 0);
});
