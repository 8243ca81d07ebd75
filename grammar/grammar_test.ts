/**
 * The grammar at the byte level, without a vocabulary: what each schema accepts and rejects, the shortest
 * completions the budget relies on, and the features refused with a named error.
 */
import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { layoutErrors } from "../tests/grammar_helpers.ts";
import { utf8 } from "./frame.ts";
import { Grammar } from "./grammar.ts";
import { compileSchema, SchemaError } from "./json_schema.ts";
import { ThinkNode, ToolCallsNode } from "./sequence.ts";

function grammar(schema: unknown): Grammar {
  return new Grammar([compileSchema(schema)]);
}

/** Whether `text` is a complete output of the schema. */
function accepts(schema: unknown, text: string): boolean {
  const m = grammar(schema).matcher();
  return m.advanceAll(utf8(text)) && m.accepting;
}

/** Whether `text` can start an output of the schema. */
function prefix(schema: unknown, text: string): boolean {
  return grammar(schema).matcher().advanceAll(utf8(text));
}

function check(schema: unknown, good: string[], bad: string[]): void {
  for (const t of good) assert(accepts(schema, t), `should accept ${t} for ${JSON.stringify(schema)}`);
  for (const t of bad) assert(!accepts(schema, t), `should reject ${t} for ${JSON.stringify(schema)}`);
}

Deno.test("grammar: objects follow declared order, required, and additionalProperties", () => {
  const person = {
    type: "object",
    properties: { name: { type: "string" }, age: { type: "integer" }, nick: { type: "string" } },
    required: ["name", "age"],
  };
  // Whitespace: one space after `:` and `,` at most (the "whitespace" test below has the rule in full).
  check(person, ['{"name":"Ann","age":3}', '{"name": "A", "age": 0, "nick": ""}', '{"name":"","age": -7}'], [
    '{"age":3,"name":"Ann"}', // order
    '{"name":"Ann"}', // missing required
    '{"name":"Ann","age":3,"x":1}', // no other properties when properties are given
    '{"name":"Ann","age":3,}',
    '{"name":"Ann","age":3} ', // nothing after the value
  ]);
  const open = { type: "object", properties: { a: { type: "integer" } }, additionalProperties: { type: "boolean" } };
  check(open, ['{"a":1,"b":true}', '{"zz":false}', "{}"], ['{"a":1,"b":2}', '{"a":1,"a":true}', '{"b":true,"a":1}']);
  check({ type: "object" }, ['{"x":[1,{"y":null}],"z":"s"}', "{}"], ["[]", '{"x":}']);
  // A required name without a declared schema takes any value.
  check({ properties: { a: { type: "null" } }, required: ["b"] }, ['{"b":[1]}', '{"a":null,"b":"x"}'], ["{}"]);
});

Deno.test("grammar: strings are valid UTF-8 and Unicode; lengths count code points", () => {
  const s = { type: "string", minLength: 2, maxLength: 3 };
  check(s, ['"ab"', '"é\\n"', '"\\u00e9ab"', '"😀x"'], [
    '"a"',
    '"abcd"',
    '"a\u0001"',
    '"\\ud800a"', // surrogates are not escaped: astral characters are written as UTF-8
    '"\\x41b"',
  ]);
  assert(!grammar({ type: "string" }).matcher().advanceAll([0x22, 0xff]), "a byte that is never UTF-8");
  const m = grammar({ type: "string" }).matcher();
  assert(!m.advanceAll([0x22, 0xc3, 0x28]), "a broken UTF-8 sequence");
  assert(!grammar({ type: "string" }).matcher().advanceAll([0x22, 0xed, 0xa0, 0x80]), "a UTF-8 surrogate");
});

Deno.test("grammar: numbers, integers and bounds", () => {
  check({ type: "number" }, ["0", "-0", "1.5", "-12.25e-3", "1E+99", "123456789012345"], [
    "01",
    "1.",
    ".5",
    "+1",
    "1e100",
    "1234567890123456",
  ]);
  check({ type: "integer" }, ["42", "-3"], ["1.0", "1e3"]);
  check({ type: "integer", minimum: 0, maximum: 100 }, ["0", "-0", "7", "100"], ["-1", "101", "1000"]);
  check({ type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 10 }, ["1", "9"], ["0", "10"]);
  check({ type: "number", minimum: 0.1, maximum: 0.3 }, ["0.1", "0.25", "0.3"], ["0.09", "0.31", "0.30001"]);
  check({ type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 }, ["0.5", "0.000001"], ["0", "1", "1.0"]);
  check({ type: "number", minimum: -40.5, maximum: 55.25 }, ["-40.5", "55.25", "-4"], ["-40.6", "55.3", "-400"]);
  // Draft 4 booleans.
  check({ type: "integer", minimum: 5, exclusiveMinimum: true }, ["6"], ["5"]);
  // A prefix with no completion inside the bounds is cut at once.
  assert(!prefix({ type: "integer", minimum: 100, maximum: 199 }, "2"));
  assert(prefix({ type: "integer", minimum: 100, maximum: 199 }, "1"));
});

Deno.test("grammar: enum, const, anyOf, oneOf, nullable, $ref recursion, tuples", () => {
  check({ enum: [1, 10, "a", null, { k: [true] }] }, ["1", "10", '"a"', "null", '{"k":[true]}'], ["11", '"b"', "0"]);
  check({ const: "fixed" }, ['"fixed"'], ['"fixe"']);
  check({ type: "string", enum: ["x", 1, "y"] }, ['"x"', '"y"'], ["1"]);
  check({ enum: ["ab", "abc"], maxLength: 2 }, ['"ab"'], ['"abc"']);
  const ambiguous = {
    anyOf: [
      { type: "object", properties: { a: { type: "integer" } }, required: ["a"] },
      { type: "object", properties: { a: { type: "integer" }, b: { type: "string" } }, required: ["a", "b"] },
    ],
  };
  check(ambiguous, ['{"a":1}', '{"a":1,"b":"x"}'], ['{"b":"x"}']);
  check({ oneOf: [{ type: "string" }, { type: "integer" }] }, ['"s"', "3"], ["true"]);
  check({ type: "boolean", nullable: true }, ["true", "null"], ['"true"']);
  const tree = {
    $defs: { n: { type: "object", properties: { c: { type: "array", items: { $ref: "#/$defs/n" } } } } },
    $ref: "#/$defs/n",
  };
  check(tree, ['{"c":[{"c":[]},{}]}', "{}"], ['{"c":[1]}']);
  check({ prefixItems: [{ type: "string" }, { type: "integer" }], items: false, minItems: 1 }, ['["a",1]', '["a"]'], [
    "[]",
    '["a",1,2]',
  ]);
  check({ type: "array", items: { type: "integer" }, minItems: 2, maxItems: 3 }, ["[1,2]", "[1, 2, 3]"], [
    "[1]",
    "[1,2,3,4]",
  ]);
});

Deno.test("grammar: patterns (unanchored, as JSON Schema reads them) and formats", () => {
  check({ type: "string", pattern: "x[0-9]" }, ['"x1"', '"abx9cd"'], ['"x"', '"ab"']);
  check({ type: "string", pattern: "^[A-Z]{3}-\\d{2,4}$" }, ['"ABC-12"', '"XYZ-1234"'], ['"ABC-1"', '"abc-12"']);
  check({ type: "string", pattern: "^a|b$" }, ['"ax"', '"xb"'], ['"xa"']);
  check({ type: "string", pattern: "^[a-z]+$", maxLength: 3 }, ['"ab"', '"abc"'], ['"abcd"', '""']);
  check({ type: "string", format: "date" }, ['"2024-02-28"', '"1999-12-31"'], ['"2024-02-30"', '"2024-13-01"']);
  check({ type: "string", format: "date-time" }, ['"2024-01-02T03:04:05Z"', '"2024-01-02T03:04:05.5+01:00"'], [
    '"2024-01-02 03:04:05Z"',
  ]);
  check({ type: "string", format: "uuid" }, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567"']);
  check({ type: "string", format: "email" }, ['"a.b@c.io"'], ['"a@b"', '"a..b@c.io"']);
  check({ type: "string", format: "ipv4" }, ['"192.168.0.1"'], ['"256.1.1.1"', '"01.1.1.1"']);
  check({ type: "string", format: "uri" }, ['"https://example.com/a?b=1#c"'], ['"example.com"']);
});

Deno.test("grammar: whitespace is one space after ':' and ',' at most; strings keep theirs", () => {
  const schema = {
    type: "object",
    properties: { a: { type: "array", items: { type: "integer" } }, s: { type: "string" }, o: { type: "object" } },
    required: ["a", "s", "o"],
  };
  check(schema, ['{"a":[1,2],"s":"","o":{}}', '{"a": [1, 2], "s": "x", "o": {"k": [true, null]}}'], [
    '{"a":  [1],"s":"","o":{}}', // a run of spaces
    '{"a": [1,  2],"s":"","o":{}}',
    '{\n"a":[1],"s":"","o":{}}', // newlines, tabs and carriage returns nowhere between tokens
    '{"a":[1],\n"s":"","o":{}}',
    '{"a":\t[1],"s":"","o":{}}',
    '{"a":[1],"s":"","o":{}\r}',
    '{ "a":[1],"s":"","o":{}}', // no space elsewhere: after '{' or '[', before ':', ',', '}' or ']'
    '{"a" :[1],"s":"","o":{}}',
    '{"a":[ 1],"s":"","o":{}}',
    '{"a":[1 ],"s":"","o":{}}',
    '{"a":[1] ,"s":"","o":{}}',
    '{"a":[1],"s":"","o":{} }',
    ' {"a":[1],"s":"","o":{}}', // nor before the value
    '{"a":[1],"s":"","o":{"k":  1}}', // the same inside free-form objects
  ]);
  // Inside strings, what JSON allows stays allowed: spaces of any length, escaped newlines and tabs.
  check(schema, ['{"a":[],"s":"  two  spaces \\n\\t ","o":{" k ": "  "}}'], []);
  check({ type: "string", pattern: "^ +$" }, ['"     "'], ['""']);
  // The independent check the walk and end-to-end tests use flags what random weights once wrote as tool arguments.
  assertEquals(layoutErrors('{"a": [1, 2], "s": "  \\n\\"  ", "o": {}}'), []);
  assertEquals(layoutErrors("{                 \n    \n\n}").length, 24);
  // The matcher rejects the run at its second byte, so a mask never offers it.
  const m = grammar(schema).matcher();
  assert(m.advanceAll(utf8('{"a": ')));
  assert(!m.clone().advanceAll([0x20]) && !m.clone().advanceAll([0x0a]));
  assert(m.advanceAll(utf8("[1, ")) && !m.clone().advanceAll([0x20]));
});

Deno.test("grammar: minimum sizes are the shortest outputs", () => {
  const min = (schema: unknown) => grammar(schema).minBytes;
  assertEquals(
    min({
      type: "object",
      properties: { name: { type: "string" }, age: { type: "integer" } },
      required: ["name", "age"],
    }),
    '{"name":"","age":0}'.length,
  );
  assertEquals(min({ type: "array", minItems: 2, items: { enum: ["xy"] } }), '["xy","xy"]'.length);
  assertEquals(min({ type: "integer", minimum: 1000 }), 4);
  assertEquals(min({ type: "number", exclusiveMinimum: 0, maximum: 0.5 }), "0.1".length);
  assertEquals(min({ type: "string", format: "date" }), '"2000-01-01"'.length);
  assertEquals(min({ type: "string", minLength: 3 }), 5);
  assertEquals(min(true), 1); // 0
});

Deno.test("grammar: every prefix's shortest completion is exact (the budget's invariant)", () => {
  // Walking the shortest completion byte by byte, each byte must lower the need by exactly one.
  const schemas = [
    {
      type: "object",
      properties: {
        a: { type: "string", minLength: 2 },
        b: { type: "array", minItems: 1, items: { type: "integer", minimum: 10 } },
      },
      required: ["a", "b"],
    },
    { type: "string", format: "date-time" },
    { type: "number", minimum: 0.25, maximum: 0.5 },
  ];
  for (const schema of schemas) {
    const m = grammar(schema).matcher();
    for (let steps = 0; m.need > 0; steps++) {
      assert(steps < 200);
      const need = m.need;
      let moved = false;
      for (let b = 0; b < 256 && !moved; b++) {
        const c = m.clone();
        if (c.advanceAll([b]) && c.need === need - 1) {
          m.advanceAll([b]);
          moved = true;
        }
      }
      assert(moved, `no byte makes progress at need ${need} for ${JSON.stringify(schema)}`);
    }
    assert(m.accepting);
  }
});

Deno.test("grammar: tool calls and reasoning are symbols around the JSON", () => {
  const [THINK, END, CALLS, ARGS] = [256 + 34, 256 + 35, 256 + 9, 256 + 32];
  const tools = [
    { name: "get", params: compileSchema({ type: "object" }) },
    {
      name: "get_weather",
      params: compileSchema({ type: "object", properties: { c: { type: "string" } }, required: ["c"] }),
    },
  ];
  const g = new Grammar([new ThinkNode(THINK, END), new ToolCallsNode(tools, true, CALLS, ARGS)]);
  const run = (...parts: (number | string)[]) => {
    const m = g.matcher();
    for (const p of parts) if (!m.advanceAll(typeof p === "number" ? [p] : utf8(p))) return null;
    return m;
  };
  assert(run(CALLS, "get", ARGS, "{}")?.accepting);
  assert(run(CALLS, "get_weather", ARGS, '{"c":"x"}', CALLS, "get", ARGS, "{}")?.accepting);
  assert(run(THINK, "free [text] {", END, CALLS, "get", ARGS, "{}")?.accepting);
  assertEquals(run(CALLS, "get_weather", ARGS, "{}")?.accepting ?? false, false);
  assertEquals(run(CALLS, "put"), null);
  assertEquals(run("{"), null); // no content before the call
  assertEquals(g.minBytes, 1 + 3 + 1 + 2);
});

Deno.test("grammar: unsupported features are refused by name", () => {
  const refused: [unknown, string][] = [
    [{ type: "object", patternProperties: { "^a": {} } }, "patternProperties"],
    [{ not: { type: "string" } }, "not"],
    [{ if: { type: "string" }, then: {} }, "if/then/else"],
    [{ type: "array", uniqueItems: true }, "uniqueItems"],
    [{ $ref: "https://example.com/schema.json" }, "only references inside the schema"],
    [{ type: "string", format: "ipv6" }, 'format "ipv6" is not supported'],
    [{ type: "string", pattern: "(?=a)b" }, "lookahead"],
    [{ type: "string", pattern: "(a)\\1" }, "backreferences"],
    [{ type: "number", multipleOf: 0.5 }, "multipleOf"],
    [{ type: "object", minProperties: 2 }, "minProperties"],
    [{ oneOf: [{ type: "string" }, { type: "string", maxLength: 2 }] }, "oneOf"],
    [{ type: "hiccup" }, "type must be one of"],
    [{ enum: [] }, "enum is empty"],
  ];
  for (const [schema, what] of refused) {
    const e = assertThrows(() => grammar(schema), SchemaError);
    assert(e.message.includes(what), `${e.message} should name ${what}`);
  }
  assertThrows(() => grammar({ anyOf: [{ $ref: "#" }, { type: "null" }] }), SchemaError, "contains itself");
  assertThrows(() => grammar({ $ref: "#" }), SchemaError, "contains itself");
  // No finite instance.
  assertThrows(() => grammar(false));
  assertThrows(() =>
    grammar({
      $defs: { n: { type: "object", properties: { c: { $ref: "#/$defs/n" } }, required: ["c"] } },
      $ref: "#/$defs/n",
    })
  );
});
