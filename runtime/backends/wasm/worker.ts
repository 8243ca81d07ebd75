/**
 * Kernel worker: instantiates the kernels module on the shared memory, takes its own stack, then serves jobs
 * posted through the control words of threads.ts until told to quit. The job loop is synchronous (Atomics), so
 * after start-up this worker never returns to its event loop.
 *
 * @module
 */
/// <reference lib="deno.worker" />

import { CTL, type WorkerInit } from "./threads.ts";

self.onmessage = async (ev: MessageEvent<WorkerInit>) => {
  const init = ev.data;
  const instance = await WebAssembly.instantiate(init.module, { env: { memory: init.memory } });
  const ex = instance.exports as Record<string, unknown>;
  (ex.__stack_pointer as WebAssembly.Global).value = init.stackTop;
  const fns = init.names.map((n) => ex[n] as (...a: number[]) => unknown);
  const ctl = new Int32Array(init.ctl);
  const args = new Float64Array(init.ctl, CTL.ARGS_BYTE, CTL.MAX_ARGS);
  const me = init.index;
  // Read the generation before saying ready: the first job may be posted the moment "ready" arrives.
  let seen = Atomics.load(ctl, CTL.GEN);
  self.postMessage("ready");
  for (;;) {
    // Spin briefly: decode issues many small kernels back to back, and a futex wake costs tens of microseconds.
    let gen = seen;
    for (let i = 0; i < init.spin && gen === seen; i++) gen = Atomics.load(ctl, CTL.GEN);
    while (gen === seen) {
      Atomics.wait(ctl, CTL.GEN, seen);
      gen = Atomics.load(ctl, CTL.GEN);
    }
    seen = gen;
    if (Atomics.load(ctl, CTL.QUIT)) break;
    const r0 = ctl[CTL.RANGES + 2 * me], r1 = ctl[CTL.RANGES + 2 * me + 1];
    if (r1 > r0) {
      try {
        const n = ctl[CTL.NARGS], a: number[] = new Array(n + 2);
        for (let i = 0; i < n; i++) a[i] = args[i];
        a[n] = r0;
        a[n + 1] = r1;
        fns[ctl[CTL.KERNEL]](...a);
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
