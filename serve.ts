/**
 * `deno task serve` — the OpenAI-compatible server.
 *
 * The server is not built yet (issue 5); this entry says so instead of failing obscurely.
 */
if (import.meta.main) {
  console.error(
    "tramontane: the server is not built yet. The tokenizer, chat encoding and output parsing are available " +
      "as a library through mod.ts; see README.md for what works today.",
  );
  Deno.exit(1);
}
