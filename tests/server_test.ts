/**
 * End to end: the real server (`createServer` + `serve` on port 0) over the real {@link ModelEngine} and the `tiny`
 * preset on the reference backend, with the demo tokenizer, driven by the official `openai` client — the wiring of
 * `deno task serve`. The random weights write noise, so tests compare the server with itself (streamed against
 * whole, seed against seed) and prompts with `encodeChat`, never text with expected text. The fake-engine suites
 * in `server/` cover what noise cannot reach (scripted reasoning and tool calls in the output).
 */
import OpenAI from "openai";
import { type ChatRequest, encodeChat } from "../chat/encode.ts";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import type { Tokenizer } from "../chat/tokenizer.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel } from "../engine/model.ts";
import { createServer, type ServeHandle } from "../server/server.ts";
import { MemoryLogger } from "./server_helpers.ts";
import { assert, assertEquals, assertNotEquals, assertRejects } from "./assert.ts";

const MODEL = "tiny";
/** Small enough that a too-long prompt is cheap to build, large enough for the prefix-cache prompt. */
const MAX_MODEL_LEN = 256;
/** Generated tokens per request: the reference backend is slow, and 8 tokens show every behaviour. */
const GEN = 8;

type Params = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;
type Message = OpenAI.Chat.Completions.ChatCompletionMessageParam;
type Completion = OpenAI.Chat.Completions.ChatCompletion;

let tokenizerPromise: Promise<Tokenizer> | undefined;

/** The demo tokenizer, read once per test process (it is the slow part of starting a server). */
function demoTokenizer(): Promise<Tokenizer> {
  return tokenizerPromise ??= loadDemoTokenizer();
}

interface RealServer {
  tok: Tokenizer;
  engine: ModelEngine;
  handle: ServeHandle;
  logger: MemoryLogger;
  client: OpenAI;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A fresh model, engine and server per test, so no test sees another's prefix cache. On the way out the engine must
 * be idle with every cache block back and nothing logged as an error: a test that leaks fails here.
 */
async function startRealServer(apiKey?: string): Promise<RealServer> {
  const tok = await demoTokenizer();
  const model = await loadModel(MODEL, {
    backend: "reference",
    quiet: true,
    maxModelLen: MAX_MODEL_LEN,
    maxSeqs: 4,
    maxTokens: 64,
  });
  const engine = await ModelEngine.create(model, { eosId: tok.eosId });
  const logger = new MemoryLogger();
  const server = createServer({ engine, tokenizer: tok, modelName: MODEL, apiKey, logger });
  const handle = server.serve({ hostname: "127.0.0.1", port: 0 });
  const client = new OpenAI({
    apiKey: apiKey ?? "unused",
    baseURL: `${handle.url}/v1`,
    maxRetries: 0,
    timeout: 30_000,
  });
  return {
    tok,
    engine,
    handle,
    logger,
    client,
    async [Symbol.asyncDispose]() {
      await handle.shutdown();
      try {
        const s = engine.stats();
        assertEquals([s.running, s.waiting, s.cacheBlocksUsed], [0, 0, 0], "engine idle, blocks freed");
        assertEquals(logger.errors, [], `server errors: ${logger.lines.filter((l) => l.startsWith("error"))}`);
      } finally {
        await engine.close();
        model.dispose();
      }
    },
  };
}

/** One choice as the client sees it, whichever way it came: the fields a streamed answer must reproduce. */
interface Answer {
  content: string | null;
  reasoning: string | null;
  /** Calls without their ids (fresh random ids per response). */
  toolCalls: { name: string; arguments: string }[];
  finish: string | null;
  logprobs: OpenAI.Chat.Completions.ChatCompletionTokenLogprob[] | null;
}

interface Result {
  answers: Answer[];
  usage: OpenAI.CompletionUsage | undefined;
}

/** Non-streamed: the message fields as they are. */
function fromCompletion(res: Completion): Result {
  const answers = res.choices.map((c): Answer => {
    const m = c.message as typeof c.message & { reasoning?: string | null; reasoning_content?: string | null };
    assertEquals(m.reasoning_content, m.reasoning, "both reasoning names carry the same text");
    return {
      content: m.content,
      reasoning: m.reasoning ?? null,
      toolCalls: (m.tool_calls ?? []).map((t) => {
        assert(t.type === "function");
        return { name: t.function.name, arguments: t.function.arguments };
      }),
      finish: c.finish_reason,
      logprobs: c.logprobs?.content ?? null,
    };
  });
  return { answers, usage: res.usage };
}

/** Streamed: the chunks folded per choice as a client folds them (content concatenated, calls by index). */
async function streamed(client: OpenAI, params: Params): Promise<Result> {
  const stream = await client.chat.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  });
  const answers: Answer[] = [];
  let usage: OpenAI.CompletionUsage | undefined;
  let lastHadUsage = false;
  for await (const chunk of stream) {
    assertEquals(chunk.object, "chat.completion.chunk");
    lastHadUsage = !!chunk.usage;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      const a = answers[c.index] ??= { content: null, reasoning: null, toolCalls: [], finish: null, logprobs: null };
      const d = c.delta as typeof c.delta & { reasoning?: string; reasoning_content?: string };
      if (typeof d.content === "string") a.content = (a.content ?? "") + d.content;
      if (d.reasoning !== undefined) {
        assertEquals(d.reasoning_content, d.reasoning);
        a.reasoning = (a.reasoning ?? "") + d.reasoning;
      }
      for (const t of d.tool_calls ?? []) {
        a.toolCalls[t.index] ??= { name: "", arguments: "" };
        a.toolCalls[t.index].name += t.function?.name ?? "";
        a.toolCalls[t.index].arguments += t.function?.arguments ?? "";
      }
      if (c.logprobs?.content) a.logprobs = [...(a.logprobs ?? []), ...c.logprobs.content];
      if (c.finish_reason) {
        assertEquals(a.finish, null, "one finish_reason per choice");
        a.finish = c.finish_reason;
      }
    }
  }
  assert(lastHadUsage, "with include_usage the last chunk carries the usage");
  // A streamed empty answer has content "" nowhere; the whole one says null: the same thing.
  for (const a of answers) if (a.content === "") a.content = null;
  if (params.logprobs) { for (const a of answers) a.logprobs ??= []; }
  return { answers, usage };
}

async function whole(client: OpenAI, params: Params): Promise<Result> {
  return fromCompletion(await client.chat.completions.create(params));
}

/** Sends the same request whole and streamed and checks they agree on everything; returns the whole one. */
async function bothWays(client: OpenAI, params: Params): Promise<Result> {
  const a = await whole(client, params);
  const b = await streamed(client, params);
  // The second of the two finds the first's prompt in the prefix cache: only cached_tokens may differ.
  const prompt = a.usage!.prompt_tokens;
  assert(b.usage!.prompt_tokens_details!.cached_tokens! < prompt, "at least one prompt token is computed");
  const uncached = (r: Result) => ({ ...r, usage: { ...r.usage!, prompt_tokens_details: undefined } });
  assertEquals(uncached(b), uncached(a), "streamed == non-streamed");
  return a;
}

function request(content: string, extra: Partial<Params> = {}): Params {
  return { model: MODEL, messages: [{ role: "user", content }], max_tokens: GEN, temperature: 0, ...extra };
}

/** Prompt length as the encoder builds it: what `usage.prompt_tokens` must say. */
function promptTokens(tok: Tokenizer, req: ChatRequest): number {
  return encodeChat(tok, req).ids.length;
}

function assertStatus(e: unknown, status: number, param?: string, code?: string): void {
  assert(e instanceof OpenAI.APIError, String(e));
  assertEquals(e.status, status, e.message);
  if (param !== undefined) assertEquals(e.param, param);
  if (code !== undefined) assertEquals(e.code, code);
}

Deno.test("real server: streamed and whole chat agree at temperature 0 (text, finish, usage, logprobs)", async () => {
  await using s = await startRealServer();
  const r = await bothWays(s.client, request("Write a haiku about the mistral wind."));
  const [a] = r.answers;
  assert(typeof a.content === "string" && a.content.length > 0, "some text");
  assertEquals(a.finish, "length");
  const prompt = promptTokens(s.tok, {
    messages: [{ role: "user", content: "Write a haiku about the mistral wind." }],
  });
  assertEquals(r.usage?.prompt_tokens, prompt);
  assertEquals(r.usage?.completion_tokens, GEN);
  assertEquals(r.usage?.total_tokens, prompt + GEN);
  // A repeat (its prompt now mostly from the prefix cache) gives the same greedy answer.
  assertEquals((await whole(s.client, request("Write a haiku about the mistral wind."))).answers, r.answers);
  // Logprobs travel with the chunks too.
  await bothWays(s.client, request("Bonjour", { logprobs: true, top_logprobs: 2 }));
});

Deno.test("real server: logprobs and top_logprobs have OpenAI's shape; values are log-probabilities", async () => {
  await using s = await startRealServer();
  for (const temperature of [0, 1]) {
    const res = await s.client.chat.completions.create(
      request("Hello", { logprobs: true, top_logprobs: 3, temperature, seed: 3 }),
    );
    const content = res.choices[0].logprobs?.content;
    assert(content, "logprobs.content");
    assertEquals(content.length, res.usage?.completion_tokens, "one entry per generated token");
    for (const e of content) {
      assert(Number.isFinite(e.logprob) && e.logprob <= 0, `logprob ${e.logprob}`);
      // A token that is part of a character shows as U+FFFD; otherwise its bytes are its text's.
      if (!e.token.includes("\uFFFD")) assertEquals(e.bytes, Array.from(new TextEncoder().encode(e.token)));
      assertEquals(e.top_logprobs.length, 3);
      for (let i = 0; i < 3; i++) {
        const t = e.top_logprobs[i];
        assert(Number.isFinite(t.logprob) && t.logprob <= 0, `top logprob ${t.logprob}`);
        if (i > 0) assert(t.logprob <= e.top_logprobs[i - 1].logprob, "most likely first");
      }
      if (temperature === 0) {
        // Greedy picks the most likely token.
        assertEquals(e.token, e.top_logprobs[0].token);
        assertEquals(e.logprob, e.top_logprobs[0].logprob);
      } else {
        assert(e.logprob <= e.top_logprobs[0].logprob);
      }
    }
    // The bytes of the entries are the bytes of the text (the answer has no control tokens).
    const bytes = Uint8Array.from(content.flatMap((e) => e.bytes ?? []));
    assertEquals(new TextDecoder().decode(bytes), res.choices[0].message.content);
  }
  // logprobs without top_logprobs: the chosen token only.
  const res = await s.client.chat.completions.create(request("Hello", { logprobs: true }));
  for (const e of res.choices[0].logprobs!.content!) assertEquals(e.top_logprobs, []);
});

Deno.test("real server: stop strings cut the answer where they first appear, streamed or not", async () => {
  await using s = await startRealServer();
  const free = (await whole(s.client, request("Tell me a story"))).answers[0].content!;
  assert(free.length >= 6, `need a longer answer to cut: ${JSON.stringify(free)}`);
  // Two characters from the middle of the free answer: they may straddle two tokens, which the matcher must handle.
  const at = Math.floor(free.length / 2);
  const stop = free.slice(at, at + 2);
  const r = await bothWays(s.client, request("Tell me a story", { stop: ["never appears §§", stop] }));
  assertEquals(r.answers[0].content, free.slice(0, free.indexOf(stop)) || null);
  assertEquals(r.answers[0].finish, "stop");
  assert(r.usage!.completion_tokens <= GEN);
});

Deno.test("real server: a seed fixes sampling at temperature 1; another seed samples something else", async () => {
  await using s = await startRealServer();
  const sample = async (seed: number) =>
    (await whole(s.client, request("Hello", { temperature: 1, seed }))).answers[0].content;
  const first = await sample(1234);
  assertEquals(await sample(1234), first);
  // Streamed with the same seed: the same text (the stream is the same run, only delivered in pieces).
  assertEquals((await streamed(s.client, request("Hello", { temperature: 1, seed: 1234 }))).answers[0].content, first);
  // With random weights the distribution is nearly flat over 131k ids: two seeds agreeing on 8 tokens is impossible
  // in practice (and the weights are seeded too, so this is the same check on every run).
  assertNotEquals(await sample(1235), first);
  assertNotEquals(await sample(99), first);
});

Deno.test("real server: n > 1 gives n different seeded choices, the same streamed; prompt counted once", async () => {
  await using s = await startRealServer();
  const params = request("Bonjour", { n: 3, temperature: 1, seed: 7 });
  const r = await bothWays(s.client, params);
  assertEquals(r.answers.length, 3);
  const texts = r.answers.map((a) => a.content);
  assertEquals(new Set(texts).size, 3, `choices differ: ${JSON.stringify(texts)}`);
  for (const a of r.answers) assertEquals(a.finish, "length");
  assertEquals(r.usage?.prompt_tokens, promptTokens(s.tok, { messages: [{ role: "user", content: "Bonjour" }] }));
  assertEquals(r.usage?.completion_tokens, 3 * GEN);
  // Greedy choices are all the same answer.
  const greedy = await whole(s.client, request("Bonjour", { n: 2 }));
  assertEquals(greedy.answers[0], greedy.answers[1]);
});

Deno.test("real server: tools, tool calls and tool results in the history are accepted and encoded", async () => {
  await using s = await startRealServer();
  const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [{
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city.",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  }];
  const messages: Message[] = [
    { role: "system", content: "You are a weather assistant." },
    { role: "user", content: "Is the mistral blowing in Marseille?" },
    {
      role: "assistant",
      content: null,
      tool_calls: [{
        id: "a1b2c3d4e",
        type: "function",
        function: { name: "get_weather", arguments: '{"city": "Marseille"}' },
      }],
    },
    { role: "tool", tool_call_id: "a1b2c3d4e", content: '{"wind_kmh": 70, "direction": "NW"}' },
  ];
  const r = await bothWays(s.client, { model: MODEL, messages, tools, max_tokens: GEN, temperature: 0 });
  assertEquals(r.usage?.prompt_tokens, promptTokens(s.tok, { messages, tools } as ChatRequest));
  assert(["length", "stop", "tool_calls"].includes(r.answers[0].finish!));
  // tool_choice "none" keeps the history's calls but does not offer the tools.
  const none = await whole(s.client, { model: MODEL, messages, tools, tool_choice: "none", max_tokens: GEN });
  assertEquals(none.usage?.prompt_tokens, promptTokens(s.tok, { messages } as ChatRequest));
  assert(none.usage!.prompt_tokens < r.usage!.prompt_tokens, "the tool list is gone from the prompt");
  // tool_choice "required" constrains the output: even the random weights make a well-formed call.
  const forced = await bothWays(s.client, {
    model: MODEL,
    messages,
    tools,
    tool_choice: "required",
    max_tokens: 32,
    temperature: 0,
  });
  assertEquals(forced.answers[0].finish, "tool_calls");
  const call = forced.answers[0].toolCalls[0];
  assertEquals(call.name, "get_weather");
  assertEquals(typeof JSON.parse(call.arguments).city, "string");
  // A tool_choice naming a function that is not offered is refused, not ignored.
  const e = await assertRejects(() =>
    s.client.chat.completions.create({
      model: MODEL,
      messages,
      tools,
      tool_choice: { type: "function", function: { name: "get_time" } },
      max_tokens: GEN,
    })
  );
  assertStatus(e, 400, "tool_choice");
});

Deno.test("real server: reasoning_effort high and reasoning in the history are accepted and encoded", async () => {
  await using s = await startRealServer();
  const question = [{ role: "user" as const, content: "What is 2+2?" }];
  const high = await bothWays(s.client, request("", { messages: question, reasoning_effort: "high" }));
  assertEquals(high.usage?.prompt_tokens, promptTokens(s.tok, { messages: question, reasoning_effort: "high" }));
  const none = await whole(s.client, request("", { messages: question, reasoning_effort: "none" }));
  assertEquals(none.usage?.prompt_tokens, promptTokens(s.tok, { messages: question, reasoning_effort: "none" }));
  // Both names clients use for an earlier turn's reasoning (vLLM's and DeepSeek's) reach the prompt.
  for (const field of ["reasoning", "reasoning_content"]) {
    const messages = [
      ...question,
      { role: "assistant", content: "4", [field]: "Two plus two makes four." },
      { role: "user", content: "And 3+3?" },
    ] as Message[];
    const r = await whole(s.client, { model: MODEL, messages, max_tokens: GEN, temperature: 0 });
    const expected = promptTokens(s.tok, { messages } as ChatRequest);
    assertEquals(r.usage?.prompt_tokens, expected, field);
    const without = promptTokens(s.tok, { messages: messages.map((m) => ({ ...m, [field]: undefined })) } as never);
    assert(expected > without, `${field} is encoded`);
  }
  // medium is not an effort Mistral Small 4 knows.
  const e = await assertRejects(() => s.client.chat.completions.create(request("Hi", { reasoning_effort: "medium" })));
  assertStatus(e, 400, "reasoning_effort");
});

Deno.test("real server: a repeated long prompt is served from the prefix cache (cached_tokens > 0)", async () => {
  await using s = await startRealServer();
  const long = "The mistral is a strong, cold, northwesterly wind that blows from southern France into the Gulf of " +
    "Lion. It brings clear skies and can last for days. ".repeat(3);
  const first = await whole(s.client, request(long));
  const prompt = first.usage!.prompt_tokens;
  assert(prompt > 64, `a prompt of several blocks: ${prompt}`);
  assertEquals(first.usage?.prompt_tokens_details?.cached_tokens, 0);
  const again = await whole(s.client, request(long));
  const cached = again.usage!.prompt_tokens_details!.cached_tokens!;
  assert(cached > 0 && cached < prompt, `cached ${cached} of ${prompt}`);
  assertEquals(cached % 16, 0, "whole blocks");
  // Reusing cache entries must not change the answer.
  assertEquals(again.answers, first.answers);
  const third = await streamed(s.client, request(long));
  assertEquals(third.usage?.prompt_tokens_details?.cached_tokens, cached);
  assertEquals(third.answers, first.answers);
});

Deno.test("real server: errors are OpenAI-shaped (404 model, 400 context and params); it keeps serving", async () => {
  await using s = await startRealServer();
  assertStatus(
    await assertRejects(() => s.client.chat.completions.create(request("Hi", { model: "gpt-4o" }))),
    404,
    "model",
  );
  const tooLong = request("wind ".repeat(MAX_MODEL_LEN + 10));
  assertStatus(
    await assertRejects(() => s.client.chat.completions.create(tooLong)),
    400,
    "messages",
    "context_length_exceeded",
  );
  assertStatus(
    await assertRejects(() => s.client.chat.completions.create(request("Hi", { max_tokens: MAX_MODEL_LEN }))),
    400,
    "max_tokens",
    "context_length_exceeded",
  );
  const bad: Partial<Params>[] = [{ temperature: 3 }, { top_p: 0 }, { n: 0 }, { top_logprobs: 3 }];
  for (const fields of bad) {
    const param = Object.keys(fields)[0];
    assertStatus(await assertRejects(() => s.client.chat.completions.create(request("Hi", fields))), 400, param);
  }
  assertStatus(await assertRejects(() => s.client.models.retrieve("gpt-4o")), 404);
  assertEquals((await s.client.models.list()).data.map((m) => m.id), [MODEL]);
  // Still serving.
  assertEquals((await whole(s.client, request("Hi"))).answers[0].finish, "length");
});

Deno.test("real server: an API key guards /v1 (401) but not /health or /metrics", async () => {
  await using s = await startRealServer("s3cret");
  const wrong = new OpenAI({ apiKey: "wrong", baseURL: `${s.handle.url}/v1`, maxRetries: 0 });
  assertStatus(await assertRejects(() => wrong.chat.completions.create(request("Hi"))), 401);
  assertStatus(await assertRejects(() => wrong.models.list()), 401);
  const noKey = await fetch(`${s.handle.url}/v1/models`);
  assertEquals(noKey.status, 401);
  await noKey.body?.cancel();
  assertEquals((await whole(s.client, request("Hi"))).answers[0].finish, "length");
  const health = await fetch(`${s.handle.url}/health`);
  assertEquals([health.status, await health.json()], [200, { status: "ok" }]);
  const metrics = await fetch(`${s.handle.url}/metrics`);
  assertEquals(metrics.status, 200);
  const text = await metrics.text();
  assert(/tramontane_requests_total\{[^}]*route="\/v1\/chat\/completions",status="401"\} 1/.test(text), text);
  assert(/tramontane_cache_blocks_used\{[^}]*\} 0\n/.test(text), "blocks freed after the request");
});

Deno.test("real server: tokens stream while the sequence runs, and a client that leaves frees it at once", async () => {
  await using s = await startRealServer();
  const messages = [{ role: "user" as const, content: "Tell me a long story about the wind." }];
  const maxTokens = 64;
  const controller = new AbortController();
  const res = await fetch(`${s.handle.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: maxTokens, temperature: 0, stream: true }),
    signal: controller.signal,
  });
  assertEquals(res.status, 200);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  // The role-only chunk opens every stream before any token; wait for the first one with text.
  while (!text.includes('"delta":{"content":"')) {
    const r = await reader.read();
    assert(!r.done, "the stream ended before any content");
    text += decoder.decode(r.value, { stream: true });
  }
  // Read right away: a server whose sockets only move when the engine idles delivers everything at the end.
  const running = s.engine.stats().running;
  controller.abort();
  await reader.cancel().catch(() => {});
  assertEquals(running, 1, "the first token reached the client while its sequence was still generating");
  const t0 = performance.now();
  while (s.engine.stats().running > 0) {
    assert(performance.now() - t0 < 5000, "the sequence is still running 5 s after its client left");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // Every model token is the prompt once (no cache yet) plus one per decode step.
  const generated = s.engine.stats().tokensProcessed - promptTokens(s.tok, { messages });
  assert(generated < maxTokens / 2, `${generated} of ${maxTokens} tokens were generated for a client that left`);
});
