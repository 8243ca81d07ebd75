/**
 * WGSL for the ops that move rows without arithmetic: `embedding` and `gather_rows` (rows picked by an index),
 * `slice` and `concat` (column ranges of rows), `reshape` (a plain copy). One kernel does all of them, on 32-bit
 * words, so it serves f32 and i32 alike.
 *
 * Parameters: `P[0]` words to write (rows · width), `P[1]` width, `P[2]` source row stride, `P[3]` first source
 * column, `P[4]` destination row stride, `P[5]` first destination column, `P[6]` 1 when the source row is
 * `I[r] − P[7]` (gathers; rows whose index falls outside `0..P[8]` are left alone, so a split table is gathered part
 * by part), 2 when the destination row is `I[r]` instead (scatters; a negative index writes nothing), 0 when both
 * are `r`. `scatter_rows` and `write_rows` use the scatter form with indices the host has already deduplicated (a
 * row written twice keeps its last source, as in the reference), so no two threads write one element.
 *
 * @module
 */

import { ELEMENT_ARGS, floats, PRELUDE, type Stored } from "./common.ts";

/** The row copy described in the module docs. */
export const COPY_ROWS = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<u32>;
@group(0) @binding(2) var<storage, read_write> I: array<i32>;
@group(0) @binding(3) var<storage, read_write> O: array<u32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  let w = P[1];
  let r = i / w;
  let c = i - r * w;
  var src = r;
  var dst = r;
  if (P[6] == 1u) {
    let s = I[r] - i32(P[7]);
    if (s < 0 || u32(s) >= P[8]) { return; }
    src = u32(s);
  } else if (P[6] == 2u) {
    let d = I[r];
    if (d < 0) { return; }
    dst = u32(d);
  }
  O[dst * P[4] + P[5] + c] = X[src * P[2] + P[3] + c];
}`;

/**
 * `embedding` from a table stored other than f32 (bf16, f16, FP8, q8, NVFP4, q4: not a word copy):
 * `O[r, c] = T[I[r] − P[2], c]` as f32, for rows whose id falls in `P[2]..P[2] + P[3] − 1` (one part of a split
 * table). `P[0]` rows · width, `P[1]` width, `P[4]` the part's first scale word (quantised).
 */
export function gatherKernel(table: Stored): string {
  return PRELUDE + floats("T", 1, table, "P[1]", "P[4]") + /* wgsl */ `
@group(0) @binding(2) var<storage, read_write> I: array<i32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64) fn main(${ELEMENT_ARGS}) {
  let i = flatIndex(wid, lid, nwg);
  if (i >= P[0]) { return; }
  let w = P[1];
  let r = i / w;
  let c = i - r * w;
  let s = I[r] - i32(P[2]);
  if (s < 0 || u32(s) >= P[3]) { return; }
  O[i] = T_at(u32(s) * w + c);
}`;
}
