/**
 * `deno task serve` — the OpenAI-compatible server. Flags: `deno task serve --help`. SIGTERM or SIGINT drains it
 * (`--shutdown-grace`) and exits 0.
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
  // Stopped cleanly: exit now rather than wait for backend workers and timers to wind down.
  Deno.exit(0);
}
