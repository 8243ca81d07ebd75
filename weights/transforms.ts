/**
 * The index arithmetic of load transforms (`LoadTransform` in `graph/models/mistral4_weights.ts`): placing a
 * checkpoint tensor into a block of its canonical tensor, broadcasting unit dims, and HF's vision rope row order.
 * Shared by the whole-tensor loader (`load.ts`), the row-chunk sources (`canonical_rows.ts`) and the checkpoint
 * writer (`make_checkpoint.ts`), which runs them backwards.
 *
 * @module
 */

/** Elements of `shape`. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `shape` left-padded with 1s to `rank` dims. */
export function padded(shape: readonly number[], rank: number): number[] {
  return [...Array(Math.max(0, rank - shape.length)).fill(1), ...shape];
}

function strides(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

/**
 * Flat index into `src` (shape left-padded to the rank of `dst`, size-1 dims broadcast) of the element at flat
 * index `i` of `dst`.
 *
 * @example
 * ```ts
 * broadcastIndex(3, [2, 2], [2, 1]); // 1: row 1 of a per-row scale
 * ```
 */
export function broadcastIndex(i: number, dst: readonly number[], src: readonly number[]): number {
  const s = padded(src, dst.length), ss = strides(s);
  let out = 0;
  for (let d = dst.length - 1; d >= 0; d--) {
    const k = i % dst[d];
    i = (i - k) / dst[d];
    if (s[d] !== 1) out += k * ss[d];
  }
  return out;
}

/**
 * Copies the block `small` (shape `smallShape`, left-padded) to or from `big` at `offset`, `elem` bytes per
 * element: `into` = true writes small into big (a `place` load), false reads it out (what a writer inverts).
 *
 * @example
 * ```ts
 * const big = new Uint8Array(4);
 * copyBlock(big, [2, 2], new Uint8Array([7, 8]), [1, 2], [1, 0], 1, true); // big = [0, 0, 7, 8]
 * ```
 */
export function copyBlock(
  big: Uint8Array,
  bigShape: readonly number[],
  small: Uint8Array,
  smallShape: readonly number[],
  offset: readonly number[],
  elem: number,
  into: boolean,
): void {
  const r = bigShape.length, s = padded(smallShape, r), bs = strides(bigShape);
  const rowBytes = s[r - 1] * elem, rows = numel(s) / Math.max(1, s[r - 1]);
  for (let row = 0; row < rows; row++) {
    let rest = row, at = offset[r - 1];
    for (let d = r - 2; d >= 0; d--) {
      const k = rest % s[d];
      rest = (rest - k) / s[d];
      at += (k + offset[d]) * bs[d];
    }
    const b = big.subarray(at * elem, at * elem + rowBytes), sm = small.subarray(row * rowBytes, (row + 1) * rowBytes);
    if (into) b.set(sm);
    else sm.set(b);
  }
}

/**
 * HF row of canonical row `row` for vision q/k: canonical row h·hd + 2i + j (interleaved pairs) is HF row
 * h·hd + j·hd/2 + i (half-split).
 *
 * @example
 * ```ts
 * ropeHfRow(3, 8, 1); // 5: pair 1, odd member → second half, index 1
 * ```
 */
export function ropeHfRow(row: number, rows: number, heads: number): number {
  const hd = rows / heads, h = Math.floor(row / hd), r = row % hd;
  return h * hd + (r % 2) * (hd / 2) + (r >> 1);
}
