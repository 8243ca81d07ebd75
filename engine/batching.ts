/**
 * The continuous-batching policy: which sequences run in the next step and how many of their tokens, under a token
 * budget, a sequence-slot limit and the cache's free blocks.
 *
 * Per step: every running sequence that is decoding gets its one token first (so streams keep flowing while long
 * prompts prefill); the rest of the budget goes to running prefills, oldest first, in chunks; then waiting
 * sequences are admitted first-in first-out while slots, budget and blocks allow, reusing cached prefix blocks.
 * When a running sequence needs a block and none is free, the most recently admitted sequence is preempted by
 * recompute: its blocks are released and it goes back to the front of the queue with its output kept, to be
 * prefilled again (prompt and output together) when there is room.
 *
 * A paused sequence (its reader is behind: {@link Sequence.paused}) gets no chunk and is not admitted; the others
 * go on around it. It keeps its slot and blocks until another sequence needs them: then it is the first preempted,
 * since it is not using them.
 *
 * @module
 */

import type { BlockPool } from "./kv_cache.ts";
import type { Sequence } from "./sequence.ts";

/** Batching limits. */
export interface BatchPolicyOptions {
  /** The model's block pool. */
  pool: BlockPool;
  /** Most sequences holding a slot (and cache blocks) at once. */
  maxNumSeqs: number;
  /** Token budget of one step. */
  maxTokens: number;
  /** Whether admission looks for cached prefix blocks. */
  prefixCaching: boolean;
  /**
   * Speculative decoding: a prefix hit reuses one token fewer, so the sequence's first step runs the last cached
   * position again (the same target cache entry) and the draft's catch-up rewrites the draft's entry there, which
   * holds the token after it (of whichever sequence wrote the block first, not necessarily this one's).
   */
  rerunLastCached?: boolean;
  /**
   * Called for a sequence preempted by recompute, after its blocks are released: it gives back what else it holds
   * until it runs again (image-store rows), so a preempted sequence never blocks the running ones.
   */
  onPreempt?: (seq: Sequence) => void;
}

/** One sequence's share of a step: tokens `[start, start + count)` of its history. */
export interface Chunk {
  /** The sequence. */
  seq: Sequence;
  /** Position of the chunk's first token (= tokens already cached). */
  start: number;
  /** Tokens in the chunk. */
  count: number;
  /** The chunk ends at the sequence's last token, so the step returns a logits row for it. */
  samples: boolean;
  /**
   * Speculative decoding: the draft's proposals run after the chunk's token (positions `start + count …`), each
   * with a logits row, so one forward verifies them (absent or empty: none). Their distributions ride along.
   */
  draft?: { proposals: readonly number[]; probs: readonly (Float64Array | null)[] };
}

/** What to run next, and the sequences that can never run. */
export interface BatchPlan {
  /** Chunks in step order (empty when nothing can run). */
  chunks: Chunk[];
  /** Sequences removed because they cannot fit in the cache even alone. */
  failed: Sequence[];
}

/**
 * Owns the waiting queue and the running set, and every block a sequence holds: a sequence leaves through
 * {@link BatchPolicy.remove} (finished, failed or cancelled), which releases its blocks at once.
 *
 * @example
 * ```ts
 * const s = new BatchPolicy({ pool: model.pool, maxNumSeqs: 8, maxTokens: 256, prefixCaching: true });
 * s.add(seq);
 * const { chunks } = s.next(); // run them, then s.commit(chunks)
 * ```
 */
export class BatchPolicy {
  /** Sequences holding cache blocks, in admission order (the last is the first to be preempted). */
  readonly running: Sequence[] = [];
  /** Sequences queued for a slot, first-in first-out (preempted ones go back to the front). */
  readonly waiting: Sequence[] = [];
  /** Preemptions since start. */
  preemptions = 0;
  readonly #o: BatchPolicyOptions;

  /** A scheduler over a pool. */
  constructor(options: BatchPolicyOptions) {
    this.#o = options;
  }

  /** Queues a new sequence. */
  add(seq: Sequence): void {
    seq.status = "waiting";
    this.waiting.push(seq);
  }

  /** Takes a sequence out of the engine and releases its blocks (safe to call twice). */
  remove(seq: Sequence): void {
    if (seq.status === "running") this.#release(seq, this.running);
    else if (seq.status === "waiting") removeFrom(this.waiting, seq);
    seq.status = "done";
  }

  /** True when some running or waiting sequence is not paused: {@link BatchPolicy.next} has something to plan. */
  get hasWork(): boolean {
    return this.running.some((seq) => !seq.paused) || this.waiting.some((seq) => !seq.paused);
  }

  /** Plans the next step (see the module doc). Sequences it had to preempt or fail are already moved. */
  next(): BatchPlan {
    const { pool } = this.#o;
    let budget = this.#o.maxTokens;
    const counts = new Map<Sequence, number>(); // scheduled tokens per sequence, in step order
    const drafted = new Map<Sequence, number>(); // proposals verified with them (within `counts`)
    const failed: Sequence[] = [];
    let preempted = false;
    // Room taken ahead for last step's proposals goes back first: no sequence is preempted, and no cached prefix
    // evicted, while it sits held; proposals get blocks again below, from what is left empty.
    for (const seq of this.running) pool.shrink(seq.blocks!, seq.tokens.length);
    // Proposals take only what the budget leaves once every decoding sequence has its own token.
    let decodersLeft = this.running.filter((seq) => seq.pending === 1 && !seq.paused).length;
    // Decodes first, then prefill chunks, each oldest first.
    for (const decoding of [true, false]) {
      for (let i = 0; i < this.running.length && budget > 0; i++) {
        const seq = this.running[i];
        if ((seq.pending === 1) !== decoding || seq.paused) continue;
        const k = decoding ? Math.max(0, Math.min(seq.spec?.proposals.length ?? 0, budget - decodersLeft--)) : 0;
        // The budget is held for the proposals here; their blocks come last, from empty ones (below).
        const n = Math.min(seq.pending, budget) + k;
        while (seq.status === "running" && !pool.grow(seq.blocks!, seq.computed + n - k)) {
          if (this.running.length === 1) {
            // Every other block is free: this sequence cannot fit in the cache at all.
            this.remove(seq);
            failed.push(seq);
            break;
          }
          const victim = this.#victim();
          const at = this.running.indexOf(victim);
          budget += counts.get(victim) ?? 0;
          counts.delete(victim);
          drafted.delete(victim);
          this.#preempt(victim);
          preempted = true;
          if (at < i) i--; // a paused victim before `seq`: the list shifted under the loop
        }
        if (seq.status !== "running") {
          i--; // it was removed from `running` at index i (the last one, or the only one)
          continue;
        }
        counts.set(seq, n);
        if (k > 0) drafted.set(seq, k);
        budget -= n;
      }
    }
    // Admissions wait while the cache is under pressure: a sequence preempted this step must not bounce back at once.
    // Paused ones stay queued, in order, without holding up those behind them; a paused running one gives up its
    // slot and blocks to a sequence that can run (else a reader that never reads would hold them for good).
    let w = 0;
    while (!preempted && budget > 0 && w < this.waiting.length) {
      const seq = this.waiting[w];
      if (seq.paused) {
        w++;
        continue;
      }
      if (this.running.length >= this.#o.maxNumSeqs) {
        if (!this.#preemptPaused()) break;
        w++; // it went to the front of the queue
        continue;
      }
      const blocks = pool.newSequence();
      const hit = this.#o.prefixCaching ? pool.reusePrefix(blocks, seq.cacheKeys) : 0;
      // The blocks stay; with rerunLastCached their last position runs again (still reported as cached).
      const cached = hit > 0 && this.#o.rerunLastCached ? hit - 1 : hit;
      const n = Math.min(seq.tokens.length - cached, budget);
      let fits = pool.grow(blocks, cached + n);
      while (!fits && this.#preemptPaused()) {
        w++;
        fits = pool.grow(blocks, cached + n);
      }
      if (!fits) {
        pool.release(blocks);
        if (this.running.length > 0) break; // first-in first-out: later arrivals wait behind it
        this.waiting.splice(w, 1);
        seq.status = "done";
        failed.push(seq);
        continue;
      }
      this.waiting.splice(w, 1);
      seq.blocks = blocks;
      seq.computed = cached;
      seq.status = "running";
      if (!seq.admitted) seq.stream.cachedTokens = Math.min(hit, seq.promptLen);
      seq.admitted = true;
      this.running.push(seq);
      counts.set(seq, n);
      budget -= n;
    }
    // Proposals never cost another sequence its blocks nor a cached prefix: after every sequence's own tokens and
    // admissions, each gets what empty blocks allow (fewer proposals, or none, when they are short).
    for (const [seq, k] of drafted) {
      let fit = k;
      while (fit > 0 && !pool.growFromEmpty(seq.blocks!, seq.computed + 1 + fit)) fit--;
      counts.set(seq, counts.get(seq)! - (k - fit));
      drafted.set(seq, fit);
    }
    const chunks: Chunk[] = [];
    for (const [seq, n] of counts) {
      const k = drafted.get(seq) ?? 0, count = n - k;
      const chunk: Chunk = { seq, start: seq.computed, count, samples: seq.computed + count === seq.tokens.length };
      if (k > 0) chunk.draft = { proposals: seq.spec!.proposals.slice(0, k), probs: seq.spec!.probs.slice(0, k) };
      chunks.push(chunk);
    }
    return { chunks, failed };
  }

  /**
   * Records a finished step: each chunk's tokens are now in the cache, and completed blocks are published for
   * prefix reuse. Chunks of sequences removed meanwhile are skipped.
   */
  commit(chunks: readonly Chunk[]): void {
    for (const { seq, start, count } of chunks) {
      if (seq.status !== "running" || seq.computed !== start) continue;
      seq.computed = start + count;
      this.#o.pool.commit(seq.blocks!, seq.cacheKeys, seq.computed);
    }
  }

  /**
   * Records `accepted` verified proposals of a sequence as cached (after {@link BatchPolicy.commit} of its chunk, and
   * after they joined its tokens): their cache entries, written by the verifying step, are kept; the entries of the
   * rejected ones past them are dropped from the count and overwritten by later steps.
   */
  advance(seq: Sequence, accepted: number): void {
    if (seq.status !== "running" || accepted === 0) return;
    seq.computed += accepted;
    this.#o.pool.commit(seq.blocks!, seq.cacheKeys, seq.computed);
  }

  /** Whom to preempt: the latest admitted paused sequence (its blocks sit idle), else the latest admitted one. */
  #victim(): Sequence {
    return this.#lastPaused() ?? this.running[this.running.length - 1];
  }

  #lastPaused(): Sequence | undefined {
    for (let j = this.running.length - 1; j >= 0; j--) if (this.running[j].paused) return this.running[j];
    return undefined;
  }

  /** Preempts the latest admitted paused sequence, if any (it has no chunk in the step being planned). */
  #preemptPaused(): boolean {
    const seq = this.#lastPaused();
    if (seq) this.#preempt(seq);
    return seq !== undefined;
  }

  /** Recompute preemption: drop the blocks, keep the output, and queue it first. */
  #preempt(seq: Sequence): void {
    this.#release(seq, this.running);
    this.#o.onPreempt?.(seq);
    seq.status = "waiting";
    this.waiting.unshift(seq);
    this.preemptions++;
  }

  #release(seq: Sequence, from: Sequence[]): void {
    seq.spec = null; // proposals were for the cache it loses
    if (seq.blocks) this.#o.pool.release(seq.blocks);
    seq.blocks = null;
    seq.computed = 0;
    removeFrom(from, seq);
  }
}

function removeFrom(list: Sequence[], seq: Sequence): void {
  const i = list.indexOf(seq);
  if (i >= 0) list.splice(i, 1);
}
