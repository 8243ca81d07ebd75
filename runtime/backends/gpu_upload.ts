/**
 * A weight streamed into the GPU backends' device layout (gpu_layout.ts), chunk by chunk, through the backend's own
 * `write` (webgpu: `queue.writeBuffer`; cuda: pinned staging then an async copy). One loop for both backends.
 *
 * @module
 */

import { maxShape } from "../../graph/ir.ts";
import type { TensorView, WeightPart, WeightSource, WeightTarget } from "../backend.ts";
import { alignUp } from "../backend.ts";
import { uploadChunks } from "../weight_upload.ts";
import { chunkToF32, scratchF32 } from "../../weights/chunks.ts";
import { encodeF16 } from "../../weights/codecs.ts";
import { rowElements } from "../../weights/source.ts";
import type { Stored } from "../../kernels/wgsl/common.ts";
import { q4RowWords, QUANTISED, scaleWord } from "./gpu_layout.ts";

/** How {@link uploadWeightChunks} writes. */
export interface UploadOptions {
  /** The backend's name, for errors. */
  backend: string;
  /** Queued writes, in order. */
  write: (view: TensorView, data: ArrayBufferView) => void;
  /**
   * Every write whole 32-bit words (webgpu's `writeBuffer`): a chunk of codes ending inside a word keeps those bytes
   * for the next chunk, and the last word of a part goes padded (its buffer is).
   */
  wholeWords?: boolean;
}

/**
 * Streams `source` into `target`: f32 / i32 as values (other float dtypes a backend promotes to f32 decoded first),
 * bf16 / f16 / FP8 / q8 / NVFP4 codes as they come with their f32 scales after the part's codes, q4 as its blocks then
 * f16 scales two to a word, each K-row's from a new word ({@link q4RowWords}).
 */
export async function uploadWeightChunks(target: WeightTarget, source: WeightSource, o: UploadOptions): Promise<void> {
  const name = target.decl.name, stored = target.storage, shape = maxShape(target.decl.shape);
  const per = rowElements(shape), k = shape[shape.length - 1] ?? 1;
  const at = (part: WeightPart, offset: number) => ({ buffer: part.view.buffer, offset: part.view.offset + offset });
  const scalesAt = (part: WeightPart) => 4 * scaleWord([part.rows, ...shape.slice(1)], part.rows, stored as Stored);
  if (stored === "f32" || stored === "i32") {
    await uploadChunks(target, source, (chunk, part, row) => {
      const values = chunk.dtype === "i32" ? chunk.data : chunkToF32(chunk, scratchF32(chunk.rows * per, 3));
      o.write(at(part, 4 * row * per), values);
    });
    return;
  }
  if (stored === "q4") {
    const kRows = per / k, words = q4RowWords(k), blocks = Math.ceil(k / 32);
    await uploadChunks(target, source, (chunk, part, row) => {
      if (chunk.dtype !== "q4") throw new Error(`${o.backend}: weight ${name} comes as ${chunk.dtype}, not q4`);
      if (!chunk.scales) throw new Error(`${o.backend}: weight ${name}: a q4 chunk has no scales`);
      const n = chunk.rows * kRows;
      o.write(at(part, 4 * words.codes * row * kRows), chunk.data);
      const halves = new Uint16Array(2 * words.scales * n);
      for (let r = 0; r < n; r++) {
        for (let b = 0; b < blocks; b++) halves[2 * words.scales * r + b] = encodeF16(chunk.scales[r * blocks + b]);
      }
      o.write(at(part, scalesAt(part) + 4 * words.scales * row * kRows), halves);
    });
    return;
  }
  const width = stored === "bf16" || stored === "f16" ? 2 : stored === "nvfp4" ? 0.5 : 1;
  const scalesPerRow = stored === "q8" ? per / 32 : stored === "nvfp4" ? per / 16 : per / k;
  // Codes a chunk left inside a 32-bit word (wholeWords): written with the next chunk of the same part.
  let pending: { part: WeightPart; offset: number; bytes: Uint8Array } | undefined;
  const flush = () => {
    if (!pending) return;
    const padded = new Uint8Array(alignUp(pending.bytes.length, 4));
    padded.set(pending.bytes);
    o.write(at(pending.part, pending.offset), padded);
    pending = undefined;
  };
  await uploadChunks(target, source, (chunk, part, row) => {
    if (chunk.dtype !== stored) throw new Error(`${o.backend}: weight ${name} comes as ${chunk.dtype}, not ${stored}`);
    let offset = width * row * per, bytes = chunk.data;
    if (!o.wholeWords) o.write(at(part, offset), bytes);
    else {
      if (pending && pending.part === part) {
        const joined = new Uint8Array(pending.bytes.length + bytes.length);
        joined.set(pending.bytes);
        joined.set(bytes, pending.bytes.length);
        offset = pending.offset;
        bytes = joined;
        pending = undefined;
      }
      flush();
      const whole = bytes.length - (bytes.length % 4);
      if (whole) o.write(at(part, offset), bytes.subarray(0, whole));
      if (whole < bytes.length) pending = { part, offset: offset + whole, bytes: bytes.slice(whole) };
    }
    if (QUANTISED.has(stored as Stored)) {
      if (!chunk.scales) throw new Error(`${o.backend}: weight ${name}: a ${stored} chunk has no scales`);
      o.write(at(part, scalesAt(part) + 4 * row * scalesPerRow), chunk.scales);
    }
  });
  flush();
}
