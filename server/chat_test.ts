import { assert, assertEquals, assertNotEquals } from "../tests/assert.ts";
import { fixture, mulberry32 } from "../tests/fixtures.ts";
import { callTools, MODEL, type OpenAI, say, startServer, thinkThenSay } from "../tests/server_helpers.ts";

type Chunk = OpenAI.Chat.Completions.ChatCompletionChunk;

const USER = [{ role: "user" as const, content: "What is the best book?" }];

/** Folds streamed chunks per choice the way a client would. */
function fold(chunks: Chunk[]) {
  const out = new Map<
    number,
    {
      content: string;
      reasoning: string | null;
      calls: { id: string; name: string; args: string }[];
      finish: string | null;
    }
  >();
  for (const c of chunks) {
    for (const ch of c.choices) {
      const s = out.get(ch.index) ?? { content: "", reasoning: null, calls: [], finish: null };
      out.set(ch.index, s);
      const d = ch.delta as typeof ch.delta & { reasoning?: string; reasoning_content?: string };
      if (d.content) s.content += d.content;
      if (d.reasoning !== undefined) {
        assertEquals(d.reasoning_content, d.reasoning);
        s.reasoning = (s.reasoning ?? "") + d.reasoning;
      }
      for (const tc of d.tool_calls ?? []) {
        if (tc.id) s.calls[tc.index] = { id: tc.id, name: tc.function?.name ?? "", args: "" };
        s.calls[tc.index].args += tc.function?.arguments ?? "";
      }
      if (ch.finish_reason) s.finish = ch.finish_reason;
    }
  }
  return out;
}

Deno.test("chat: non-streamed answer through the openai client", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, "Dune, by Frank Herbert.");
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0 });
  assert(res.id.startsWith("chatcmpl-"));
  assertEquals(res.object, "chat.completion");
  assertEquals(res.model, MODEL);
  assertEquals(res.choices.length, 1);
  assertEquals(res.choices[0].message.role, "assistant");
  assertEquals(res.choices[0].message.content, "Dune, by Frank Herbert.");
  assertEquals(res.choices[0].finish_reason, "stop");
  const prompt = h.engine.requests[0].promptIds;
  assertEquals(res.usage?.prompt_tokens, prompt.length);
  // The ending </s> counts as generated, as vLLM counts it.
  assertEquals(res.usage?.completion_tokens, say(h.tok, "Dune, by Frank Herbert.").length + 1);
  assertEquals(res.usage?.total_tokens, res.usage!.prompt_tokens + res.usage!.completion_tokens);
  assertEquals(res.usage?.prompt_tokens_details?.cached_tokens, 0);
  assertEquals(
    h.tok.decode(prompt, { specials: "keep" }),
    '<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]What is the best book?[/INST]',
  );
});

Deno.test("chat: streamed concatenation equals the non-streamed answer at temperature 0", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, "Héllo wörld — ünïcode 🚀 and more text.\n\nSecond paragraph.");
  const whole = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0 });
  const stream = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, stream: true });
  const chunks: Chunk[] = [];
  for await (const c of stream) chunks.push(c);
  const folded = fold(chunks).get(0)!;
  assertEquals(folded.content, whole.choices[0].message.content);
  assertEquals(folded.finish, "stop");
  assertEquals(new Set(chunks.map((c) => c.id)).size, 1);
});

Deno.test("chat: max_tokens cuts with finish_reason length", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, "one two three four five six seven eight nine ten eleven twelve");
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, max_tokens: 3 });
  assertEquals(res.choices[0].finish_reason, "length");
  assertEquals(res.usage?.completion_tokens, 3);
  const res2 = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    temperature: 0,
    max_completion_tokens: 2,
  });
  assertEquals(res2.usage?.completion_tokens, 2);
  assertEquals(h.engine.requests[1].maxTokens, 2);
});

Deno.test("chat: reasoning comes back as reasoning and reasoning_content, streamed and not", async () => {
  await using h = await startServer();
  h.engine.script = thinkThenSay(h.tok, "The user wants a book. Dune is a classic.", "Dune.");
  const res = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    temperature: 0,
    reasoning_effort: "high" as never,
  });
  const msg = res.choices[0].message as typeof res.choices[0]["message"] & {
    reasoning?: string;
    reasoning_content?: string;
  };
  assertEquals(msg.content, "Dune.");
  assertEquals(msg.reasoning, "The user wants a book. Dune is a classic.");
  assertEquals(msg.reasoning_content, msg.reasoning);
  assert(h.tok.decode(h.engine.requests[0].promptIds, { specials: "keep" }).includes('"reasoning_effort": "high"'));

  const stream = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    temperature: 0,
    stream: true,
    reasoning_effort: "high" as never,
  });
  const chunks: Chunk[] = [];
  for await (const c of stream) chunks.push(c);
  const folded = fold(chunks).get(0)!;
  assertEquals(folded.reasoning, msg.reasoning);
  assertEquals(folded.content, "Dune.");

  // Without any [THINK] the fields are null.
  h.engine.script = say(h.tok, "Plain.");
  const plain = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0 });
  assertEquals((plain.choices[0].message as unknown as Record<string, unknown>).reasoning, null);
  assertEquals((plain.choices[0].message as unknown as Record<string, unknown>).reasoning_content, null);
});

Deno.test("chat: reasoning on input in either field reaches the prompt", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, "ok");
  for (const field of ["reasoning", "reasoning_content"]) {
    await h.client.chat.completions.create({
      model: MODEL,
      temperature: 0,
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello", [field]: "greet back" } as never,
        { role: "user", content: "Bye" },
      ],
    });
  }
  const [a, b] = h.engine.requests.map((r) => h.tok.decode(r.promptIds, { specials: "keep" }));
  assertEquals(a, b);
  assert(a.includes("[THINK]greet back[/THINK]Hello</s>"), a);
});

Deno.test("chat: tool calls round trip (parallel calls, streamed deltas, results in history)", async () => {
  await using h = await startServer();
  const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [{
    type: "function",
    function: {
      name: "get_weather",
      description: "Weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  }];
  h.engine.script = [
    ...say(h.tok, "Let me check."),
    ...callTools(h.tok, [["get_weather", '{"city": "Paris"}'], ["get_weather", '{"city": "Rome"}']]),
  ];
  const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
    { role: "user", content: "Weather in Paris and Rome?" },
  ];
  const res = await h.client.chat.completions.create({ model: MODEL, messages, tools, temperature: 0 });
  const choice = res.choices[0];
  assertEquals(choice.finish_reason, "tool_calls");
  assertEquals(choice.message.content, "Let me check.");
  const calls = choice.message.tool_calls!.map((c) =>
    c as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall
  );
  assertEquals(calls.map((c) => [c.type, c.function.name, c.function.arguments]), [
    ["function", "get_weather", '{"city": "Paris"}'],
    ["function", "get_weather", '{"city": "Rome"}'],
  ]);
  for (const c of calls) assert(/^[A-Za-z0-9]{9}$/.test(c.id), c.id);
  assert(h.tok.decode(h.engine.requests[0].promptIds, { specials: "keep" }).includes("[AVAILABLE_TOOLS]"));

  // Streamed: the first delta of each call has index, id, type and name; arguments follow in pieces.
  const stream = await h.client.chat.completions.create({
    model: MODEL,
    messages,
    tools,
    temperature: 0,
    stream: true,
  });
  const chunks: Chunk[] = [];
  for await (const c of stream) chunks.push(c);
  const folded = fold(chunks).get(0)!;
  assertEquals(folded.finish, "tool_calls");
  assertEquals(folded.content, "Let me check.");
  assertEquals(folded.calls.map((c) => [c.name, c.args]), [
    ["get_weather", '{"city": "Paris"}'],
    ["get_weather", '{"city": "Rome"}'],
  ]);
  const firsts = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []).filter((t) => t.id !== undefined);
  for (const t of firsts) assertEquals(t.type, "function");

  // The calls and their results go back into the history.
  h.engine.script = say(h.tok, "Sunny in both.");
  const next = await h.client.chat.completions.create({
    model: MODEL,
    tools,
    temperature: 0,
    messages: [
      ...messages,
      choice.message as OpenAI.Chat.Completions.ChatCompletionMessageParam,
      { role: "tool", tool_call_id: calls[1].id, content: "20C" },
      { role: "tool", tool_call_id: calls[0].id, content: "18C" },
    ],
  });
  assertEquals(next.choices[0].message.content, "Sunny in both.");
  assertEquals(next.choices[0].finish_reason, "stop");
  const prompt = h.tok.decode(h.engine.requests.at(-1)!.promptIds, { specials: "keep" });
  assert(
    prompt.endsWith(
      'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}' +
        "</s>[TOOL_RESULTS]18C[/TOOL_RESULTS][TOOL_RESULTS]20C[/TOOL_RESULTS]",
    ),
    prompt,
  );
});

Deno.test("chat: tool_choice none hides the tools; required and named functions constrain the output", async () => {
  await using h = await startServer();
  const tools = [{ type: "function" as const, function: { name: "f", parameters: { type: "object" } } }];
  h.engine.script = [...say(h.tok, "No tools."), ...callTools(h.tok, [["f", "{}"]])];
  const res = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    tools,
    tool_choice: "none",
    temperature: 0,
  });
  assertEquals(res.choices[0].message.content, "No tools.");
  assertEquals(res.choices[0].message.tool_calls, undefined);
  assertEquals(res.choices[0].finish_reason, "stop");
  assert(!h.tok.decode(h.engine.requests[0].promptIds, { specials: "keep" }).includes("[AVAILABLE_TOOLS]"));
  assertEquals(h.engine.requests[0].sampling.constraint, undefined);
  // Forced calls reach the engine as a constraint (the fake ignores it and says its script).
  for (const tool_choice of ["required", { type: "function", function: { name: "f" } }] as const) {
    const r = await h.post("/v1/chat/completions", { model: MODEL, messages: USER, tools, tool_choice });
    assertEquals(r.status, 200);
    await r.body?.cancel();
    assert(h.engine.requests.at(-1)!.sampling.constraint!.minTokens > 0);
  }
  const r = await h.post("/v1/chat/completions", {
    model: MODEL,
    messages: USER,
    tools,
    tool_choice: { type: "function", function: { name: "g" } },
  });
  assertEquals(r.status, 400);
  assertEquals((await r.json()).error.param, "tool_choice");
});

Deno.test("chat: stop strings cut the output, also across streamed tokens", async () => {
  await using h = await startServer();
  const text = "Alpha beta. END gamma delta";
  h.engine.script = say(h.tok, text);
  for (const stop of [" END", ["zzz", "a. E"], "beta"]) {
    const whole = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, stop });
    const first = (Array.isArray(stop) ? stop : [stop]).map((s) => text.indexOf(s)).filter((i) => i >= 0);
    const expected = text.slice(0, Math.min(...first));
    assertEquals(whole.choices[0].message.content, expected);
    assertEquals(whole.choices[0].finish_reason, "stop");
    assertEquals(
      (whole.choices[0] as unknown as { stop_reason: string }).stop_reason,
      text.slice(Math.min(...first)).startsWith(" END") ? " END" : Array.isArray(stop) ? "a. E" : stop,
    );
    const stream = await h.client.chat.completions.create({
      model: MODEL,
      messages: USER,
      temperature: 0,
      stop,
      stream: true,
    });
    const chunks: Chunk[] = [];
    for await (const c of stream) chunks.push(c);
    // No chunk ever showed text past the cut.
    assertEquals(fold(chunks).get(0)!.content, expected);
  }
  // A stop string that never completes holds nothing back at the end.
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, stop: "delta!" });
  assertEquals(res.choices[0].message.content, text);
});

Deno.test("chat: stop token ids end the output", async () => {
  await using h = await startServer();
  const ids = say(h.tok, "one two three");
  h.engine.script = ids;
  const res = await h.post("/v1/chat/completions", {
    model: MODEL,
    messages: USER,
    temperature: 0,
    stop_token_ids: [ids[1]],
  });
  const body = await res.json();
  assertEquals(body.choices[0].message.content, h.tok.decode([ids[0]]));
  assertEquals(body.choices[0].finish_reason, "stop");
  assertEquals(body.choices[0].stop_reason, ids[1]);
});

Deno.test("chat: seed gives the same sampled output; another seed differs", async () => {
  await using h = await startServer({ engine: { vocab: Array.from({ length: 200 }, (_, i) => 1100 + i) } });
  const ask = (seed: number) =>
    h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0.8, seed, max_tokens: 12 });
  const [a, b, c] = [await ask(42), await ask(42), await ask(7)];
  assertEquals(a.choices[0].message.content, b.choices[0].message.content);
  assertNotEquals(a.choices[0].message.content, c.choices[0].message.content);
  assertEquals(h.engine.requests[0].sampling.seed, 42);
  assertEquals(h.engine.requests[0].sampling.temperature, 0.8);
});

Deno.test("chat: n > 1 gives indexed choices, streamed interleaved", async () => {
  await using h = await startServer({ engine: { vocab: Array.from({ length: 200 }, (_, i) => 1100 + i), delayMs: 1 } });
  const res = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    n: 3,
    seed: 5,
    temperature: 1,
    max_tokens: 6,
  });
  assertEquals(res.choices.map((c) => c.index), [0, 1, 2]);
  assertEquals(res.usage?.completion_tokens, 18);
  assertEquals(res.usage?.prompt_tokens, h.engine.requests[0].promptIds.length);
  assertEquals(new Set(res.choices.map((c) => c.message.content)).size, 3);

  const stream = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    n: 3,
    seed: 5,
    temperature: 1,
    max_tokens: 6,
    stream: true,
  });
  const chunks: Chunk[] = [];
  for await (const c of stream) chunks.push(c);
  const folded = fold(chunks);
  for (let i = 0; i < 3; i++) {
    assertEquals(folded.get(i)!.content, res.choices[i].message.content);
    assertEquals(folded.get(i)!.finish, "length");
  }
  // Interleaved: choice indexes alternate rather than coming one choice after another.
  const order = chunks.map((c) => c.choices[0].index);
  const switches = order.filter((v, i) => i > 0 && v !== order[i - 1]).length;
  assert(switches > 3, `chunks not interleaved: ${order}`);
});

Deno.test("chat: logprobs and top_logprobs in OpenAI's shape", async () => {
  await using h = await startServer({ engine: { vocab: Array.from({ length: 50 }, (_, i) => 1100 + i) } });
  h.engine.script = say(h.tok, "Dune is great");
  const res = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = res.choices[0].logprobs!.content!;
  assertEquals(content.length, say(h.tok, "Dune is great").length);
  assertEquals(content.map((e) => e.token).join(""), res.choices[0].message.content);
  for (const e of content) {
    assert(e.logprob <= 0);
    assertEquals(new TextDecoder().decode(new Uint8Array(e.bytes!)), e.token);
    assertEquals(e.top_logprobs.length, 3);
    assertEquals(e.top_logprobs[0].token, e.token);
    for (let i = 1; i < 3; i++) assert(e.top_logprobs[i].logprob < e.top_logprobs[i - 1].logprob);
  }
  // logprobs without top_logprobs: the chosen token only.
  const bare = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, logprobs: true });
  assertEquals(bare.choices[0].logprobs!.content![0].top_logprobs, []);
  const none = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0 });
  assertEquals(none.choices[0].logprobs, null);
  const bad = await h.post("/v1/chat/completions", { messages: USER, logprobs: true, top_logprobs: 21 });
  assertEquals(bad.status, 400);
  assertEquals((await bad.json()).error.param, "top_logprobs");
});

Deno.test("chat: include_usage ends the stream with a usage chunk and empty choices", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, "Short answer.");
  const stream = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks: Chunk[] = [];
  for await (const c of stream) chunks.push(c);
  const last = chunks.at(-1)!;
  assertEquals(last.choices, []);
  assertEquals(last.usage?.prompt_tokens, h.engine.requests[0].promptIds.length);
  assertEquals(last.usage?.completion_tokens, say(h.tok, "Short answer.").length + 1);
  for (const c of chunks.slice(0, -1)) assertEquals(c.usage, null);
});

const VISION = { patchSize: 14, mergeSize: 2, maxImageSize: 1540 };

async function dataUrl(name: string, mime: string): Promise<string> {
  const bytes = await Deno.readFile(fixture(`images/${name}`));
  return `data:${mime};base64,${btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""))}`;
}

Deno.test("chat: images are preprocessed and expanded to their token layout; usage counts their tokens", async () => {
  await using h = await startServer({ engine: { vision: VISION } });
  h.engine.script = say(h.tok, "A cat and a camera.");
  const [cat, camera] = [await dataUrl("chelsea.png", "image/png"), await dataUrl("camera.png", "image/png")];
  const res = await h.client.chat.completions.create({
    model: MODEL,
    temperature: 0,
    messages: [{
      role: "user",
      content: [
        { type: "text", text: "What are these?" },
        { type: "image_url", image_url: { url: cat } },
        { type: "image_url", image_url: { url: camera } },
      ],
    }],
  });
  assertEquals(res.choices[0].message.content, "A cat and a camera.");
  const req = h.engine.requests[0];
  const [IMG, BREAK, END] = ["[IMG]", "[IMG_BREAK]", "[IMG_END]"].map((n) => h.tok.specialId(n));
  // Grids from image_preprocessing_reference.json: 451×300 → 17×11 tokens, 512×512 → 19×19.
  assertEquals(req.images!.map((im) => im.grid), [{ rows: 11, cols: 17 }, { rows: 19, cols: 19 }]);
  assertEquals(req.promptIds.filter((id) => id === IMG).length, 17 * 11 + 19 * 19);
  assertEquals(req.promptIds.filter((id) => id === BREAK).length, 10 + 18);
  assertEquals(req.promptIds.filter((id) => id === END).length, 2);
  for (const im of req.images!) {
    assertEquals(im.positions.length, im.grid.rows * im.grid.cols);
    assert(im.positions.every((p) => req.promptIds[p] === IMG));
    assertEquals(im.pixels.length, 3 * (im.grid.rows * 28) * (im.grid.cols * 28));
    assertEquals(im.key.length, 8);
  }
  assertNotEquals(req.images![0].key, req.images![1].key);
  assertEquals(res.usage?.prompt_tokens, req.promptIds.length);
});

Deno.test("chat: image errors are 400s that say what is wrong, and the server keeps serving", async () => {
  await using text = await startServer();
  const ask = (url: string) => ({
    model: MODEL,
    messages: [{ role: "user", content: [{ type: "text", text: "?" }, { type: "image_url", image_url: { url } }] }],
  });
  const png = await dataUrl("foo3x5x4indexed.png", "image/png");
  const noVision = await text.post("/v1/chat/completions", ask(png));
  assertEquals(noVision.status, 400);
  const e1 = (await noVision.json()).error;
  assertEquals([e1.param, e1.code], ["messages[0].content[1].image_url", "unsupported_content"]);
  assert(e1.message.includes("does not accept images"), e1.message);

  await using h = await startServer({ engine: { vision: VISION }, server: { images: { maxImages: 1 } } });
  h.engine.script = say(h.tok, "Fine.");
  const bad = await h.post("/v1/chat/completions", ask("data:image/png;base64,AAAA"));
  assertEquals(bad.status, 400);
  assertEquals((await bad.json()).error.param, "messages[0].content[1].image_url");
  const two = ask(png);
  (two.messages[0].content as unknown[]).push({ type: "image_url", image_url: { url: png } });
  const tooMany = await h.post("/v1/chat/completions", two);
  assertEquals(tooMany.status, 400);
  // The param is the first image over the limit.
  const e2 = (await tooMany.json()).error;
  assertEquals([e2.code, e2.param], ["too_many_images", "messages[0].content[2].image_url"]);
  const ok = await h.post("/v1/chat/completions", ask(png));
  assertEquals(ok.status, 200);
  assertEquals((await ok.json()).choices[0].message.content, "Fine.");
});

Deno.test("chat: a bad image's 400 names its place in the request, in user and tool messages", async () => {
  // A local image host that answers 404, reachable because private addresses are allowed here.
  await using host = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("", { status: 404 }),
  );
  const missing = `http://127.0.0.1:${host.addr.port}/cat.png`;
  const png = await dataUrl("foo3x5x4indexed.png", "image/png");
  const big = await dataUrl("chelsea.png", "image/png");
  await using h = await startServer({
    engine: { vision: VISION },
    server: { images: { maxBytes: 50_000, allowPrivate: true } },
  });
  await using strict = await startServer({ engine: { vision: VISION } });
  h.engine.script = strict.engine.script = say(h.tok, "Fine.");
  const cases: [label: string, url: string, code: string, says: string, server?: typeof h][] = [
    ["not base64", "data:image/png,notbase64", "invalid_image_url", "base64"],
    ["undecodable", `data:image/png;base64,${btoa("these bytes are no image")}`, "invalid_image", "image"],
    ["oversized", big, "invalid_image_url", "larger than 50000 bytes"],
    ["http 404", missing, "invalid_image_url", "HTTP 404"],
    ["private address", missing, "invalid_image_url", "private", strict],
  ];
  const image = (url: string) => ({ type: "image_url", image_url: { url } });
  for (const [label, url, code, says, server = h] of cases) {
    const inUser = [{ role: "user", content: [{ type: "text", text: "?" }, image(png), image(url)] }];
    const inTool = [
      { role: "user", content: "Use the tool" },
      {
        role: "assistant",
        tool_calls: [{ id: "abcdefghi", type: "function", function: { name: "f", arguments: "{}" } }],
      },
      { role: "tool", tool_call_id: "abcdefghi", content: [{ type: "text", text: "result" }, image(url)] },
    ];
    const placements = [
      [inUser, "messages[0].content[2].image_url"],
      [inTool, "messages[2].content[1].image_url"],
    ] as const;
    for (const [messages, param] of placements) {
      const res = await server.post("/v1/chat/completions", { messages });
      const body = await res.json();
      const { message } = body.error;
      assertEquals([res.status, body.error.param, body.error.code], [400, param, code], `${label}: ${message}`);
      assert(message.includes(says), `${label}: ${message}`);
    }
  }
  // mistral-common's spelling of an image part is named as sent.
  const res = await h.post("/v1/chat/completions", {
    messages: [{ role: "user", content: [{ type: "image", image: "data:image/png;base64,AAAA" }] }],
  });
  assertEquals((await res.json()).error.param, "messages[0].content[0].image");
});

Deno.test("chat: with --chat-template a bad image's 400 names its place too", async () => {
  const template = await Deno.readTextFile(
    new URL("../../shared/fixtures/chat/templates/v15_image_think.jinja", import.meta.url),
  );
  await using h = await startServer({ engine: { vision: VISION }, server: { chatTemplate: template } });
  const res = await h.post("/v1/chat/completions", {
    messages: [{
      role: "user",
      content: [{ type: "text", text: "?" }, { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }],
    }],
  });
  const body = await res.json();
  assertEquals([res.status, body.error.param], [400, "messages[0].content[1].image_url"], body.error.message);
});

Deno.test("chat: --chat-template renders the prompt with the configured template", async () => {
  const template = await Deno.readTextFile(
    new URL("../../shared/fixtures/chat/templates/v15_image_think.jinja", import.meta.url),
  );
  await using h = await startServer({ server: { chatTemplate: template } });
  await using ref = await startServer();
  h.engine.script = ref.engine.script = say(h.tok, "Same.");
  const messages = [{ role: "system" as const, content: "Be brief." }, ...USER];
  const a = await h.client.chat.completions.create({ model: MODEL, messages, temperature: 0 });
  await ref.client.chat.completions.create({ model: MODEL, messages, temperature: 0 });
  assertEquals(a.choices[0].message.content, "Same.");
  assertEquals(h.engine.requests[0].promptIds, ref.engine.requests[0].promptIds);
});

Deno.test("chat: streamed and whole agree on random outputs with reasoning, calls and stop strings", async () => {
  await using h = await startServer();
  const random = mulberry32(11);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
  const words = ["Hello", " world", "\n", '{"a": 1}', " ", "get_x", "é", "🚀", "END", " lo"];
  const controls = ["[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]"].map((n) => h.tok.specialId(n));
  const stopPool = ["lo w", "\n", "zz", "END", '": '];
  for (let trial = 0; trial < 40; trial++) {
    const script: number[] = [];
    for (let i = 0; i < 12; i++) {
      if (random() < 0.25) script.push(pick(controls));
      else script.push(...h.tok.encode(pick(words)));
    }
    h.engine.script = script;
    const stop = random() < 0.5 ? [pick(stopPool), pick(stopPool)] : undefined;
    const request = { model: MODEL, messages: USER, temperature: 0, stop, max_tokens: 30 };
    const whole = await h.client.chat.completions.create(request);
    const stream = await h.client.chat.completions.create({ ...request, stream: true });
    const chunks: Chunk[] = [];
    for await (const c of stream) chunks.push(c);
    const folded = fold(chunks).get(0)!;
    const msg = whole.choices[0].message as typeof whole.choices[0]["message"] & { reasoning: string | null };
    const label = `${h.tok.decode(script, { specials: "keep" })} stop=${JSON.stringify(stop)}`;
    assertEquals(folded.content || null, msg.content, label);
    assertEquals(folded.reasoning, msg.reasoning, label);
    const calls = (msg.tool_calls ?? []) as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall[];
    assertEquals(
      folded.calls.map((c) => [c.name, c.args]),
      calls.map((c) => [c.function.name, c.function.arguments]),
      label,
    );
    assertEquals(folded.finish, whole.choices[0].finish_reason, label);
  }
});

Deno.test("chat: without max_tokens the answer stops at the server's default, with finish length and a log line", async () => {
  await using h = await startServer({ server: { maxTokensDefault: 5 } });
  h.engine.script = say(h.tok, "one two three four five six seven eight nine ten eleven twelve");
  const cut = (line: string) => line.includes("stopped at 5 tokens") && line.includes("--max-tokens-default");
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, n: 2 });
  assertEquals(h.engine.requests.map((r) => r.maxTokens), [5, 5]);
  assertEquals(res.choices.map((c) => c.finish_reason), ["length", "length"]);
  assertEquals(res.usage?.completion_tokens, 10);
  // One line per request, naming it, however many of its choices were cut.
  assertEquals(h.logger.lines.filter(cut).length, 1);
  assert(h.logger.lines.find(cut)!.startsWith(res.id), h.logger.lines.join("\n"));
  // Streamed alike.
  const stream = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, stream: true });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assertEquals(fold(chunks).get(0)!.finish, "length");
  assertEquals(h.logger.lines.filter(cut).length, 2);
  // A limit the client asked for, or an answer that ends first, is not the default's doing: no line.
  const asked = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0, max_tokens: 5 });
  assertEquals(asked.choices[0].finish_reason, "length");
  h.engine.script = say(h.tok, "Dune.");
  const short = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0 });
  assertEquals(short.choices[0].finish_reason, "stop");
  assertEquals(h.logger.lines.filter(cut).length, 2);
  // max_completion_tokens overrides the default too.
  h.engine.script = say(h.tok, "one two three four five six seven eight nine ten eleven twelve");
  const more = await h.client.chat.completions.create({
    model: MODEL,
    messages: USER,
    temperature: 0,
    max_completion_tokens: 9,
  });
  assertEquals(more.usage?.completion_tokens, 9);
  assertEquals(h.logger.lines.filter(cut).length, 2);
});

Deno.test("chat: with no server default, a request without max_tokens may run to the end of the context", async () => {
  await using h = await startServer({ engine: { maxModelLen: 64 } });
  h.engine.script = Array(100).fill(say(h.tok, " word")[0]);
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER, temperature: 0 });
  const prompt = h.engine.requests[0].promptIds.length;
  assertEquals(h.engine.requests[0].maxTokens, 64 - prompt);
  assertEquals([res.choices[0].finish_reason, res.usage?.completion_tokens], ["length", 64 - prompt]);
  assertEquals(h.logger.lines.filter((l) => l.includes("--max-tokens-default")), []);
});
