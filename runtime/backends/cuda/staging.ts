/**
 * Host → device copies through pinned memory, for the `cuda` backend: a ring of page-locked staging slots
 * (`cuMemAllocHost`), each guarded by an event, and the weight upload that streams a checkpoint's row chunks
 * through them in the device layout (the webgpu backend's: codes, then scales).
 *
 * A copy from pageable memory makes the driver stage it itself (and synchronise the stream first); from pinned
 * memory `cuMemcpyHtoDAsync` is a DMA queued on the stream like any launch. A slot is refilled only after the
 * event recorded behind its last copy has completed, so up to `slots − 1` slots of copies are in flight while the
 * next is filled.
 *
 * @module
 */

import { maxShape } from "../../../graph/ir.ts";
import type { TensorView, WeightSource, WeightTarget } from "../../backend.ts";
import { uploadChunks } from "../../weight_upload.ts";
import { chunkToF32, scratchF32 } from "../../../weights/chunks.ts";
import { encodeF16 } from "../../../weights/codecs.ts";
import { rowElements } from "../../../weights/source.ts";
import type { Stored } from "../../../kernels/wgsl/common.ts";
import type { Driver } from "./ffi.ts";
import { q4RowWords, scaleWord } from "../gpu_layout.ts";

/** A ring of pinned staging slots on one stream. */
export class Staging {
  readonly #d: Driver;
  readonly #stream: Deno.PointerValue;
  readonly #slotBytes: number;
  readonly #slots: { ptr: Deno.PointerObject; view: Uint8Array; event: Deno.PointerValue; pending: boolean }[] = [];
  #slot = 0;
  #used = 0;

  constructor(d: Driver, stream: Deno.PointerValue, slotBytes: number, slots: number) {
    this.#d = d;
    this.#stream = stream;
    this.#slotBytes = slotBytes;
    for (let i = 0; i < slots; i++) {
      const ptr = d.memAllocHost(slotBytes);
      const view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, slotBytes));
      this.#slots.push({ ptr, view, event: d.eventCreate(0), pending: false });
    }
  }

  /** Queues a copy of `data` to device address `dst` (the data is taken at once: the caller may reuse it). */
  put(dst: bigint, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      if (this.#used === this.#slotBytes) this.#next();
      const s = this.#slots[this.#slot];
      const n = Math.min(data.length - done, this.#slotBytes - this.#used);
      s.view.set(data.subarray(done, done + n), this.#used);
      this.#d.memcpyHtoDAsync(dst + BigInt(done), Deno.UnsafePointer.offset(s.ptr, this.#used), n, this.#stream);
      this.#used += n;
      done += n;
    }
  }

  /** Moves to the next slot: marks the current one in use until its copies are done, waits for the next one. */
  #next(): void {
    const s = this.#slots[this.#slot];
    this.#d.eventRecord(s.event, this.#stream);
    s.pending = true;
    this.#slot = (this.#slot + 1) % this.#slots.length;
    const n = this.#slots[this.#slot];
    if (n.pending) this.#d.eventSynchronize(n.event);
    n.pending = false;
    this.#used = 0;
  }

  dispose(): void {
    for (const s of this.#slots) {
      try {
        this.#d.eventDestroy(s.event);
        this.#d.memFreeHost(s.ptr);
      } catch { /* after a fatal error */ }
    }
    this.#slots.length = 0;
  }
}

/**
 * Streams `source` into `target` in the device layout, writing through `write` (queued in order): f32 / i32 as
 * values (other float dtypes a backend promotes to f32 decoded first), bf16 / f16 / FP8 / q8 / NVFP4 codes as they
 * come with their f32 scales after the part's codes, q4 as its blocks then f16 scales, each K-row's from a new
 * 32-bit word (webgpu ops.ts `q4RowWords`).
 */
export async function uploadWeightChunks(
  target: WeightTarget,
  source: WeightSource,
  write: (view: TensorView, data: ArrayBufferView) => void,
): Promise<void> {
  const name = target.decl.name, stored = target.storage, shape = maxShape(target.decl.shape);
  const per = rowElements(shape), k = shape[shape.length - 1] ?? 1;
  const at = (part: { view: TensorView }, offset: number) => ({
    buffer: part.view.buffer,
    offset: part.view.offset + offset,
  });
  if (stored === "q4") {
    const kRows = per / k, words = q4RowWords(k), blocks = Math.ceil(k / 32);
    await uploadChunks(target, source, (chunk, part, row) => {
      if (chunk.dtype !== "q4" || !chunk.scales) throw new Error(`cuda: weight ${name}: a q4 chunk without scales`);
      const n = chunk.rows * kRows;
      write(at(part, 4 * words.codes * row * kRows), chunk.data);
      const halves = new Uint16Array(2 * words.scales * n);
      for (let r = 0; r < n; r++) {
        for (let b = 0; b < blocks; b++) halves[2 * words.scales * r + b] = encodeF16(chunk.scales[r * blocks + b]);
      }
      const scales = 4 * scaleWord([part.rows, ...shape.slice(1)], part.rows, "q4");
      write(at(part, scales + 4 * words.scales * row * kRows), halves);
    });
    return;
  }
  if (stored === "f32" || stored === "i32") {
    await uploadChunks(target, source, (chunk, part, row) => {
      const values = chunk.dtype === "i32" ? chunk.data : chunkToF32(chunk, scratchF32(chunk.rows * per, 3));
      write(at(part, 4 * row * per), values);
    });
    return;
  }
  const width = stored === "bf16" || stored === "f16" ? 2 : stored === "nvfp4" ? 0.5 : 1;
  const scalesPerRow = stored === "q8" ? per / 32 : stored === "nvfp4" ? per / 16 : per / k;
  const quantised = stored === "f8e4m3" || stored === "q8" || stored === "nvfp4";
  await uploadChunks(target, source, (chunk, part, row) => {
    if (chunk.dtype !== stored) throw new Error(`cuda: weight ${name} comes as ${chunk.dtype}, not ${stored}`);
    write(at(part, width * row * per), chunk.data);
    if (quantised) {
      if (!chunk.scales) throw new Error(`cuda: weight ${name}: a ${stored} chunk has no scales`);
      const scales = 4 * scaleWord([part.rows, ...shape.slice(1)], part.rows, stored as Stored);
      write(at(part, scales + 4 * row * scalesPerRow), chunk.scales);
    }
  });
}
