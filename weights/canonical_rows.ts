/**
 * Reading leading rows of one canonical tensor (a weight or one of its scale tensors) straight from the checkpoint
 * tensors that make it, through their load transforms, reading only what those rows need:
 * - `copy`: the byte range of the rows;
 * - `place`: each placed tensor that intersects the rows, only its intersecting rows (a per-expert 2-D tensor placed
 *   into `[E, 2F, D]` lies in one leading row, so it is read whole or not at all);
 * - `broadcast`: the source rows of the requested rows (all of it when its leading dim is the broadcast one);
 * - `rope_unpermute`: the whole heads the rows fall in (HF permutes rows within a head only).
 *
 * Floats are converted to the holding dtype as the whole-tensor loader does (`toHolding`). Any read error becomes a
 * `CheckpointError` naming the stored tensor, the canonical one and the file.
 *
 * @module
 */

import type { DType } from "../graph/dtype.ts";
import type { LoadTransform } from "../graph/models/mistral4.ts";
import { elemBytes, toHolding } from "./checked.ts";
import { CheckpointError } from "./errors.ts";
import { SAFETENSORS_DTYPE_BYTES, type SafetensorsReader, type TensorInfo } from "./safetensors.ts";
import { leadingRows, rowElements } from "./source.ts";
import { broadcastIndex, copyBlock, numel, padded, ropeHfRow } from "./transforms.ts";

/** What row readers read checkpoint bytes through: the checkpoint's reader, or a wrapper (tests count bytes). */
export type TensorRangeReader = Pick<SafetensorsReader, "readRange">;

/** One stored tensor feeding a canonical tensor, and how. */
export interface PlacedTensor {
  /** Where it is stored. */
  info: TensorInfo;
  /** How it becomes part of the canonical tensor. */
  transform: LoadTransform;
}

/**
 * The leading rows of one canonical tensor, read on demand. Holds nothing between reads.
 *
 * @example
 * ```ts ignore
 * const rows = new CanonicalRows("norm", [64], "bf16", [{ info, transform: { kind: "copy" } }], reader);
 * const bytes = await rows.read(0, 64); // 128 bytes of bf16
 * ```
 */
export class CanonicalRows {
  /** Leading rows of the stored shape. */
  readonly rows: number;
  readonly #rowElems: number;
  readonly #elem: number;

  /**
   * `shape` is the stored canonical shape (`storedShape`: NVFP4 codes two per byte) and `dtype` the holding
   * dtype; `parts` must cover it exactly once (the model family's table guarantees it; a read checks).
   */
  constructor(
    readonly name: string,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly parts: readonly PlacedTensor[],
    readonly reader: TensorRangeReader,
  ) {
    this.rows = leadingRows(shape);
    this.#rowElems = rowElements(shape);
    this.#elem = elemBytes(dtype);
  }

  /** Bytes the checkpoint stores for this tensor. */
  get storedBytes(): number {
    return this.parts.reduce((a, p) => a + p.info.byteLength, 0);
  }

  /** Rows `[row0, row0 + rows)` in the holding dtype, in a fresh buffer. */
  async read(row0: number, rows: number): Promise<Uint8Array> {
    if (!(row0 >= 0 && rows >= 1 && row0 + rows <= this.rows)) {
      throw new RangeError(`${this.name}: rows [${row0}, ${row0 + rows}) outside its ${this.rows}`);
    }
    const want = rows * this.#rowElems;
    const only = this.parts.length === 1 ? this.parts[0] : undefined;
    if (only?.transform.kind === "copy") return await this.#copy(only, row0, rows); // no staging copy
    const out = new Uint8Array(want * this.#elem);
    let written = 0;
    for (const p of this.parts) written += await this.#part(p, out, row0, rows);
    if (written !== want) {
      throw new Error(`${this.name}: rows [${row0}, ${row0 + rows}) got ${written} of ${want} elements (a table bug)`);
    }
    return out;
  }

  /** Elements `[e0, e1)` of a stored tensor (flat), converted to the holding dtype. */
  async #fetch(p: PlacedTensor, e0: number, e1: number): Promise<Uint8Array> {
    const { info } = p, size = SAFETENSORS_DTYPE_BYTES[info.storage];
    let raw: Uint8Array;
    try {
      raw = await this.reader.readRange(info.name, e0 * size, e1 * size);
    } catch (e) {
      throw readError(e, info, this.name);
    }
    return toHolding(raw, info.dtype!, this.dtype);
  }

  #copy(p: PlacedTensor, row0: number, rows: number): Promise<Uint8Array> {
    return this.#fetch(p, row0 * this.#rowElems, (row0 + rows) * this.#rowElems);
  }

  /** Writes the part of `p` inside rows `[row0, row0 + rows)` into `out`; returns the elements written. */
  async #part(p: PlacedTensor, out: Uint8Array, row0: number, rows: number): Promise<number> {
    const t = p.transform, canon = this.shape, elem = this.#elem, re = this.#rowElems;
    const chunk = [rows, ...canon.slice(1)];
    switch (t.kind) {
      case "copy":
        out.set(await this.#copy(p, row0, rows));
        return rows * re;
      case "place": {
        const s = padded(p.info.shape, canon.length), sre = numel(s.slice(1)), off = t.offset[0];
        const a = Math.max(row0, off), b = Math.min(row0 + rows, off + s[0]);
        if (a >= b) return 0;
        const src = await this.#fetch(p, (a - off) * sre, (b - off) * sre);
        copyBlock(out, chunk, src, [b - a, ...s.slice(1)], [a - row0, ...t.offset.slice(1)], elem, true);
        return (b - a) * sre;
      }
      case "broadcast": {
        const s = padded(p.info.shape, canon.length), sre = numel(s.slice(1));
        // A source row per requested row, or the one row every requested row repeats.
        const [s0, n] = s[0] === 1 ? [0, 1] : [row0, rows];
        const src = await this.#fetch(p, s0 * sre, (s0 + n) * sre), small = [n, ...s.slice(1)];
        for (let i = 0; i < rows * re; i++) {
          const j = broadcastIndex(i, chunk, small);
          out.set(src.subarray(j * elem, (j + 1) * elem), i * elem);
        }
        return rows * re;
      }
      case "rope_unpermute": {
        const n = canon[0], hd = n / t.heads, h0 = Math.floor(row0 / hd) * hd;
        const h1 = Math.ceil((row0 + rows) / hd) * hd, rowBytes = re * elem;
        const src = await this.#fetch(p, h0 * re, h1 * re);
        for (let r = 0; r < rows; r++) {
          const from = ropeHfRow(row0 + r, n, t.heads) - h0;
          out.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), r * rowBytes);
        }
        return rows * re;
      }
    }
  }
}

/** A failed read as a `CheckpointError` naming the stored tensor, the canonical tensor and the file. */
function readError(e: unknown, info: TensorInfo, canonical: string): CheckpointError {
  const where = `tensor "${info.name}" in ${info.file}`;
  if (e instanceof CheckpointError) {
    const message = e.message.includes(`"${info.name}"`) ? e.message : `${where}: ${e.message}`;
    return new CheckpointError(
      { kind: e.kind, tensor: info.name, file: info.file, message: `${message} (reading ${canonical})` },
      { cause: e },
    );
  }
  return new CheckpointError({
    kind: "not_found",
    tensor: info.name,
    file: info.file,
    message: `${where}: cannot read (${(e as Error)?.message ?? e}) (reading ${canonical}); check the file`,
  }, { cause: e });
}
