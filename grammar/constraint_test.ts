/**
 * Request fields → constraint specs (`openai.ts`), and the compiled constraint's errors: each names the request
 * field at fault; compiled grammars are cached per request shape.
 */
import { Tokenizer } from "../chat/tokenizer.ts";
import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { fixture } from "../tests/fixtures.ts";
import { buildConstraint, ConstraintError, type ConstraintSpec } from "./constraint.ts";
import { chatConstraintSpec } from "./openai.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
const fn = (name: string, parameters?: unknown) => ({ type: "function", function: { name, parameters } });

Deno.test("openai: response_format and tool_choice become a constraint spec, or none", () => {
  const tools = [fn("a", { type: "object" }), fn("b")];
  assertEquals(chatConstraintSpec({}, false), null);
  assertEquals(chatConstraintSpec({ response_format: { type: "text" }, tools }, false), null);
  assertEquals(chatConstraintSpec({ tools, tool_choice: "auto" }, false), null);
  assertEquals(chatConstraintSpec({ response_format: { type: "json_object" } }, true), {
    json: "object",
    tools: null,
    parallelCalls: true,
    reasoning: true,
  });
  const schema = { type: "integer" };
  const js = chatConstraintSpec(
    { response_format: { type: "json_schema", json_schema: { name: "n", schema } } },
    false,
  );
  assertEquals(js?.json, { schema, param: "response_format.json_schema.schema" });
  // llama.cpp's json_object with a schema.
  assertEquals(chatConstraintSpec({ response_format: { type: "json_object", schema } }, false)?.json, {
    schema,
    param: "response_format.schema",
  });
  const required = chatConstraintSpec({ tools, tool_choice: "required", parallel_tool_calls: false }, false)!;
  assertEquals([required.json, required.tools?.map((t) => t.name), required.parallelCalls], [null, ["a", "b"], false]);
  const named = chatConstraintSpec({ tools, tool_choice: { type: "function", function: { name: "b" } } }, false)!;
  assertEquals([named.tools?.map((t) => t.name), named.parallelCalls], [["b"], false]);
  // auto with a JSON answer: either the answer or a call; none: the answer only.
  const either = chatConstraintSpec({ tools, response_format: { type: "json_object" } }, false)!;
  assertEquals([either.json, either.tools?.length], ["object", 2]);
  const none = chatConstraintSpec({ tools, tool_choice: "none", response_format: { type: "json_object" } }, false)!;
  assertEquals([none.json, none.tools], ["object", null]);
});

Deno.test("openai: malformed fields are errors naming the field", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ response_format: "json" }, "response_format"],
    [{ response_format: { type: "sound" } }, "response_format.type"],
    [{ response_format: { type: "json_schema" } }, "response_format.json_schema"],
    [{ response_format: { type: "json_schema", json_schema: { schema: 5 } } }, "response_format.json_schema.schema"],
    [{ tool_choice: "sometimes" }, "tool_choice"],
    [{ tool_choice: "required" }, "tool_choice"],
    [{ tools: [fn("a")], tool_choice: { type: "function", function: { name: "z" } } }, "tool_choice"],
  ];
  for (const [body, param] of cases) {
    const e = assertThrows(() => chatConstraintSpec(body, false), ConstraintError);
    assertEquals(e.param, param, e.message);
  }
});

Deno.test("constraint: impossible or unsupported schemas name their field; grammars are cached per shape", () => {
  const spec = (json: ConstraintSpec["json"], tools: ConstraintSpec["tools"] = null): ConstraintSpec => ({
    json,
    tools,
    parallelCalls: true,
    reasoning: false,
  });
  const impossible = { type: "object", properties: { a: false }, required: ["a"] };
  const e1 = assertThrows(() => buildConstraint(tok, spec({ schema: impossible })), ConstraintError);
  assertEquals(e1.param, "response_format.json_schema.schema");
  assert(e1.message.includes("no finite"));
  // One impossible tool among good ones is refused, not silently dropped from the choice.
  const tools = [{ name: "ok", parameters: { type: "object" } }, { name: "bad", parameters: impossible }];
  assertEquals(
    assertThrows(() => buildConstraint(tok, spec(null, tools)), ConstraintError).param,
    "tools[1].function.parameters",
  );
  const e2 = assertThrows(
    () => buildConstraint(tok, spec({ schema: { type: "string", format: "ipv6" } })),
    ConstraintError,
  );
  assert(e2.message.includes('format "ipv6"'), e2.message);
  const s = spec({ schema: { type: "array", items: { type: "integer" } } });
  assert(buildConstraint(tok, s) === buildConstraint(tok, structuredClone(s)), "one compile per shape");
  assertEquals(buildConstraint(tok, s).minTokens, "[]".length + 1);
});
