/**
 * What the CPU benches' memory rooflines are made of: the machine's bandwidth (bench/bandwidth.ts, in a process of
 * its own so its arrays stay out of the caller's peak RSS) and the bytes a decode step at batch 1 reads.
 *
 * @module
 */

import { BITS_PER_ELEMENT } from "../graph/dtype.ts";
import { activeFraction } from "../graph/inspect.ts";
import type { Model } from "../engine/model.ts";

/** STREAM-style add (y = a + b over 3 × 128 MiB) on the WASM kernels with `threads` threads: GB/s, best of 5. */
export async function memoryBandwidth(threads: number): Promise<number> {
  const script = new URL("./bandwidth.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", script, "--threads", String(threads)],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("bench/bandwidth.ts failed");
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** Bytes read from memory to decode one token at batch 1: active weights in their stored dtype. */
export function bytesPerToken(m: Model): number {
  let bytes = 0;
  for (const w of m.graph.weights) {
    const n = (w.shape as number[]).reduce((a, b) => a * b, 1);
    // The embedding is read one row per token.
    const read = w.name === "embed" ? n / m.config.vocab_size : n * activeFraction(w.name, m.config);
    bytes += (read * BITS_PER_ELEMENT[w.dtype]) / 8;
  }
  return bytes;
}
