/**
 * The short CI version of `bench/load.ts`: the `tiny` model on the reference backend, 8 streaming clients (half of
 * them disconnecting mid-stream) for two rounds of 4 s. Same checks as the script: no errors, every slot and cache
 * block free after each round (from `/metrics`), no RSS growth over round 1.
 */
import { runLoad } from "../bench/load.ts";
import { assert, assertEquals } from "./assert.ts";

Deno.test("load: 8 streaming clients, half leaving mid-stream, leave no slot, block or memory behind", async () => {
  const result = await runLoad({
    model: "tiny",
    backend: "reference",
    rounds: 2,
    seconds: 4,
    clients: 8,
    maxTokens: 6,
    promptTokens: 48,
    maxModelLen: 256,
    maxNumSeqs: 4,
    settleSeconds: 15,
    rssGrowthMb: 64,
  });
  const table = JSON.stringify(result.rounds.map(({ errorSamples: _, ...r }) => r));
  assertEquals(result.failures, [], table);
  assertEquals(result.rounds.length, 2);
  for (const r of result.rounds) {
    // The load really happened: answers completed, clients left mid-stream, and tokens flowed.
    assert(r.ok > 0 && r.disconnects > 0 && r.tokens > 0, table);
    assertEquals([r.errors, r.running, r.waiting, r.cacheBlocksUsed], [0, 0, 0, 0], table);
  }
});
