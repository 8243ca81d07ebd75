import { assert, assertEquals } from "../tests/assert.ts";
import { BatchPolicy } from "./batching.ts";
import { BlockPool } from "./kv_cache.ts";
import { GREEDY } from "./sampler.ts";
import { Sequence } from "./sequence.ts";
import { TokenStream } from "./stream.ts";

function sequence(promptIds: number[]): Sequence {
  return new Sequence({ promptIds, sampling: GREEDY, maxTokens: 10 }, new TokenStream(() => {}), { maxModelLen: 64 });
}

Deno.test("BatchPolicy: proposals take only empty blocks; room held for them never preempts nor evicts", () => {
  // Three blocks of 4: A (3 tokens) and B (4 tokens) take one each after their prefill.
  const pool = new BlockPool({ numBlocks: 3, blockSize: 4 });
  const policy = new BatchPolicy({ pool, maxNumSeqs: 4, maxTokens: 64, prefixCaching: true });
  const a = sequence([11, 12, 13]), b = sequence([21, 22, 23, 24]);
  policy.add(a);
  policy.add(b);
  let plan = policy.next();
  assertEquals(plan.chunks.map((c) => [c.start, c.count]), [[0, 3], [0, 4]]);
  policy.commit(plan.chunks);
  a.tokens.push(14);
  b.tokens.push(25);
  // The draft proposes two for A (positions 4 and 5: a second block, the last empty one), as the engine does.
  assert(pool.growFromEmpty(a.blocks!, a.computed + 1 + 2));
  a.spec = { proposals: [15, 16], probs: [null, null] };
  assertEquals(pool.emptyBlocks, 0);
  // B's own token (position 4) needs a block: A's held room goes back instead of B being preempted, and A's
  // proposals, with no empty block left, are not verified this step.
  plan = policy.next();
  assertEquals(policy.preemptions, 0);
  assertEquals(plan.chunks.map((c) => [c.seq === a ? "a" : "b", c.start, c.count, c.draft?.proposals.length ?? 0]), [
    ["a", 3, 1, 0],
    ["b", 4, 1, 0],
  ]);
  assertEquals(a.blocks!.blockTable.length, 1);
  assertEquals(b.blocks!.blockTable.length, 2);
  policy.commit(plan.chunks);

  // A cached prefix is never evicted for proposals: B finishes, its full first block stays cached (evictable).
  policy.remove(b);
  a.tokens.push(15);
  assertEquals(pool.emptyBlocks, 1);
  a.spec = { proposals: [16, 17, 18, 19, 20], probs: [null, null, null, null, null] };
  plan = policy.next(); // A at 4 + 5 proposals: two more blocks wanted, one empty: three proposals fit (4..7)
  assertEquals(plan.chunks.map((c) => [c.start, c.count, c.draft?.proposals.length ?? 0]), [[4, 1, 3]]);
  assertEquals(pool.emptyBlocks, 0);
  assertEquals(pool.reusePrefix(pool.newSequence(), [21, 22, 23, 24, 99]), 4, "B's block is still cached");
});

Deno.test("BlockPool: growFromEmpty takes no cached block; shrink gives back the room past the tokens", () => {
  const pool = new BlockPool({ numBlocks: 2, blockSize: 2 });
  const s = pool.newSequence();
  assert(pool.grow(s, 2));
  pool.commit(s, [1, 2], 2);
  pool.release(s); // its block is cached, evictable
  const t = pool.newSequence();
  assert(!pool.growFromEmpty(t, 3)); // two blocks: only one empty
  assertEquals(t.blockTable.length, 0);
  assert(pool.growFromEmpty(t, 2));
  assertEquals(pool.shrink(t, 0), 1);
  assertEquals(pool.emptyBlocks, 1);
  assertEquals(pool.reusePrefix(pool.newSequence(), [1, 2, 3]), 2);
});
