/**
 * Paged latent-cache bookkeeping: a pool of fixed-size blocks, per-sequence block tables, and prefix reuse.
 *
 * The cache tensors themselves live on the backend (one `[numBlocks, blockSize, kvLoraRank + ropeDim]` tensor per
 * layer); this file only decides which block holds which tokens. Full blocks are content-addressed by a hash of
 * every token up to and including them, so two prompts that share a prefix (a system prompt, a tool list) share
 * its blocks: the second one skips their prefill. Freed blocks that carry a hash stay findable until the pool needs
 * them (LRU), so an agent's next call finds its prefix even after the previous call ended.
 *
 * @module
 */

/** Pool geometry. */
export interface BlockPoolOptions {
  /** Blocks in the pool (per layer: every layer uses the same table). */
  numBlocks: number;
  /** Tokens per block. */
  blockSize: number;
}

/**
 * Block pool with reference counts and an LRU of reusable cached blocks.
 *
 * @example
 * ```ts
 * const pool = new BlockPool({ numBlocks: 64, blockSize: 16 });
 * const seq = pool.newSequence();
 * const cached = pool.reusePrefix(seq, promptIds); // tokens whose cache entries already exist
 * pool.grow(seq, promptIds.length);                // false when the pool is exhausted
 * ```
 */
export class BlockPool {
  /** Blocks in the pool. */
  readonly numBlocks: number;
  /** Tokens per block. */
  readonly blockSize: number;
  private readonly refs: Int32Array;
  private readonly hashOf: (string | null)[];
  private readonly byHash = new Map<string, number>();
  /** Free blocks with no cached content: taken first. */
  private readonly empty: number[] = [];
  /** Free blocks that still hold a cached prefix, oldest first (Map keeps insertion order). */
  private readonly evictable = new Map<number, true>();

  /** An empty pool. */
  constructor(opts: BlockPoolOptions) {
    if (!(opts.numBlocks > 0 && opts.blockSize > 0)) throw new Error("BlockPool: numBlocks and blockSize must be > 0");
    this.numBlocks = opts.numBlocks;
    this.blockSize = opts.blockSize;
    this.refs = new Int32Array(opts.numBlocks);
    this.hashOf = new Array(opts.numBlocks).fill(null);
    for (let b = opts.numBlocks - 1; b >= 0; b--) this.empty.push(b);
  }

  /** Blocks referenced by at least one live sequence. */
  get usedBlocks(): number {
    return this.numBlocks - this.empty.length - this.evictable.size;
  }

  /** Blocks that can be handed out now (empty or evictable). */
  get freeBlocks(): number {
    return this.empty.length + this.evictable.size;
  }

  /** A new, empty sequence. */
  newSequence(): SequenceBlocks {
    return { blockTable: [], numTokens: 0, hashes: [] };
  }

  /**
   * Attaches the longest run of cached full blocks matching the start of `ids` to an empty sequence and returns how
   * many tokens it covers. At least one token is always left uncached so the step that samples has work to do.
   */
  reusePrefix(seq: SequenceBlocks, ids: readonly number[]): number {
    if (seq.numTokens !== 0) throw new Error("reusePrefix: the sequence already has tokens");
    let hash = "";
    let covered = 0;
    while (covered + this.blockSize < ids.length) {
      hash = chainHash(hash, ids, covered, covered + this.blockSize);
      const block = this.byHash.get(hash);
      if (block === undefined) break;
      this.retain(block);
      seq.blockTable.push(block);
      seq.hashes.push(hash);
      covered += this.blockSize;
    }
    seq.numTokens = covered;
    return covered;
  }

  /** Makes room for `numTokens` tokens in total; returns false (allocating nothing) when blocks run out. */
  grow(seq: SequenceBlocks, numTokens: number): boolean {
    const need = Math.ceil(numTokens / this.blockSize) - seq.blockTable.length;
    if (need <= 0) return true;
    if (need > this.freeBlocks) return false;
    for (let i = 0; i < need; i++) seq.blockTable.push(this.take());
    return true;
  }

  /** Free blocks holding no cached prefix: what {@link BlockPool.growFromEmpty} may take without evicting one. */
  get emptyBlocks(): number {
    return this.empty.length;
  }

  /**
   * Like {@link BlockPool.grow}, from empty blocks only: never evicts a cached prefix (speculative proposals' room).
   * Returns false (allocating nothing) when the empty blocks are too few.
   */
  growFromEmpty(seq: SequenceBlocks, numTokens: number): boolean {
    const need = Math.ceil(numTokens / this.blockSize) - seq.blockTable.length;
    if (need <= 0) return true;
    if (need > this.empty.length) return false;
    for (let i = 0; i < need; i++) seq.blockTable.push(this.take());
    return true;
  }

  /**
   * Releases the sequence's blocks past those `numTokens` tokens need (never below its written entries): room taken
   * ahead for speculative proposals goes back. Returns the blocks released.
   */
  shrink(seq: SequenceBlocks, numTokens: number): number {
    const keep = Math.max(Math.ceil(numTokens / this.blockSize), Math.ceil(seq.numTokens / this.blockSize));
    let n = 0;
    while (seq.blockTable.length > Math.max(keep, seq.hashes.length)) {
      const block = seq.blockTable.pop()!;
      if (--this.refs[block] === 0) {
        if (this.hashOf[block] !== null) this.evictable.set(block, true);
        else this.empty.push(block);
      }
      n++;
    }
    return n;
  }

  /**
   * Records that the sequence's cache now holds `ids` (its whole token history) up to `numTokens`, publishing every
   * newly completed block for prefix reuse.
   */
  commit(seq: SequenceBlocks, ids: readonly number[], numTokens: number): void {
    seq.numTokens = numTokens;
    const full = Math.floor(numTokens / this.blockSize);
    for (let i = seq.hashes.length; i < full; i++) {
      const hash = chainHash(seq.hashes[i - 1] ?? "", ids, i * this.blockSize, (i + 1) * this.blockSize);
      seq.hashes.push(hash);
      const block = seq.blockTable[i];
      if (!this.byHash.has(hash) && this.hashOf[block] === null) {
        this.byHash.set(hash, block);
        this.hashOf[block] = hash;
      }
    }
  }

  /** Releases every block of a sequence (cancel, finish or preemption). Safe to call twice. */
  release(seq: SequenceBlocks): void {
    for (const block of seq.blockTable) {
      if (--this.refs[block] === 0) {
        if (this.hashOf[block] !== null) this.evictable.set(block, true);
        else this.empty.push(block);
      }
    }
    seq.blockTable.length = 0;
    seq.hashes.length = 0;
    seq.numTokens = 0;
  }

  /** Adds a reference to a block, taking it off the evictable list. */
  private retain(block: number): void {
    if (this.refs[block]++ === 0) this.evictable.delete(block);
  }

  /** Hands out a block: an empty one first, else the least recently freed cached one. */
  private take(): number {
    let block = this.empty.pop();
    if (block === undefined) {
      // Evict the least recently freed cached block: its prefix is forgotten.
      block = this.evictable.keys().next().value as number;
      this.evictable.delete(block);
      this.byHash.delete(this.hashOf[block]!);
      this.hashOf[block] = null;
    }
    this.refs[block] = 1;
    return block;
  }
}

/** Per-sequence cache state. `blockTable[i]` holds tokens `[i·blockSize, (i+1)·blockSize)`. */
export interface SequenceBlocks {
  /** Blocks holding the sequence's tokens, in order. */
  blockTable: number[];
  /** Tokens whose cache entries are written. */
  numTokens: number;
  /** Chain hashes of the sequence's full blocks, in order. */
  hashes: string[];
}

/**
 * Hash of a block given the hash of everything before it: two independent 32-bit multiplicative hashes (≈64 bits),
 * chained so equal blocks after different prefixes never match. Keys stay short however long the sequence.
 */
function chainHash(prev: string, ids: readonly number[], from: number, to: number): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x9747b28c;
  for (let i = 0; i < prev.length; i++) {
    const c = prev.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) ^ (h2 >>> 13);
  }
  for (let i = from; i < to; i++) {
    const v = ids[i];
    h1 = Math.imul(h1 ^ v, 0x01000193);
    h1 ^= h1 >>> 15;
    h2 = Math.imul(h2 ^ v, 0x5bd1e995);
    h2 ^= h2 >>> 13;
  }
  return `${(h1 >>> 0).toString(36)}.${(h2 >>> 0).toString(36)}`;
}
