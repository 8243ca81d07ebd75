/**
 * Tokenizer throughput: `deno task bench:tokenizer [--json]`.
 *
 * English text is the Apache-2.0 licence text shipped with the fixtures, repeated to 1 MB; "first pass" is a fresh
 * tokenizer (empty piece cache, cold JIT), the other line the median of five later passes.
 */
import { parseArgs } from "node:util";
import { StreamDecoder, Tokenizer } from "../chat/tokenizer.ts";

const { values } = parseArgs({ options: { json: { type: "boolean" }, tokenizer: { type: "string" } } });
const fixtures = new URL("../../shared/fixtures/", import.meta.url);
const tokPath = values.tokenizer ?? new URL("tokenizer/tekken_small4_v15_derived.json", fixtures);
const english = Deno.readTextFileSync(new URL("LICENSE.mistral-common.txt", fixtures));

const t0 = performance.now();
const tok = await Tokenizer.fromFile(tokPath);
const loadMs = performance.now() - t0;

const mb = (s: string) => new TextEncoder().encode(s).length / 1e6;
function time(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const corpus = english.repeat(Math.ceil(1e6 / english.length));
// First pass of a fresh tokenizer: empty piece cache and cold JIT.
const coldSeconds = time(() => tok.encode(corpus));
const warm = [1, 2, 3, 4, 5].map(() => time(() => tok.encode(corpus)));
const ids = tok.encode(corpus);
const decodeSeconds = median([1, 2, 3].map(() => time(() => tok.decode(ids))));
const streamSeconds = median([1, 2, 3].map(() =>
  time(() => {
    const dec = new StreamDecoder(tok);
    for (const id of ids) dec.push(id);
    dec.finish();
  })
));
// Mixed scripts defeat the piece cache more: measure them too.
const mixed = Array.from({ length: 20000 }, (_, i) => `${i} naïve café 東京 ${i * 7} Ωmega 🦜 `).join("");
const mixedSeconds = time(() => tok.encode(mixed));

const result = {
  loadMs: Math.round(loadMs),
  encodeColdMBps: mb(corpus) / coldSeconds,
  encodeWarmMBps: mb(corpus) / median(warm),
  encodeMixedMBps: mb(mixed) / mixedSeconds,
  decodeMBps: mb(corpus) / decodeSeconds,
  streamDecodeTokensPerSecond: ids.length / streamSeconds,
  corpusTokens: ids.length,
};
if (values.json) console.log(JSON.stringify(result));
else {
  console.log("| measure | value |\n|---|---|");
  console.log(`| load tekken.json | ${result.loadMs} ms |`);
  console.log(`| encode English 1 MB, first pass (cold cache and JIT) | ${result.encodeColdMBps.toFixed(1)} MB/s |`);
  console.log(`| encode English, 1 MB, median of 5 | ${result.encodeWarmMBps.toFixed(1)} MB/s |`);
  console.log(
    `| encode mixed scripts + digits (${mb(mixed).toFixed(1)} MB) | ${result.encodeMixedMBps.toFixed(1)} MB/s |`,
  );
  console.log(`| decode 1 MB | ${result.decodeMBps.toFixed(1)} MB/s |`);
  console.log(`| streaming detokenizer | ${(result.streamDecodeTokensPerSecond / 1e6).toFixed(2)} M tokens/s |`);
}
