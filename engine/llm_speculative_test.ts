import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { InvalidRequestError } from "../chat/errors.ts";
import { fixture } from "../tests/fixtures.ts";
import { createLLM, type LLMChatRequest } from "./llm.ts";

const quietLogger = { info() {}, warn() {}, error() {} };

Deno.test("createLLM speculative: greedy answers (text, and an image) equal those without the draft; bad options", async () => {
  for (const speculative of [{ model: "tiny-eagle", numTokens: 0 }, { model: "", numTokens: 2 }]) {
    const e = await assertRejects(() => createLLM("tiny", { speculative }), InvalidRequestError, "speculative");
    assertEquals(e.param, "speculative");
  }
  const text: LLMChatRequest = { messages: [{ role: "user", content: "Hello there" }], max_tokens: 12, temperature: 0 };
  // The draft reads the target's hidden states at the image's positions (its own input there is the [IMG] token).
  const bytes = await Deno.readFile(fixture("images/chelsea.png"));
  const url = `data:image/png;base64,${btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""))}`;
  const image: LLMChatRequest = {
    messages: [{
      role: "user",
      content: [{ type: "text", text: "What is this?" }, { type: "image_url", image_url: { url } }],
    }],
    max_tokens: 12,
    temperature: 0,
  };
  const answers: string[][] = [];
  for (const speculative of [undefined, { model: "tiny-eagle", numTokens: 3 }]) {
    const llm = await createLLM("tiny", { quiet: true, logger: quietLogger, speculative });
    try {
      const out: string[] = [];
      for (const request of [text, image]) {
        const r = await llm.chatCompletion(request);
        assertEquals(r.usage.completion_tokens, 12);
        out.push(r.choices[0].message.content ?? "");
      }
      answers.push(out);
    } finally {
      await llm.close();
    }
  }
  assert(answers[0][0].length > 0 && answers[0][1].length > 0);
  assertEquals(answers[1], answers[0]);
});
