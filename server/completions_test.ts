import { assert, assertEquals } from "../tests/assert.ts";
import { MODEL, readSse, say, startServer } from "../tests/server_helpers.ts";

Deno.test("completions: text prompt through the openai client, default max_tokens 16", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, " upon a time there was a dragon.");
  const res = await h.client.completions.create({ model: MODEL, prompt: "Once", temperature: 0 });
  assert(res.id.startsWith("cmpl-"));
  assertEquals(res.object, "text_completion");
  assertEquals(res.choices[0].text, " upon a time there was a dragon.");
  assertEquals(res.choices[0].finish_reason, "stop");
  const req = h.engine.requests[0];
  assertEquals(req.promptIds, [h.tok.bosId, ...h.tok.encode("Once")]);
  assertEquals(req.maxTokens, 16);
  assertEquals(res.usage?.prompt_tokens, req.promptIds.length);
});

Deno.test("completions: control tokens are not parsed, only skipped", async () => {
  await using h = await startServer();
  h.engine.script = [
    h.tok.specialId("[THINK]"),
    ...say(h.tok, "hmm"),
    h.tok.specialId("[/THINK]"),
    ...say(h.tok, "ok"),
  ];
  const res = await h.client.completions.create({ model: MODEL, prompt: "x", temperature: 0 });
  assertEquals(res.choices[0].text, "hmmok");
});

Deno.test("completions: streaming equals whole; stop strings; several prompts with n", async () => {
  await using h = await startServer();
  const text = " alpha beta gamma delta";
  h.engine.script = say(h.tok, text);
  const whole = await h.client.completions.create({ model: MODEL, prompt: "x", temperature: 0, stop: [" gam"] });
  assertEquals(whole.choices[0].text, " alpha beta");
  assertEquals(whole.choices[0].finish_reason, "stop");
  const stream = await h.client.completions.create({
    model: MODEL,
    prompt: "x",
    temperature: 0,
    stop: [" gam"],
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = "";
  let usage = null;
  for await (const c of stream) {
    for (const ch of c.choices) streamed += ch.text;
    if (c.usage) usage = c.usage;
  }
  assertEquals(streamed, " alpha beta");
  assertEquals(usage!.prompt_tokens, 2);

  const multi = await h.post("/v1/completions", { prompt: ["a", "b c"], n: 2, temperature: 0, max_tokens: 3 });
  const body = await multi.json();
  assertEquals(body.choices.map((c: { index: number }) => c.index), [0, 1, 2, 3]);
  // Each prompt counts once in usage, whatever n.
  assertEquals(body.usage.prompt_tokens, 2 + 3);
  assertEquals(body.usage.completion_tokens, 4 * 3);
  assertEquals(h.engine.requests.slice(-4).map((r) => r.promptIds.length), [2, 2, 3, 3]);
});

Deno.test("completions: token-id prompts, echo, legacy logprobs", async () => {
  await using h = await startServer({ engine: { vocab: Array.from({ length: 30 }, (_, i) => 1100 + i) } });
  h.engine.script = say(h.tok, " two three");
  const ids = [h.tok.bosId, ...h.tok.encode("one")];
  const echo = await (await h.post("/v1/completions", { prompt: ids, echo: true, temperature: 0 })).json();
  assertEquals(echo.choices[0].text, "one two three");
  assertEquals(h.engine.requests[0].promptIds, ids);
  const lp = await (await h.post("/v1/completions", { prompt: "one", logprobs: 2, temperature: 0 })).json();
  const l = lp.choices[0].logprobs;
  assertEquals(l.tokens.join(""), " two three");
  assertEquals(l.token_logprobs.length, l.tokens.length);
  assertEquals(l.text_offset[0], 0);
  assertEquals(l.text_offset[1], l.tokens[0].length);
  assertEquals(Object.keys(l.top_logprobs[0]).length, 2);
  const events = await readSse(
    await h.post("/v1/completions", { prompt: "one", logprobs: 0, temperature: 0, stream: true }),
  );
  const chunks = events.slice(0, -1) as Record<string, any>[];
  const tokens = chunks.flatMap((c) => c.choices[0].logprobs.tokens);
  assertEquals(tokens.join(""), " two three");
  assertEquals(chunks[0].choices[0].logprobs.top_logprobs, null);
  const bad = await h.post("/v1/completions", { prompt: "one", logprobs: 21 });
  assertEquals(bad.status, 400);
  assertEquals((await bad.json()).error.param, "logprobs");
  for (const prompt of [null, [], [[]], [1, "a"], [999999999]]) {
    const r = await h.post("/v1/completions", { prompt });
    assertEquals(r.status, 400);
    assertEquals((await r.json()).error.param, "prompt");
  }
  const suffix = await h.post("/v1/completions", { prompt: "a", suffix: "b" });
  assertEquals(suffix.status, 400);
  await suffix.body?.cancel();
});

Deno.test("completions: OpenAI's 16 stays the default unless the server's is smaller", async () => {
  {
    await using h = await startServer({ server: { maxTokensDefault: 256 } });
    h.engine.script = Array(40).fill(say(h.tok, " word")[0]);
    const res = await h.client.completions.create({ model: MODEL, prompt: "Say", temperature: 0 });
    assertEquals([res.choices[0].finish_reason, res.usage?.completion_tokens], ["length", 16]);
    assertEquals(h.logger.lines.filter((l) => l.includes("--max-tokens-default")), []);
  }
  await using h = await startServer({ server: { maxTokensDefault: 4 } });
  h.engine.script = Array(40).fill(say(h.tok, " word")[0]);
  const res = await h.client.completions.create({ model: MODEL, prompt: "Say", temperature: 0 });
  assertEquals([res.choices[0].finish_reason, res.usage?.completion_tokens], ["length", 4]);
  assertEquals(h.logger.lines.filter((l) => l.includes("stopped at 4 tokens")).length, 1);
});
