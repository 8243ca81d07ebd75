/**
 * The loop every backend's `uploadWeight` runs: read a weight's row chunks in order (bounded in size, never
 * crossing a part of a split weight) and hand each to the backend's encoder with the part and the row inside it.
 * The chunk is dropped before the next is read, so an upload holds one chunk of the host at a time.
 *
 * @module
 */

import { maxShape } from "../graph/ir.ts";
import type { WeightPart, WeightSource, WeightTarget } from "./backend.ts";
import type { WeightChunk } from "../weights/source.ts";
import { chunkRows } from "../weights/chunks.ts";

/** Bytes of chunk data read at once (a bound on the host memory an upload holds). */
export const UPLOAD_CHUNK_BYTES = 4 * 2 ** 20;

/**
 * Reads `source` chunk by chunk into `target`'s parts through `encode(chunk, part, row)` (`row`: the chunk's first
 * row inside `part`). Checks that the source matches the declaration.
 */
export async function uploadChunks(
  target: WeightTarget,
  source: WeightSource,
  encode: (chunk: WeightChunk, part: WeightPart, row: number) => void | Promise<void>,
  chunkBytes = UPLOAD_CHUNK_BYTES,
): Promise<void> {
  const { decl } = target;
  if (source.dtype !== decl.dtype || source.shape.join() !== maxShape(decl.shape).join()) {
    throw new Error(
      `weight ${decl.name}: the source gives [${source.shape}] ${source.dtype}, the graph declares ` +
        `[${decl.shape}] ${decl.dtype}`,
    );
  }
  for (const part of target.parts) {
    for (const r of chunkRows(source, chunkBytes)) {
      const row0 = Math.max(r.row0, part.row0), row1 = Math.min(r.row0 + r.rows, part.row0 + part.rows);
      if (row1 <= row0) continue;
      const chunk = await source.read(row0, row1 - row0);
      await encode(chunk, part, row0 - part.row0);
    }
  }
}
