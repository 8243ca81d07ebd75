/**
 * Host → device copies through pinned memory, for the `cuda` backend: a ring of page-locked staging slots
 * (`cuMemAllocHost`), each guarded by an event; the weight upload (../gpu_upload.ts) streams a checkpoint's row
 * chunks through them in the device layout.
 *
 * A copy from pageable memory makes the driver stage it itself (and synchronise the stream first); from pinned
 * memory `cuMemcpyHtoDAsync` is a DMA queued on the stream like any launch. A slot is refilled only after the
 * event recorded behind its last copy has completed, so up to `slots − 1` slots of copies are in flight while the
 * next is filled.
 *
 * @module
 */

import type { Driver } from "./ffi.ts";

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
