/**
 * The real server over `tiny` on the `webgpu` backend alone (lavapipe in CI): every server feature a user reaches —
 * streaming, tool calls and JSON schemas constrained through the device's packed masks (only sampled ids come back),
 * and images through the vision encoder on the device.
 */
import { assert, assertEquals } from "./assert.ts";
import { e2eCases, runRequest, startE2eServer } from "./grammar_e2e_helpers.ts";
import { fixture } from "./fixtures.ts";
import { WEBGPU_IGNORE } from "./webgpu_helpers.ts";
import { imageTokenGrid, imageTokenLayout, SMALL4_IMAGE_CONFIG } from "../chat/image.ts";

Deno.test({
  name: "server (webgpu): tiny streams, answers constrained requests and tool calls, and reads images on the device",
  ignore: WEBGPU_IGNORE,
  async fn(t) {
    const s = await startE2eServer({ backend: "webgpu" });
    try {
      assert(s.loaded.samplesOnBackend, "webgpu samples on the device (ids only come back)");
      const messages = [{ role: "user" as const, content: "Say something." }];

      await t.step("streaming: chunks, then usage and [DONE]", async () => {
        const stream = await s.client.chat.completions.create({
          model: s.model,
          messages,
          max_tokens: 12,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        });
        let text = "", usage = 0, finish: string | null = null;
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta.content ?? "";
          finish ??= chunk.choices[0]?.finish_reason ?? null;
          usage = chunk.usage?.completion_tokens ?? usage;
        }
        assert(text.length > 0, "streamed some text");
        assert(finish === "length" || finish === "stop", `finish ${finish}`);
        assert(usage > 0 && usage <= 12, `completion tokens ${usage}`);
      });

      await t.step("constrained decoding and tool calls: every answer validates", async () => {
        // One JSON schema, json_object, and every tool case of the grammar suite (required, named, one call,
        // reasoning, JSON or call), alternately streamed, greedy and sampled: lavapipe takes seconds a request.
        const cases = e2eCases();
        const picked = [0, ...cases.flatMap((c, i) => c.name === "json_object" || c.tools ? [i] : [])];
        const results = [];
        for (const i of picked) results.push(await runRequest(s, cases, i + cases.length * (i % 2)));
        assertEquals(results.filter((r) => r.errors.length > 0), []);
        assert(results.some((r) => r.case.includes("weather")), "tool cases ran");
      });

      await t.step("an image: its tokens reach the prompt and the answer comes back", async () => {
        const png = await Deno.readFile(fixture("images/chelsea.png"));
        let binary = "";
        for (let i = 0; i < png.length; i += 0x8000) binary += String.fromCharCode(...png.subarray(i, i + 0x8000));
        const url = `data:image/png;base64,${btoa(binary)}`;
        const ask = (content: unknown) =>
          // deno-lint-ignore no-explicit-any
          s.client.chat.completions.create({
            model: s.model,
            messages: [{ role: "user", content }] as any,
            max_tokens: 4,
          });
        const plain = await ask([{ type: "text", text: "What is this?" }]);
        const withImage = await ask([{ type: "image_url", image_url: { url } }, {
          type: "text",
          text: "What is this?",
        }]);
        // chelsea.png is 451 × 300.
        const imageTokens = imageTokenLayout(imageTokenGrid(451, 300, SMALL4_IMAGE_CONFIG)).ids.length;
        assertEquals(withImage.usage!.prompt_tokens - plain.usage!.prompt_tokens, imageTokens);
        assert(withImage.usage!.completion_tokens > 0);
      });

      const st = s.engine.stats();
      assertEquals([st.running, st.waiting, st.cacheBlocksUsed], [0, 0, 0], "engine idle, blocks freed");
      assertEquals(s.logger.errors, []);
    } finally {
      await s.close();
    }
  },
});
