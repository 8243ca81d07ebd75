/**
 * Acceptance: the real server over the random-weight `tiny` model, whose unconstrained output is noise. Every
 * request over the test schemas and tool sets (streamed and not, greedy and sampled, tight budgets) must come back
 * as JSON that validates, or as tool calls whose arguments validate; refusals must be 400s that name the problem.
 */
import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { e2eCases, runRequests, startE2eServer } from "../tests/grammar_e2e_helpers.ts";

/** Requests in CI; `deno run -A bench/grammar.ts --requests 200` runs more. */
const REQUESTS = 40;

Deno.test("e2e: constrained requests on the tiny model always parse and validate, streamed or not", async () => {
  const s = await startE2eServer();
  try {
    const results = await runRequests(s, REQUESTS);
    const failed = results.filter((r) => r.errors.length > 0);
    assertEquals(failed, [], JSON.stringify(failed, null, 1));
    assert(new Set(results.map((r) => r.case)).size >= Math.min(REQUESTS, e2eCases().length) - 1);
    assert(results.some((r) => r.stream) && results.some((r) => !r.stream));
    const st = s.engine.stats();
    assertEquals([st.running, st.waiting, st.cacheBlocksUsed], [0, 0, 0], "engine idle, blocks freed");
    assertEquals(s.logger.errors, []);
  } finally {
    await s.close();
  }
});

Deno.test("e2e: what the grammar cannot do is a 400 naming it", async () => {
  const s = await startE2eServer();
  try {
    const messages = [{ role: "user" as const, content: "hi" }];
    const refuse = async (body: Record<string, unknown>, param: string, words: string) => {
      // deno-lint-ignore no-explicit-any
      const e = await assertRejects(() =>
        s.client.chat.completions.create({ model: "tiny", messages, ...body } as any)
      );
      const err = e as { status?: number; error?: { param?: string; message?: string } };
      assertEquals(err.status, 400, String(e));
      assertEquals(err.error?.param, param);
      assert(err.error?.message?.includes(words), err.error?.message);
    };
    const format = (schema: unknown) => ({
      response_format: { type: "json_schema", json_schema: { name: "x", schema } },
    });
    await refuse(
      format({ type: "object", patternProperties: { a: {} } }),
      "response_format.json_schema.schema",
      "patternProperties",
    );
    await refuse(
      format({ type: "string", pattern: "(?<=a)b" }),
      "response_format.json_schema.schema",
      "lookahead and lookbehind",
    );
    await refuse(
      { ...format({ type: "string", minLength: 50 }), max_tokens: 20 },
      "max_tokens",
      "max_tokens is too small",
    );
    const tools = [{ type: "function", function: { name: "f", parameters: { type: "object", not: {} } } }];
    await refuse({ tools, tool_choice: "required" }, "tools[0].function.parameters", "not is not supported");
    await refuse({ tools, tool_choice: { type: "function", function: { name: "g" } } }, "tool_choice", "not in tools");
    await refuse({ tool_choice: "required" }, "tool_choice", "needs tools");
    await refuse({ response_format: { type: "json_object", schema: 123 } }, "response_format.schema", "JSON Schema");
  } finally {
    await s.close();
  }
});
