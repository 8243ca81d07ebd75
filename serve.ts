/**
 * `deno task serve` — the OpenAI-compatible server. Flags: `deno task serve --help`.
 *
 * @module
 */
import { main } from "./server/cli.ts";

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`tramontane: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
