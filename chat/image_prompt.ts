/**
 * Expands each image's single `[IMG]` placeholder (as `encodeChat` leaves it) into the image's token layout
 * (MODEL.md §3.5) once its grid is known, and reports the prompt positions of each image's `[IMG]` tokens: the
 * rows that receive its vectors.
 *
 * @example
 * ```ts
 * import { expandImagePlaceholders } from "./image_prompt.ts";
 * const r = expandImagePlaceholders([1, 3, 10, 4], [{ index: 2 }], [{ rows: 1, cols: 2 }]);
 * r.ids; // [1, 3, 10, 10, 13, 4]
 * r.imageRows; // [[2, 3]]
 * ```
 *
 * @module
 */

import { type ImageTokenIds, imageTokenLayout, SMALL4_IMAGE_TOKEN_IDS, type TokenGrid } from "./image.ts";

/** The expanded prompt and, per image, the positions of its `[IMG]` tokens (row-major, as its vectors). */
export type ExpandedPrompt = { ids: number[]; imageRows: number[][] };

/** `images[i].index` is the placeholder of image i in `ids` (increasing); `grids[i]` its token grid. */
export function expandImagePlaceholders(
  ids: readonly number[],
  images: readonly { index: number }[],
  grids: readonly TokenGrid[],
  tokenIds: ImageTokenIds = SMALL4_IMAGE_TOKEN_IDS,
): ExpandedPrompt {
  if (images.length !== grids.length) throw new Error(`${images.length} images but ${grids.length} grids`);
  const out: number[] = [], imageRows: number[][] = [];
  let next = 0;
  images.forEach((im, i) => {
    if (im.index < next || ids[im.index] !== tokenIds.img) {
      throw new Error(`image ${i}: no [IMG] placeholder at ${im.index}`);
    }
    out.push(...ids.slice(next, im.index));
    const rows: number[] = [];
    for (const id of imageTokenLayout(grids[i], tokenIds).ids) {
      if (id === tokenIds.img) rows.push(out.length);
      out.push(id);
    }
    imageRows.push(rows);
    next = im.index + 1;
  });
  out.push(...ids.slice(next));
  return { ids: out, imageRows };
}
