/**
 * Rows of the model's image store, handed out to sequences: each sequence's images take one contiguous range from
 * the moment the encoder writes them until its prefill has passed its last image token (the vectors are in the KV
 * cache then) or it leaves the engine. First fit over a sorted free list: ranges are few and short-lived.
 *
 * @example
 * ```ts
 * const rows = new ImageStoreRows(1024);
 * const at = rows.take(300); // 0
 * rows.give(at, 300);
 * ```
 *
 * @module
 */

/** A first-fit allocator of rows `[0, capacity)`. */
export class ImageStoreRows {
  /** Rows in all. */
  readonly capacity: number;
  #free: { start: number; n: number }[];

  /** All `capacity` rows free. */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.#free = capacity > 0 ? [{ start: 0, n: capacity }] : [];
  }

  /** Rows free now. */
  get free(): number {
    return this.#free.reduce((s, r) => s + r.n, 0);
  }

  /** The first row of `n` contiguous free rows, now taken; −1 when no free range is that long. */
  take(n: number): number {
    if (n === 0) return 0;
    const i = this.#free.findIndex((r) => r.n >= n);
    if (i < 0) return -1;
    const r = this.#free[i], start = r.start;
    if (r.n === n) this.#free.splice(i, 1);
    else [r.start, r.n] = [r.start + n, r.n - n];
    return start;
  }

  /** Returns rows `[start, start + n)` (merged with free neighbours). */
  give(start: number, n: number): void {
    if (n === 0) return;
    const f = this.#free;
    let i = 0;
    while (i < f.length && f[i].start < start) i++;
    f.splice(i, 0, { start, n });
    if (i + 1 < f.length && f[i].start + f[i].n === f[i + 1].start) f[i].n += f.splice(i + 1, 1)[0].n;
    if (i > 0 && f[i - 1].start + f[i - 1].n === f[i].start) f[i - 1].n += f.splice(i, 1)[0].n;
  }
}
