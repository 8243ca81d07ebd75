import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { InvalidRequestError } from "../chat/errors.ts";
import { createLLM } from "./llm.ts";

const quietLogger = { info() {}, warn() {}, error() {} };

Deno.test("createLLM speculative: greedy answers equal those without the draft; bad options name speculative", async () => {
  for (const speculative of [{ model: "tiny-eagle", numTokens: 0 }, { model: "", numTokens: 2 }]) {
    const e = await assertRejects(() => createLLM("tiny", { speculative }), InvalidRequestError, "speculative");
    assertEquals(e.param, "speculative");
  }
  const request = { messages: [{ role: "user" as const, content: "Hello there" }], max_tokens: 12, temperature: 0 };
  const answers: string[] = [];
  for (const speculative of [undefined, { model: "tiny-eagle", numTokens: 3 }]) {
    const llm = await createLLM("tiny", { vision: false, quiet: true, logger: quietLogger, speculative });
    try {
      const r = await llm.chatCompletion(request);
      assertEquals(r.usage.completion_tokens, 12);
      answers.push(r.choices[0].message.content ?? "");
    } finally {
      await llm.close();
    }
  }
  assert(answers[0].length > 0);
  assertEquals(answers[1], answers[0]);
});
