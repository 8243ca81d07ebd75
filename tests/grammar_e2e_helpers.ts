/**
 * End-to-end driver for constrained decoding: the real server over the random-weight `tiny` model (reference
 * backend), requests with JSON schemas and forced tool calls through the official `openai` client, streamed or
 * not, and the check that every answer parses and validates. The random weights write noise, so any valid output
 * is the grammar's doing. Used by `e2e_test.ts` (a few dozen requests) and `bench/grammar.ts` (hundreds).
 *
 * @module
 */

import OpenAI from "openai";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import type { Tokenizer } from "../chat/tokenizer.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { createServer, type ServeHandle } from "../server/server.ts";
import { MemoryLogger } from "./server_helpers.ts";
import { buildConstraint } from "../grammar/constraint.ts";
import { chatConstraintSpec } from "../grammar/openai.ts";
import { layoutErrors, type Schema, SCHEMAS, type TestTool, TOOL_SETS, validate } from "./grammar_helpers.ts";

type Body = Record<string, unknown>;

/** One kind of request: its extra body fields and what a valid answer is. */
export interface E2eCase {
  /** A short name for reports. */
  name: string;
  /** Fields added to the request (`response_format`, `tools`, `tool_choice`, …). */
  body: Body;
  /** The schema of a JSON answer, when one is expected. */
  schema?: Schema;
  /** The tools whose calls may come back. */
  tools?: TestTool[];
}

function toolsField(tools: TestTool[]): Body[] {
  return tools.map((t) => ({ type: "function", function: { name: t.name, parameters: t.parameters ?? {} } }));
}

/** Every test schema as `json_schema`, `json_object`, and tool calls: required, named, one at a time, or mixed. */
export function e2eCases(): E2eCase[] {
  const cases: E2eCase[] = Object.entries(SCHEMAS).map(([name, schema]) => ({
    name,
    schema,
    body: { response_format: { type: "json_schema", json_schema: { name, schema, strict: true } } },
  }));
  cases.push({ name: "json_object", schema: { type: "object" }, body: { response_format: { type: "json_object" } } });
  const { weather, math, search } = TOOL_SETS;
  cases.push(
    { name: "weather required", tools: weather, body: { tools: toolsField(weather), tool_choice: "required" } },
    {
      name: "weather named",
      tools: weather.slice(1),
      body: { tools: toolsField(weather), tool_choice: { type: "function", function: { name: weather[1].name } } },
    },
    {
      name: "math one call",
      tools: math,
      body: { tools: toolsField(math), tool_choice: "required", parallel_tool_calls: false },
    },
    {
      name: "search reasoning",
      tools: search,
      body: { tools: toolsField(search), tool_choice: "required", reasoning_effort: "high" },
    },
    {
      name: "json or call",
      schema: SCHEMAS.person,
      tools: math,
      body: {
        tools: toolsField(math),
        response_format: { type: "json_schema", json_schema: { name: "p", schema: SCHEMAS.person } },
      },
    },
  );
  return cases;
}

/** A running server over a random-weight preset. */
export interface E2eServer {
  /** The preset, also the `model` requests name. */
  model: string;
  tok: Tokenizer;
  /** The loaded model under the engine. */
  loaded: Model;
  engine: ModelEngine;
  client: OpenAI;
  logger: MemoryLogger;
  handle: ServeHandle;
  close(): Promise<void>;
}

/**
 * Starts the real server over a random-weight preset (default `tiny` on the reference backend) with the demo
 * tokenizer.
 */
export async function startE2eServer(
  opts: { model?: string; backend?: string; maxSeqs?: number } = {},
): Promise<E2eServer> {
  const name = opts.model ?? "tiny";
  const tok = await loadDemoTokenizer();
  const model = await loadModel(name, {
    backend: opts.backend ?? "reference",
    quiet: true,
    maxModelLen: 1024,
    maxSeqs: opts.maxSeqs ?? 4,
    maxTokens: 256,
  });
  const engine = await ModelEngine.create(model, { eosId: tok.eosId });
  const logger = new MemoryLogger();
  const handle = createServer({ engine, tokenizer: tok, modelName: name, logger })
    .serve({ hostname: "127.0.0.1", port: 0 });
  const client = new OpenAI({ apiKey: "unused", baseURL: `${handle.url}/v1`, maxRetries: 0, timeout: 120_000 });
  return {
    model: name,
    tok,
    loaded: model,
    engine,
    client,
    logger,
    handle,
    async close() {
      await handle.shutdown();
      await engine.close();
      model.dispose();
    },
  };
}

/** What came back: the answer's content, its calls, why it ended and how many tokens it took. */
interface Answer {
  content: string | null;
  calls: { name: string; arguments: string }[];
  finish: string | null;
  tokens: number | undefined;
}

async function ask(client: OpenAI, body: Body, stream: boolean): Promise<Answer> {
  // deno-lint-ignore no-explicit-any
  const params = body as any;
  if (!stream) {
    const r = await client.chat.completions.create({ ...params, stream: false });
    const m = r.choices[0].message;
    const calls = (m.tool_calls ?? []).map((c) => {
      const fn = (c as { function: { name: string; arguments: string } }).function;
      return { name: fn.name, arguments: fn.arguments };
    });
    return { content: m.content, calls, finish: r.choices[0].finish_reason, tokens: r.usage?.completion_tokens };
  }
  const streamed: OpenAI.Chat.Completions.ChatCompletionCreateParamsStreaming = {
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  };
  const chunks = await client.chat.completions.create(streamed);
  let content: string | null = null;
  const calls: { name: string; arguments: string }[] = [];
  let finish: string | null = null, tokens: number | undefined;
  for await (const chunk of chunks) {
    if (chunk.usage) tokens = chunk.usage.completion_tokens;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.finish_reason) finish = choice.finish_reason;
    if (choice.delta.content) content = (content ?? "") + choice.delta.content;
    for (const tc of choice.delta.tool_calls ?? []) {
      calls[tc.index] ??= { name: "", arguments: "" };
      if (tc.function?.name) calls[tc.index].name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].arguments += tc.function.arguments;
    }
  }
  return { content, calls, finish, tokens };
}

/** The problems with an answer (empty: valid, and compact: no whitespace run or newline between JSON tokens). */
function check(c: E2eCase, a: Answer, maxTokens: number): string[] {
  const errs: string[] = [];
  if (a.tokens !== undefined && a.tokens > maxTokens) errs.push(`${a.tokens} tokens > max_tokens ${maxTokens}`);
  if (a.calls.length > 0) {
    if (!c.tools) return [...errs, `unexpected tool calls ${JSON.stringify(a.calls)}`];
    if (a.finish !== "tool_calls") errs.push(`finish_reason ${a.finish}`);
    if (c.body.parallel_tool_calls === false && a.calls.length !== 1) errs.push(`${a.calls.length} calls, not 1`);
    for (const call of a.calls) {
      const tool = c.tools.find((t) => t.name === call.name);
      if (!tool) errs.push(`unknown tool ${call.name}`);
      try {
        const params = tool?.parameters && Object.keys(tool.parameters).length > 0
          ? tool.parameters
          : { type: "object" };
        errs.push(...validate(JSON.parse(call.arguments), params), ...layoutErrors(call.arguments));
      } catch (e) {
        errs.push(`arguments are not JSON: ${JSON.stringify(call.arguments)} (${e})`);
      }
    }
    return errs;
  }
  if (!c.schema) return [...errs, `no tool call: content ${JSON.stringify(a.content)}`];
  if (a.finish !== "stop") errs.push(`finish_reason ${a.finish}`);
  try {
    errs.push(...validate(JSON.parse(a.content ?? ""), c.schema), ...layoutErrors(a.content ?? ""));
  } catch (e) {
    errs.push(`content is not JSON: ${JSON.stringify(a.content)} (${e})`);
  }
  return errs;
}

/** One request's outcome. */
export interface E2eResult {
  case: string;
  stream: boolean;
  maxTokens: number;
  errors: string[];
  ms: number;
}

/**
 * Request `i`: case `i mod n`, streamed on every other pass (so each case is tried both ways), seeded, at
 * temperature 0 or 1, with a budget a little above the schema's minimum.
 */
export async function runRequest(s: E2eServer, cases: E2eCase[], i: number): Promise<E2eResult> {
  const c = cases[i % cases.length];
  const stream = (i + Math.floor(i / cases.length)) % 2 === 1;
  const spec = chatConstraintSpec(c.body, c.body.reasoning_effort === "high");
  const min = buildConstraint(s.tok, spec!).minTokens;
  const maxTokens = min + 1 + (i * 7) % 16;
  const body = {
    model: s.model,
    messages: [{ role: "user", content: `Request ${i}: answer in the required format.` }],
    max_tokens: maxTokens,
    temperature: i % 5 === 0 ? 0 : 1,
    seed: i,
    ...c.body,
  };
  const t0 = performance.now();
  let errors: string[];
  try {
    errors = check(c, await ask(s.client, body, stream), maxTokens);
  } catch (e) {
    errors = [`request failed: ${e}`];
  }
  return { case: c.name, stream, maxTokens, errors, ms: performance.now() - t0 };
}

/** Runs requests `0 … count − 1`, `concurrency` at a time. */
export async function runRequests(s: E2eServer, count: number, concurrency = 4): Promise<E2eResult[]> {
  const cases = e2eCases();
  const results: E2eResult[] = new Array(count);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) results[i] = await runRequest(s, cases, i);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}
