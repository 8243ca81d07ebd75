/**
 * Byte-level BPE with rank merges, identical to tiktoken's `byte_pair_merge`: repeatedly merge the adjacent pair
 * whose concatenation has the lowest rank (leftmost on ties) until no pair is in the vocabulary.
 *
 * Byte strings are handled as "binary strings" (one char per byte, code 0–255) so they can key a `Map` directly.
 *
 * @module
 */

/** Rank table: binary string of a token's bytes → its rank. */
export type Ranks = Map<string, number>;

/** Pieces longer than this use the heap merge (O(n log n)); shorter ones the simple scan, faster for words. */
const HEAP_THRESHOLD = 64;

/**
 * Splits one pre-tokenized piece (a binary string) into ranks.
 *
 * @example
 * ```ts
 * const ranks = new Map([["a", 0], ["b", 1], ["ab", 2]]);
 * bytePairEncode("ab", ranks); // [2]
 * ```
 */
export function bytePairEncode(piece: string, ranks: Ranks): number[] {
  const whole = ranks.get(piece);
  if (whole !== undefined) return [whole];
  const bounds = piece.length < HEAP_THRESHOLD ? mergeScan(piece, ranks) : mergeHeap(piece, ranks);
  const out: number[] = new Array(bounds.length - 1);
  for (let i = 0; i + 1 < bounds.length; i++) {
    const rank = ranks.get(piece.slice(bounds[i], bounds[i + 1]));
    // Every single byte is a token in a byte-level vocabulary; a missing one means a broken tokenizer file.
    if (rank === undefined) throw new Error(`tokenizer: no rank for byte sequence at ${bounds[i]} of a piece`);
    out[i] = rank;
  }
  return out;
}

/** tiktoken's quadratic scan: fastest for the short pieces that make up almost all text. */
export function mergeScan(piece: string, ranks: Ranks): number[] {
  const n = piece.length;
  const starts: number[] = new Array(n + 1);
  const pairRank: number[] = new Array(n + 1);
  for (let i = 0; i <= n; i++) starts[i] = i;
  const rankAt = (i: number): number => {
    if (i + 2 >= starts.length) return Infinity;
    return ranks.get(piece.slice(starts[i], starts[i + 2])) ?? Infinity;
  };
  for (let i = 0; i < n; i++) pairRank[i] = rankAt(i);
  pairRank[n] = Infinity;
  for (;;) {
    let best = Infinity;
    let at = -1;
    for (let i = 0; i + 1 < starts.length; i++) {
      if (pairRank[i] < best) {
        best = pairRank[i];
        at = i;
      }
    }
    if (at < 0) break;
    starts.splice(at + 1, 1);
    pairRank.splice(at + 1, 1);
    pairRank[at] = rankAt(at);
    if (at > 0) pairRank[at - 1] = rankAt(at - 1);
  }
  return starts;
}

/**
 * The same merge order with a min-heap over (rank, position) and a linked list: O(n log n), so a 100k-character
 * whitespace run cannot stall the server. Stale heap entries are skipped by checking them against the list.
 */
export function mergeHeap(piece: string, ranks: Ranks): number[] {
  const n = piece.length;
  const next = new Int32Array(n + 1);
  const prev = new Int32Array(n + 1);
  const alive = new Uint8Array(n + 1).fill(1);
  for (let i = 0; i <= n; i++) {
    next[i] = i + 1;
    prev[i] = i - 1;
  }
  // Pair starting at node i spans [i, next[next[i]]).
  const pairRankOf = (i: number): number => {
    const j = next[i];
    if (j >= n) return Infinity;
    return ranks.get(piece.slice(i, next[j])) ?? Infinity;
  };
  const heap = new PairHeap();
  for (let i = 0; i + 1 < n; i++) {
    const r = pairRankOf(i);
    if (r !== Infinity) heap.push(r, i);
  }
  while (heap.size > 0) {
    const [rank, i] = heap.pop();
    if (!alive[i] || next[i] >= n || pairRankOf(i) !== rank) continue;
    const j = next[i];
    alive[j] = 0;
    next[i] = next[j];
    prev[next[j]] = i;
    const r = pairRankOf(i);
    if (r !== Infinity) heap.push(r, i);
    const p = prev[i];
    if (p >= 0) {
      const rp = pairRankOf(p);
      if (rp !== Infinity) heap.push(rp, p);
    }
  }
  const bounds: number[] = [];
  for (let i = 0; i < n; i = next[i]) bounds.push(i);
  bounds.push(n);
  return bounds;
}

/** Binary min-heap of (rank, position), ordered by rank then position: tiktoken's leftmost-on-ties rule. */
class PairHeap {
  private ranks: number[] = [];
  private pos: number[] = [];
  get size(): number {
    return this.ranks.length;
  }
  private less(a: number, b: number): boolean {
    return this.ranks[a] < this.ranks[b] || (this.ranks[a] === this.ranks[b] && this.pos[a] < this.pos[b]);
  }
  private swap(a: number, b: number): void {
    [this.ranks[a], this.ranks[b]] = [this.ranks[b], this.ranks[a]];
    [this.pos[a], this.pos[b]] = [this.pos[b], this.pos[a]];
  }
  push(rank: number, position: number): void {
    this.ranks.push(rank);
    this.pos.push(position);
    let i = this.ranks.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.ranks[0], this.pos[0]];
    const last = this.ranks.length - 1;
    this.swap(0, last);
    this.ranks.pop();
    this.pos.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.ranks.length && this.less(l, m)) m = l;
      if (r < this.ranks.length && this.less(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}
