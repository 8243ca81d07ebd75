/**
 * A small byte trie for literal alternatives: enum values, property keys, tool names. Each node knows the fewest
 * bytes that complete it (to the nearest terminal, plus whatever the terminal's payload costs afterwards).
 *
 * @module
 */

/**
 * Byte strings with a payload each (a property index, a tool index). Node 0 is the root; nodes are numbered in
 * creation order, so a child always has a larger number than its parent.
 *
 * @example
 * ```ts
 * const t = new ByteTrie();
 * t.add(new TextEncoder().encode("true"), 0);
 * t.finish(() => 0);
 * t.need[0]; // 4
 * ```
 */
export class ByteTrie {
  /** Children of each node by byte. */
  readonly next: Map<number, number>[] = [new Map()];
  /** Payload of the string ending at each node, or -1. */
  readonly term: number[] = [-1];
  /** Fewest bytes from each node to a terminal, plus that terminal's cost (set by {@link ByteTrie.finish}). */
  need: Float64Array = new Float64Array(0);

  /** Adds `bytes` with `payload`; a string already present keeps its first payload. */
  add(bytes: Uint8Array, payload: number): void {
    let n = 0;
    for (const b of bytes) {
      let c = this.next[n].get(b);
      if (c === undefined) {
        c = this.next.length;
        this.next.push(new Map());
        this.term.push(-1);
        this.next[n].set(b, c);
      }
      n = c;
    }
    if (this.term[n] < 0) this.term[n] = payload;
  }

  /** The child of `node` by `byte`, or -1. */
  child(node: number, byte: number): number {
    return this.next[node].get(byte) ?? -1;
  }

  /** True when `node` has no children. */
  isLeaf(node: number): boolean {
    return this.next[node].size === 0;
  }

  /** Computes {@link ByteTrie.need}, where ending on a terminal costs `cost(payload)` more. */
  finish(cost: (payload: number) => number): void {
    const n = this.next.length;
    const need = new Float64Array(n).fill(Infinity);
    // Children are numbered after their parents: a reverse scan sees every child first.
    for (let i = n - 1; i >= 0; i--) {
      let best = this.term[i] >= 0 ? cost(this.term[i]) : Infinity;
      for (const c of this.next[i].values()) best = Math.min(best, 1 + need[c]);
      need[i] = best;
    }
    this.need = need;
  }
}
