/**
 * Kernel worker: instantiates the kernels module on the shared memory, takes its own stack, then serves jobs
 * posted through the control words of threads.ts until told to quit. The job loop is synchronous (Atomics), so
 * after start-up this worker never returns to its event loop.
 *
 * @module
 */
/// <reference lib="deno.worker" />

import { wrapExports } from "./module.ts";
import { CTL, pieceBound, type WorkerInit } from "./threads.ts";

self.onmessage = async (ev: MessageEvent<WorkerInit>) => {
  const init = ev.data;
  const instance = await WebAssembly.instantiate(init.module, { env: { memory: init.memory } });
  const ex = instance.exports as Record<string, unknown>;
  const sp = ex.__stack_pointer as WebAssembly.Global;
  sp.value = typeof sp.value === "bigint" ? BigInt(init.stackTop) : init.stackTop; // i64 in the wasm64 build
  // Numbers in, as on the main thread: the wasm64 build's i64 (pointer) arguments become BigInt.
  const wrapped = wrapExports(ex, init.signatures);
  const fns = init.names.map((n) => wrapped[n] as (...a: number[]) => unknown);
  const ctl = new Int32Array(init.ctl);
  const args = new Float64Array(init.ctl, CTL.ARGS_BYTE, CTL.MAX_ARGS);
  const me = init.index;
  // Read the generation before saying ready: the first job may be posted the moment "ready" arrives.
  let seen = Atomics.load(ctl, CTL.GEN);
  self.postMessage("ready");
  for (;;) {
    // Spin for a while after each job (reading the clock every 64 polls): decode issues many small kernels with
    // single-threaded work between them, and waking from Atomics.wait costs tens of microseconds when the machine
    // is quiet and up to a scheduler tick when it is busy.
    let gen = Atomics.load(ctl, CTL.GEN);
    if (gen === seen) {
      const end = performance.now() + Atomics.load(ctl, CTL.SPIN_US) / 1000;
      for (let i = 1; gen === seen; i++) {
        gen = Atomics.load(ctl, CTL.GEN);
        if ((i & 63) === 0 && performance.now() > end) break;
      }
    }
    while (gen === seen) {
      Atomics.wait(ctl, CTL.GEN, seen);
      gen = Atomics.load(ctl, CTL.GEN);
    }
    seen = gen;
    if (Atomics.load(ctl, CTL.QUIT)) break;
    const pieces = ctl[CTL.CHUNKS];
    const r0 = ctl[CTL.RANGES + 2 * me], r1 = ctl[CTL.RANGES + 2 * me + 1];
    if (r1 > r0 || pieces > 0) {
      try {
        const n = ctl[CTL.NARGS], a: number[] = new Array(n + 2), fn = fns[ctl[CTL.KERNEL]];
        for (let i = 0; i < n; i++) a[i] = args[i];
        if (pieces === 0) {
          a[n] = r0;
          a[n + 1] = r1;
          fn(...a);
        } else {
          // Take pieces until none is left (see ParallelOptions.chunks).
          const rows = ctl[CTL.ROWS], units = ctl[CTL.UNITS], align = ctl[CTL.ALIGN];
          for (let c = Atomics.add(ctl, CTL.NEXT, 1); c < pieces; c = Atomics.add(ctl, CTL.NEXT, 1)) {
            a[n] = pieceBound(c, pieces, units, align, rows);
            a[n + 1] = pieceBound(c + 1, pieces, units, align, rows);
            fn(...a);
          }
        }
      } catch (e) {
        if (Atomics.compareExchange(ctl, CTL.ERR, 0, me) === 0) {
          const msg = new TextEncoder().encode(String(e instanceof Error ? e.message : e).slice(0, 900));
          new Uint8Array(init.ctl, CTL.MSG_BYTE, msg.length).set(msg);
          ctl[CTL.MSG_LEN] = msg.length;
        }
      }
    }
    if (Atomics.add(ctl, CTL.DONE, 1) + 1 === init.workers) Atomics.notify(ctl, CTL.DONE);
  }
  self.close();
};
