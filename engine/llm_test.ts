import { assert, assertEquals, assertNotEquals, assertRejects } from "../tests/assert.ts";
import { fixture } from "../tests/fixtures.ts";
import { encodeChat } from "../chat/encode.ts";
import { InvalidRequestError } from "../chat/errors.ts";
import { createServer } from "../server/server.ts";
import type { ChatCompletionChunk } from "./chat_output.ts";
import { EngineClosedError } from "./engine.ts";
import { DEFAULT_SAMPLING } from "./params.ts";
import { createLLM, type LLM, type LLMChatRequest } from "./llm.ts";

const quietLogger = { info: () => {}, warn: () => {}, error: () => {} };

/** Everything a stream says, put together as the whole response would say it. */
async function gather(stream: AsyncIterable<ChatCompletionChunk>) {
  const chunks: ChatCompletionChunk[] = [];
  let content: string | null = null;
  let reasoning: string | null = null;
  const calls: { id?: string; name?: string; arguments: string }[] = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices) {
      const d = c.delta;
      if (typeof d.content === "string") content = (content ?? "") + d.content;
      if (d.reasoning !== undefined) reasoning = (reasoning ?? "") + d.reasoning;
      for (const t of d.tool_calls ?? []) {
        const call = calls[t.index] ??= { arguments: "" };
        if (t.id !== undefined) call.id = t.id;
        if (t.function.name !== undefined) call.name = t.function.name;
        call.arguments += t.function.arguments;
      }
    }
  }
  const last = chunks.filter((c) => c.choices.length > 0).at(-1)!;
  return { chunks, content, reasoning, calls, finish: last.choices[0].finish_reason, usage: chunks.at(-1)!.usage };
}

/** The chunks the server streams for `body`, through its fetch handler (no socket). */
async function serverChunks(llm: LLM, body: Record<string, unknown>): Promise<ChatCompletionChunk[]> {
  const server = createServer({
    engine: llm.engine,
    tokenizer: llm.tokenizer,
    modelName: llm.name,
    logger: quietLogger,
  });
  const res = await server.fetch(
    new Request("http://localhost/v1/chat/completions", { method: "POST", body: JSON.stringify(body) }),
  );
  assertEquals(res.status, 200);
  const lines = (await res.text()).split("\n").filter((l) => l.startsWith("data: ") && l !== "data: [DONE]");
  return lines.map((l) => JSON.parse(l.slice(6)));
}

/** A chunk without what differs between two runs of the same request (the second finds the prompt cached). */
function comparable(c: ChatCompletionChunk): unknown {
  const { id: _id, created: _created, ...rest } = c;
  if (!rest.usage) return rest;
  return { ...rest, usage: { ...rest.usage, prompt_tokens_details: { cached_tokens: "any" } } };
}

const weather = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 12 }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city", "days"],
      additionalProperties: false,
    },
  },
};

Deno.test("createLLM: the demo model chats as the server does (stream, whole, tools, JSON, reasoning, images)", async (t) => {
  const llm = await createLLM("demo", { threads: 1, quiet: true, logger: quietLogger, maxModelLen: 1024 });
  try {
    const hello: LLMChatRequest = { messages: [{ role: "user", content: "Hello" }], max_tokens: 12, temperature: 0 };

    await t.step("streamed content deltas concatenate to the whole message; usage comes last", async () => {
      const streamed = await gather(llm.chat(hello));
      const whole = await llm.chatCompletion(hello);
      const message = whole.choices[0].message;
      assert(message.content !== null && message.content.length > 0);
      assertEquals(streamed.content, message.content);
      assertEquals(streamed.finish, "length");
      assertEquals(whole.choices[0].finish_reason, "length");
      assertEquals(streamed.chunks[0].choices[0].delta, { role: "assistant", content: null });
      assertEquals(streamed.usage, whole.usage);
      const prompt = encodeChat(llm.tokenizer, { messages: hello.messages }).ids.length;
      assertEquals(whole.usage.prompt_tokens, prompt);
      assertEquals(whole.usage.completion_tokens, 12);
      assertEquals(whole.model, "demo");
      assert(whole.id.startsWith("chatcmpl-"));
    });

    await t.step("the chunks are the server's, field for field", async () => {
      const ours = await gather(llm.chat({ ...hello, stream_options: { include_usage: true } }));
      const theirs = await serverChunks(llm, { ...hello, stream: true, stream_options: { include_usage: true } });
      assertEquals(ours.chunks.map(comparable), theirs.map(comparable));
    });

    await t.step("include_usage false: no usage chunk", async () => {
      const streamed = await gather(llm.chat({ ...hello, stream_options: { include_usage: false } }));
      assert(streamed.chunks.every((c) => c.usage === undefined && c.choices.length === 1));
    });

    await t.step("a preset without max_tokens stops at maxTokensDefault (256)", async () => {
      const whole = await llm.chatCompletion({ messages: hello.messages, temperature: 0 });
      assertEquals(whole.usage.completion_tokens, 256);
      assertEquals(whole.choices[0].finish_reason, "length");
    });

    await t.step("tool_choice required: a parsed tool call whose arguments fit the schema", async () => {
      const request: LLMChatRequest = {
        messages: [{ role: "user", content: "Weather in Paris for 3 days?" }],
        tools: [weather],
        tool_choice: "required",
        parallel_tool_calls: false,
        max_tokens: 64,
        seed: 7,
      };
      const whole = await llm.chatCompletion(request);
      const choice = whole.choices[0];
      assertEquals(choice.finish_reason, "tool_calls");
      const calls = choice.message.tool_calls!;
      assertEquals(calls.length, 1);
      assertEquals(calls[0].function.name, "get_weather");
      const args = JSON.parse(calls[0].function.arguments);
      assertEquals(Object.keys(args).sort(), ["city", "days"]);
      assert(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7);
      const streamed = await gather(llm.chat(request));
      assertEquals(streamed.finish, "tool_calls");
      assertEquals(streamed.calls.length, 1);
      assertEquals(streamed.calls[0].name, "get_weather");
      assertEquals(streamed.calls[0].arguments, calls[0].function.arguments, "same seed, same call");
      assert(/^[A-Za-z0-9]{9}$/.test(streamed.calls[0].id!));
    });

    await t.step("response_format json_schema: the answer is JSON of that schema", async () => {
      const schema = {
        type: "object",
        properties: { answer: { type: "integer" }, unit: { enum: ["cm", "m"] } },
        required: ["answer", "unit"],
        additionalProperties: false,
      };
      const whole = await llm.chatCompletion({
        messages: [{ role: "user", content: "How tall?" }],
        response_format: { type: "json_schema", json_schema: { name: "height", schema } },
        max_tokens: 48,
        seed: 3,
      });
      const value = JSON.parse(whole.choices[0].message.content!);
      assert(Number.isInteger(value.answer), whole.choices[0].message.content!);
      assert(["cm", "m"].includes(value.unit));
      assertEquals(Object.keys(value).sort(), ["answer", "unit"]);
    });

    await t.step("reasoning_effort reaches the prompt; a bad one is refused naming it", async () => {
      const messages = hello.messages;
      // The model's first-token distribution under each prompt, from the library and from the engine directly.
      const viaLLM = async (effort: string) => {
        const whole = await llm.chatCompletion({
          messages,
          reasoning_effort: effort,
          max_tokens: 1,
          temperature: 0,
          logprobs: true,
          top_logprobs: 5,
        });
        return whole.choices[0].logprobs!.content[0].top_logprobs.map((t) => t.logprob);
      };
      const direct = async (effort: string) => {
        const promptIds = encodeChat(llm.tokenizer, { messages, reasoning_effort: effort }).ids;
        const sampling = { ...DEFAULT_SAMPLING, temperature: 0, logprobs: 5 };
        for await (const t of llm.engine.generate({ promptIds, sampling, maxTokens: 1 })) {
          return t.topLogprobs!.map((t) => t.logprob);
        }
      };
      const high = await viaLLM("high");
      assertEquals(high, await direct("high"));
      assertEquals(await viaLLM("none"), await direct("none"));
      assertNotEquals(high, await direct("none"));
      const e = await assertRejects(
        () => llm.chatCompletion({ messages, reasoning_effort: "medium" }),
        InvalidRequestError,
      );
      assertEquals(e.param, "reasoning_effort");
    });

    await t.step("an image_url part (data: URL) is preprocessed and laid out as the server does it", async () => {
      assert(llm.vision, "demo loads with vision");
      const bytes = await Deno.readFile(fixture("images/chelsea.png"));
      const url = `data:image/png;base64,${btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""))}`;
      const request: LLMChatRequest = {
        messages: [{
          role: "user",
          content: [{ type: "text", text: "What is this?" }, { type: "image_url", image_url: { url } }],
        }],
        max_tokens: 4,
        temperature: 0,
      };
      const streamed = await gather(llm.chat(request));
      // image_preprocessing_reference.json: chelsea.png is 198 tokens (17×11 + 11 breaks/end) in place of [IMG].
      const placeholder = encodeChat(llm.tokenizer, { messages: request.messages }).ids.length;
      assertEquals(streamed.usage?.prompt_tokens, placeholder - 1 + 198);
      assertEquals(streamed.usage?.completion_tokens, 4);
      const theirs = await serverChunks(llm, { ...request, stream: true, stream_options: { include_usage: true } });
      assertEquals(streamed.chunks.map(comparable), theirs.map(comparable));
      const bad = await assertRejects(() =>
        llm.chatCompletion({
          messages: [{
            role: "user",
            content: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }],
          }],
        }), InvalidRequestError);
      assert(bad.param?.startsWith("messages"), String(bad.param));
    });

    await t.step("bad fields throw InvalidRequestError with the server's message and param", async () => {
      const cases: [Record<string, unknown>, string, string][] = [
        [{ ...hello, temperature: 3 }, "temperature", "temperature must be at least 0 and at most 2, got 3."],
        [{ max_tokens: 4 }, "messages", "messages is required"],
        [{ ...hello, tool_choice: "required" }, "tool_choice", 'tool_choice "required" needs tools.'],
        [{ ...hello, response_format: { type: "yaml" } }, "response_format.type", "not supported"],
        [{ ...hello, max_tokens: 5000 }, "max_tokens", "maximum context length is 1024 tokens"],
        [{ ...hello, stop: ["a", "b", "c", "d", "e"] }, "stop", "stop takes at most 4 strings."],
        [{ ...hello, logit_bias: { 5: 1 } }, "logit_bias", "logit_bias is not supported yet."],
      ];
      for (const [body, param, words] of cases) {
        const whole = await assertRejects(
          () => llm.chatCompletion(body as unknown as LLMChatRequest),
          InvalidRequestError,
          words,
        );
        assertEquals(whole.param, param);
        const streamed = await assertRejects(
          () => gather(llm.chat(body as unknown as LLMChatRequest)),
          InvalidRequestError,
          words,
        );
        assertEquals(streamed.param, param);
        // The server answers the same body with a 400 of the same message and param.
        const server = createServer({
          engine: llm.engine,
          tokenizer: llm.tokenizer,
          modelName: "demo",
          logger: quietLogger,
        });
        const res = await server.fetch(
          new Request("http://localhost/v1/chat/completions", { method: "POST", body: JSON.stringify(body) }),
        );
        assertEquals(res.status, 400);
        const { error } = await res.json();
        assertEquals([error.message, error.param], [whole.message, param]);
      }
    });

    await t.step("leaving the loop early, or aborting, frees the sequence", async () => {
      for await (const chunk of llm.chat({ ...hello, max_tokens: 200 })) {
        if (chunk.choices[0]?.delta.content) break;
      }
      assertEquals(llm.engine.stats().running, 0);
      const controller = new AbortController();
      const stream = llm.chat({ ...hello, max_tokens: 200 }, { signal: controller.signal });
      let finish: string | null = null;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) controller.abort();
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assertEquals(finish, "abort");
      assertEquals(llm.engine.stats().running, 0);
    });
  } finally {
    await llm.close();
  }
});

Deno.test("createLLM: close() stops the engine and frees the model; later calls throw", async () => {
  const llm = await createLLM("tiny", { threads: 1, quiet: true, logger: quietLogger });
  const request: LLMChatRequest = { messages: [{ role: "user", content: "Hi" }], max_tokens: 200, temperature: 0 };
  assertEquals((await llm.model.forward([1, 3])).length, 2 * llm.model.config.vocab_size);
  const running = assertRejects(() => llm.chatCompletion(request), EngineClosedError);
  // Wait until the sequence is in the engine, then close under it.
  while (llm.engine.stats().running === 0) await new Promise((r) => setTimeout(r, 1));
  await llm.close();
  await running;
  assertEquals(llm.engine.stats().running, 0);
  assertEquals(llm.engine.stats().cacheBlocksUsed, 0);
  await assertRejects(() => llm.chatCompletion(request), EngineClosedError);
  await assertRejects(() => gather(llm.chat(request)), EngineClosedError);
  // The backends' memory is gone: the model that ran above can no longer run.
  await assertRejects(() => llm.model.forward([1, 3]));
  await llm.close(); // twice is fine
});

Deno.test("createLLM: bad options throw naming the option; images on a text-only model name messages", async () => {
  const bad: [Record<string, unknown>, string][] = [
    [{ dtype: "int4" }, "dtype"],
    [{ headDType: "f32" }, "headDType"],
    [{ threads: 0 }, "threads"],
    [{ softmaxScale: "huge" }, "softmaxScale"],
    [{ maxTokensDefault: 1.5 }, "maxTokensDefault"],
    [{ maxModelLen: -1 }, "maxModelLen"],
  ];
  for (const [options, param] of bad) {
    const e = await assertRejects(() => createLLM("tiny", options), InvalidRequestError, param);
    assertEquals(e.param, param);
  }
  const e = await assertRejects(() => createLLM("no-such-dir"), Error, "not a preset");
  assert(!(e instanceof InvalidRequestError));
  // A checkpoint without its tekken.json: the error says how to give one, before any weight is read.
  const noTokenizer = await assertRejects(
    () => createLLM(fixture("model/tiny_rect/checkpoint").pathname),
    InvalidRequestError,
    "has no tekken.json; pass its path as { tokenizer:",
  );
  assertEquals(noTokenizer.param, "tokenizer");
  const llm = await createLLM("tiny", { vision: false, threads: 1, quiet: true, logger: quietLogger });
  try {
    assert(!llm.vision);
    const image = await assertRejects(
      () =>
        llm.chatCompletion({
          messages: [{
            role: "user",
            content: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }],
          }],
        }),
      InvalidRequestError,
      "does not accept images",
    );
    assertEquals(image.param, "messages[0].content[0].image_url");
  } finally {
    await llm.close();
  }
});

Deno.test("createLLM: an NVFP4 make-checkpoint directory (Mistral-native, as released) serves on wasm, experts packed", async () => {
  const { makeCheckpoint } = await import("../weights/make_checkpoint.ts");
  const { presetConfig } = await import("../graph/models/mistral4.ts");
  const dir = await Deno.makeTempDir({ prefix: "tramontane_nvfp4_" });
  try {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype: "nvfp4", layout: "mistral", seed: 3 });
    const tokenizer = fixture("tokenizer/tekken_small4_v15_derived.json").pathname;
    const llm = await createLLM(dir, { backend: "wasm", tokenizer, threads: 1, quiet: true, logger: quietLogger });
    try {
      const experts = llm.model.graph.weights.find((w) => w.name === "layers.1.moe.gate_up")!;
      assertEquals([llm.model.backend.name, experts.dtype], ["wasm", "nvfp4"]);
      assertEquals(llm.model.backend.caps.promote.nvfp4, undefined); // stored as released, not widened to f32
      const request = { messages: [{ role: "user" as const, content: "Hello!" }], max_tokens: 8, temperature: 0 };
      const chunks = await serverChunks(llm, { ...request, stream: true });
      const whole = await llm.chatCompletion(request);
      const streamed = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
      assertEquals(streamed, whole.choices[0].message.content);
      assertEquals(whole.usage.completion_tokens, 8);
      assertEquals(whole.choices[0].finish_reason, "length");
    } finally {
      await llm.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
