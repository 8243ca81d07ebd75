import { assert, assertEquals } from "../tests/assert.ts";
import { MODEL, readSse, say, startServer } from "../tests/server_helpers.ts";

const USER = [{ role: "user", content: "Hello" }];

async function expectError(res: Response, status: number, param?: string | null, code?: string | null) {
  const body = await res.json();
  assertEquals(res.status, status, JSON.stringify(body));
  assertEquals(Object.keys(body), ["error"]);
  assertEquals(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert(typeof body.error.message === "string" && body.error.message.length > 0);
  if (param !== undefined) assertEquals(body.error.param, param);
  if (code !== undefined) assertEquals(body.error.code, code);
  return body.error;
}

Deno.test("server: /v1/models lists the served model; unknown model names are 404 model_not_found", async () => {
  await using h = await startServer();
  const list = await h.client.models.list();
  assertEquals(list.data.map((m) => m.id), [MODEL]);
  const one = await h.client.models.retrieve(MODEL);
  assertEquals(one.id, MODEL);
  await expectError(await fetch(`${h.url}/v1/models/other`), 404, "model", "model_not_found");
  await expectError(
    await h.post("/v1/chat/completions", { model: "gpt-4o", messages: USER }),
    404,
    "model",
    "model_not_found",
  );
  await expectError(await h.post("/v1/completions", { model: "gpt-4o", prompt: "x" }), 404, "model");
});

Deno.test("server: API key guards /v1 but not /health or /metrics", async () => {
  await using h = await startServer({ server: { apiKey: "s3cret" } });
  const noKey = await fetch(`${h.url}/v1/models`);
  await expectError(noKey, 401, null, "invalid_api_key");
  await expectError(await fetch(`${h.url}/v1/models`, { headers: { authorization: "Bearer wrong" } }), 401);
  await expectError(await h.post("/v1/chat/completions", { messages: USER }, { authorization: "Bearer s3cre" }), 401);
  const ok = await fetch(`${h.url}/v1/models`, { headers: { authorization: "Bearer s3cret" } });
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  assertEquals((await h.client.models.list()).data[0].id, MODEL);
  const health = await fetch(`${h.url}/health`);
  assertEquals(health.status, 200);
  await health.body?.cancel();
  const metrics = await fetch(`${h.url}/metrics`);
  assertEquals(metrics.status, 200);
  await metrics.body?.cancel();
});

Deno.test("server: unknown route 404, wrong method 405, bad JSON 400, big body 413", async () => {
  await using h = await startServer({ server: { maxBodyBytes: 1000 } });
  await expectError(await fetch(`${h.url}/v2/nothing`), 404, null, "not_found");
  const wrong = await fetch(`${h.url}/v1/chat/completions`);
  assertEquals(wrong.headers.get("allow"), "POST");
  await expectError(wrong, 405, null, "method_not_allowed");
  await expectError(await h.post("/v1/chat/completions", "{not json"), 400, null, "invalid_json");
  await expectError(await h.post("/v1/chat/completions", "[1, 2]"), 400, null, "invalid_json");
  const big = { messages: [{ role: "user", content: "x".repeat(2000) }] };
  await expectError(await h.post("/v1/chat/completions", big), 413, null, "request_too_large");
  // Without Content-Length (chunked upload) the limit still holds.
  const bytes = new TextEncoder().encode(JSON.stringify(big));
  const chunked = await fetch(`${h.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer dummy", "content-type": "application/json" },
    body: new ReadableStream({
      start(c) {
        c.enqueue(bytes.slice(0, 600));
        c.enqueue(bytes.slice(600));
        c.close();
      },
    }),
  });
  await expectError(chunked, 413);
});

Deno.test("server: /health is 503 until the engine is ready, and so are generation routes", async () => {
  await using h = await startServer({ engine: { ready: false } });
  await expectError(await fetch(`${h.url}/health`), 503, null, "engine_not_ready");
  await expectError(await h.post("/v1/chat/completions", { messages: USER }), 503, null, "engine_not_ready");
  h.engine.ready = true;
  const ok = await fetch(`${h.url}/health`);
  assertEquals(ok.status, 200);
  assertEquals(await ok.json(), { status: "ok" });
});

Deno.test("server: parameter ranges are checked with param set", async () => {
  await using h = await startServer();
  const cases: [Record<string, unknown>, string][] = [
    [{ temperature: 2.5 }, "temperature"],
    [{ temperature: -0.1 }, "temperature"],
    [{ temperature: "hot" }, "temperature"],
    [{ top_p: 0 }, "top_p"],
    [{ top_p: 1.5 }, "top_p"],
    [{ top_k: -2 }, "top_k"],
    [{ top_k: 1.5 }, "top_k"],
    [{ min_p: 1.5 }, "min_p"],
    [{ presence_penalty: 2.5 }, "presence_penalty"],
    [{ frequency_penalty: -3 }, "frequency_penalty"],
    [{ repetition_penalty: 0 }, "repetition_penalty"],
    [{ n: 0 }, "n"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ max_completion_tokens: -1 }, "max_completion_tokens"],
    [{ seed: 1.5 }, "seed"],
    [{ stop: ["a", "b", "c", "d", "e"] }, "stop"],
    [{ stop: [1] }, "stop"],
    [{ stop_token_ids: [-1] }, "stop_token_ids"],
    [{ logprobs: "yes" }, "logprobs"],
    [{ top_logprobs: 5 }, "top_logprobs"],
    [{ stream: "yes" }, "stream"],
    [{ stream_options: { include_usage: true } }, "stream_options"],
    [{ logit_bias: { "1000": 5 } }, "logit_bias"],
    [{ functions: [{ name: "f" }] }, "functions"],
    [{ reasoning_effort: "medium" }, "reasoning_effort"],
    [{ tools: "nope" }, "tools"],
    [{ tool_choice: "sometimes" }, "tool_choice"],
    [{ modalities: ["audio"] }, "modalities"],
  ];
  for (const [fields, param] of cases) {
    await expectError(await h.post("/v1/chat/completions", { messages: USER, ...fields }), 400, param);
  }
  // Values that mean "unused" pass.
  h.engine.script = say(h.tok, "ok");
  const ok = await h.post("/v1/chat/completions", { messages: USER, logit_bias: {}, top_k: -1, temperature: 0 });
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  assertEquals(h.engine.requests[0].sampling.topK, 0);
});

Deno.test("server: encoder errors are 400 with their param", async () => {
  await using h = await startServer();
  const err = await expectError(
    await h.post("/v1/chat/completions", {
      messages: [{ role: "user", content: "a" }, { role: "tool", content: "b", tool_call_id: "x" }],
    }),
    400,
    "messages[1].role",
  );
  assert(err.message.includes("tool"), err.message);
  await expectError(await h.post("/v1/chat/completions", {}), 400, "messages", "missing_required_parameter");
  await expectError(await h.post("/v1/chat/completions", { messages: [] }), 400, "messages");
});

Deno.test("server: context limits follow vLLM (400 with the counts; no max_tokens = rest of the context)", async () => {
  await using h = await startServer({ engine: { maxModelLen: 64 } });
  h.engine.script = say(h.tok, "ok");
  const long = [{ role: "user", content: "word ".repeat(100) }];
  const err = await expectError(await h.post("/v1/chat/completions", { messages: long }), 400, "messages");
  assert(/maximum context length is 64 tokens.*has \d+ input tokens/.test(err.message), err.message);
  const err2 = await expectError(
    await h.post("/v1/chat/completions", { messages: USER, max_tokens: 60 }),
    400,
    "max_tokens",
  );
  assert(err2.message.includes("60 > 64 - "), err2.message);
  const ok = await h.post("/v1/chat/completions", { messages: USER });
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  const req = h.engine.requests[0];
  assertEquals(req.maxTokens, 64 - req.promptIds.length);
});

Deno.test("server: an engine failure is a 500 in OpenAI's shape and the server keeps serving", async () => {
  await using h = await startServer();
  h.engine.script = () => {
    throw new Error("kaboom");
  };
  const err = await expectError(await h.post("/v1/chat/completions", { messages: USER }), 500, null, "internal_error");
  assertEquals(err.type, "server_error");
  assert(!err.message.includes("kaboom"));
  // Streaming: the status line is already 200, so the error comes as an event before [DONE].
  const events = await readSse(await h.post("/v1/chat/completions", { messages: USER, stream: true }));
  assertEquals(events.at(-1), "[DONE]");
  assertEquals((events.at(-2) as Record<string, any>).error.type, "server_error");
  assert(h.logger.errors.length >= 2);
  h.engine.script = say(h.tok, "fine");
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER as never, temperature: 0 });
  assertEquals(res.choices[0].message.content, "fine");
});

Deno.test("server: a client leaving mid-stream frees the engine slot at once", async () => {
  await using h = await startServer({ engine: { delayMs: 20 } });
  h.engine.script = say(h.tok, "word ".repeat(500));
  const res = await h.post("/v1/chat/completions", { messages: USER, stream: true, temperature: 0 });
  const reader = res.body!.getReader();
  await reader.read();
  await reader.read();
  assertEquals(h.engine.stats().running, 1);
  await reader.cancel();
  const t0 = performance.now();
  while (h.engine.stats().running > 0 && performance.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
  assertEquals(h.engine.stats().running, 0);
  assert(performance.now() - t0 < 500, "slot freed too slowly");
  // The log line is written when the stream ends, with the client-closed status.
  while (!h.logger.lines.some((l) => l.includes(" 499 ")) && performance.now() - t0 < 2000) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert(h.logger.lines.some((l) => l.startsWith("chatcmpl-") && l.includes(" 499 ")), h.logger.lines.join("\n"));
});

Deno.test("server: a client leaving a non-streamed request frees the engine slot too", async () => {
  await using h = await startServer({ engine: { delayMs: 20 } });
  h.engine.script = say(h.tok, "word ".repeat(500));
  const controller = new AbortController();
  const pending = fetch(`${h.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ messages: USER, temperature: 0 }),
    signal: controller.signal,
  }).catch((e) => e);
  const t0 = performance.now();
  while (h.engine.stats().running === 0 && performance.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  assert((await pending) instanceof Error);
  const t1 = performance.now();
  while (h.engine.stats().running > 0 && performance.now() - t1 < 2000) await new Promise((r) => setTimeout(r, 5));
  assertEquals(h.engine.stats().running, 0);
});

/** Checks the Prometheus text format line by line and returns the samples. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  assert(text.endsWith("\n"));
  for (const line of text.trimEnd().split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") {
        assert(["counter", "gauge", "histogram", "summary", "untyped"].includes(meta[3]), line);
        types.set(meta[2], meta[3]);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$/.exec(line);
    assert(m !== null, `not a sample line: ${line}`);
    const base = m[1].replace(/_(bucket|sum|count)$/, "");
    assert(types.has(m[1]) || types.get(base) === "histogram", `sample without TYPE: ${line}`);
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    assert(!Number.isNaN(value), line);
    samples.set(m[1] + (m[2] ?? ""), value);
  }
  return samples;
}

Deno.test("server: /metrics is Prometheus text with requests, tokens, engine gauges and latency histograms", async () => {
  await using h = await startServer({ engine: { delayMs: 1 } });
  h.engine.script = say(h.tok, "one two three");
  await h.client.chat.completions.create({ model: MODEL, messages: USER as never, temperature: 0 });
  await (await h.post("/v1/chat/completions", { messages: USER, temperature: 9 })).body?.cancel();
  const res = await fetch(`${h.url}/metrics`);
  assert(res.headers.get("content-type")!.startsWith("text/plain; version=0.0.4"));
  const samples = parsePrometheus(await res.text());
  const get = (name: string, labels = "") => samples.get(`tramontane_${name}{model_name="${MODEL}"${labels}}`);
  assertEquals(get("requests_total", ',route="/v1/chat/completions",status="200"'), 1);
  assertEquals(get("requests_total", ',route="/v1/chat/completions",status="400"'), 1);
  assertEquals(get("prompt_tokens_total"), h.engine.requests[0].promptIds.length);
  assertEquals(get("generation_tokens_total"), say(h.tok, "one two three").length + 1);
  assertEquals(get("num_requests_running"), 0);
  assertEquals(get("num_requests_waiting"), 0);
  assertEquals(get("cache_blocks_total"), 1024);
  assertEquals(get("cache_blocks_used"), 0);
  assert(get("batch_size") !== undefined);
  assertEquals(get("time_to_first_token_seconds_count"), 1);
  assertEquals(get("time_to_first_token_seconds_bucket", ',le="+Inf"'), 1);
  assertEquals(get("inter_token_latency_seconds_count"), say(h.tok, "one two three").length - 1);
  // Buckets are cumulative.
  let previous = 0;
  for (const [key, value] of samples) {
    if (!key.startsWith("tramontane_inter_token_latency_seconds_bucket")) continue;
    assert(value >= previous, key);
    previous = value;
  }
});

Deno.test("server: one log line per request with id, status, tokens and timings", async () => {
  await using h = await startServer();
  h.engine.script = say(h.tok, "one two");
  const res = await h.client.chat.completions.create({ model: MODEL, messages: USER as never, temperature: 0 });
  await (await fetch(`${h.url}/health`)).body?.cancel();
  const line = h.logger.lines.find((l) => l.startsWith(res.id))!;
  assert(line !== undefined, h.logger.lines.join("\n"));
  assert(
    new RegExp(`^${res.id} POST /v1/chat/completions 200 in=\\d+ out=\\d+ ttft=\\d+ms total=\\d+ms$`).test(line),
    line,
  );
  assertEquals(h.logger.lines.filter((l) => l.includes(res.id)).length, 1);
  assert(h.logger.lines.some((l) => /^req-[0-9a-f]+ GET \/health 200 ttft=- total=\d+ms$/.test(l)));
});
