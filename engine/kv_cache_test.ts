import { assert, assertEquals } from "../tests/assert.ts";
import { BlockPool } from "./kv_cache.ts";

const range = (n: number, base = 0) => Array.from({ length: n }, (_, i) => base + i);

Deno.test("kv cache: grow allocates whole blocks and release returns them", () => {
  const pool = new BlockPool({ numBlocks: 8, blockSize: 4 });
  const seq = pool.newSequence();
  assert(pool.grow(seq, 9));
  assertEquals(seq.blockTable.length, 3);
  assertEquals(pool.usedBlocks, 3);
  assert(pool.grow(seq, 12));
  assertEquals(seq.blockTable.length, 3);
  assertEquals(new Set(seq.blockTable).size, 3);
  pool.release(seq);
  assertEquals(pool.usedBlocks, 0);
  assertEquals(pool.freeBlocks, 8);
  pool.release(seq); // idempotent
  assertEquals(pool.freeBlocks, 8);
});

Deno.test("kv cache: grow fails without allocating when blocks run out", () => {
  const pool = new BlockPool({ numBlocks: 4, blockSize: 4 });
  const a = pool.newSequence();
  assert(pool.grow(a, 12));
  const b = pool.newSequence();
  assert(!pool.grow(b, 8));
  assertEquals(b.blockTable.length, 0);
  assertEquals(pool.freeBlocks, 1);
});

Deno.test("kv cache: identical prompt prefixes share full blocks; the last token is never cached", () => {
  const pool = new BlockPool({ numBlocks: 16, blockSize: 4 });
  const prompt = range(10, 100);
  const a = pool.newSequence();
  assertEquals(pool.reusePrefix(a, prompt), 0);
  assert(pool.grow(a, prompt.length));
  pool.commit(a, prompt, prompt.length);

  const b = pool.newSequence();
  const other = [...range(8, 100), 7, 7, 7];
  assertEquals(pool.reusePrefix(b, other), 8);
  assertEquals(b.blockTable.slice(0, 2), a.blockTable.slice(0, 2));
  assert(pool.grow(b, other.length));
  assertEquals(pool.usedBlocks, 3 + 1);

  // A prompt exactly two blocks long reuses only one: one token must be computed to sample from.
  const c = pool.newSequence();
  assertEquals(pool.reusePrefix(c, range(8, 100)), 4);

  // Same block content after a different prefix does not match.
  const d = pool.newSequence();
  assertEquals(pool.reusePrefix(d, [...range(4, 0), ...range(4, 104), 1]), 0);
});

Deno.test("kv cache: released cached blocks stay reusable until evicted (LRU)", () => {
  const pool = new BlockPool({ numBlocks: 4, blockSize: 2 });
  const p1 = [1, 2, 3, 4, 5];
  const a = pool.newSequence();
  pool.grow(a, 5);
  pool.commit(a, p1, 5);
  pool.release(a);
  assertEquals(pool.usedBlocks, 0);
  const b = pool.newSequence();
  assertEquals(pool.reusePrefix(b, p1), 4);
  pool.release(b);
  // Fill the pool with unrelated work: cached blocks are evicted, oldest first, and then no longer match.
  const c = pool.newSequence();
  assert(pool.grow(c, 8));
  pool.release(c);
  const d = pool.newSequence();
  assertEquals(pool.reusePrefix(d, p1), 0);
});

Deno.test("kv cache: blocks shared by two sequences are freed only when both release", () => {
  const pool = new BlockPool({ numBlocks: 6, blockSize: 2 });
  const prompt = [9, 8, 7, 6, 5];
  const a = pool.newSequence();
  pool.grow(a, 5);
  pool.commit(a, prompt, 5);
  const b = pool.newSequence();
  pool.reusePrefix(b, prompt);
  pool.grow(b, 5);
  assertEquals(pool.usedBlocks, 4);
  pool.release(a);
  assertEquals(pool.usedBlocks, 3);
  pool.release(b);
  assertEquals(pool.usedBlocks, 0);
});
