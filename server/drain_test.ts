import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { Drain } from "./drain.ts";

Deno.test("drain: with nothing running the shutdown resolves at once, and only once", async () => {
  const drain = new Drain();
  assert(!drain.draining);
  const starts: number[] = [];
  const first = drain.shutdown(60_000, { onStart: (n) => starts.push(n) });
  assert(drain.draining && drain.stopping.aborted);
  assertEquals(drain.shutdown(0), first);
  await first;
  assertEquals(starts, [0]);
});

Deno.test("drain: requests that end within the grace are not aborted", async () => {
  const drain = new Drain();
  const a = drain.begin(), b = drain.begin();
  const cancelled: number[] = [];
  let done = false;
  const stopped = drain.shutdown(60_000, { onCancel: (n) => cancelled.push(n) }).then(() => done = true);
  drain.end(a);
  await Promise.resolve();
  assert(!done, "resolved with a request still running");
  assertEquals(drain.running, 1);
  drain.end(b);
  await stopped;
  assert(!a.signal.aborted && !b.signal.aborted);
  assertEquals(cancelled, []);
});

Deno.test("drain: requests still running when the grace is over are aborted; it waits for them to end", async () => {
  const drain = new Drain();
  const fast = drain.begin(), slow = drain.begin();
  const cancelled: number[] = [];
  drain.end(fast);
  // A request that ends when it is aborted, as a generation does.
  slow.signal.addEventListener("abort", () => drain.end(slow));
  await drain.shutdown(0, { onCancel: (n) => cancelled.push(n) });
  assertEquals([fast.signal.aborted, slow.signal.aborted, drain.running], [false, true, 0]);
  assertEquals(cancelled, [1]);
});

Deno.test("drain: a request that ignores the abort does not hold the shutdown forever", async () => {
  const drain = new Drain();
  const stuck = drain.begin();
  await drain.shutdown(0);
  assert(stuck.signal.aborted);
  assertEquals(drain.running, 1);
  drain.end(stuck);
  drain.end(stuck); // twice is harmless
  assertEquals(drain.running, 0);
});

Deno.test("drain: a grace that is negative, not a number or past setTimeout's range is a RangeError", () => {
  for (const bad of [-1, NaN, Infinity, 2 ** 31]) assertThrows(() => new Drain().shutdown(bad), RangeError, "graceMs");
});
