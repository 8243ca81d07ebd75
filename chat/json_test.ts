import { assertEquals, assertThrows } from "../tests/assert.ts";
import { parsePythonJson, PyNumber, pythonFloatRepr, pythonJson, PythonJsonError } from "./json.ts";

// Expected strings below were produced by CPython 3 `repr()` / `json.dumps(..., ensure_ascii=False)`.

Deno.test("json: float repr matches Python", () => {
  const cases: [number, string][] = [
    [1, "1.0"],
    [0.1, "0.1"],
    [1e-5, "1e-05"],
    [1e-4, "0.0001"],
    [1e16, "1e+16"],
    [1e15, "1000000000000000.0"],
    [123456789012345.6, "123456789012345.6"],
    [1.5e-7, "1.5e-07"],
    [2.5e300, "2.5e+300"],
    [-0, "-0.0"],
    [0, "0.0"],
    [1e22, "1e+22"],
    [5e-324, "5e-324"],
    [1.7976931348623157e308, "1.7976931348623157e+308"],
    [100, "100.0"],
    [0.000123, "0.000123"],
    [12345.678, "12345.678"],
    [NaN, "NaN"],
    [-Infinity, "-Infinity"],
  ];
  for (const [x, text] of cases) assertEquals(pythonFloatRepr(x), text, String(x));
});

Deno.test("json: dumps uses Python separators and escapes, non-ASCII unescaped", () => {
  const value = { a: 1, b: [true, null], c: 'é\n\t"\\\x01\x7f\u2028東京😀', d: {}, e: [], skipped: undefined };
  assertEquals(
    pythonJson(value),
    '{"a": 1, "b": [true, null], "c": "é\\n\\t\\"\\\\\\u0001\x7f\u2028東京😀", "d": {}, "e": []}',
  );
  assertEquals(pythonJson([1.5, -0, 2 ** 60, new PyNumber("1.0")]), "[1.5, 0, 1152921504606846976, 1.0]");
});

Deno.test("json: loads keeps int vs float, big ints, key order and duplicate-key rule of Python", () => {
  const cases: [string, string][] = [
    ['{"b":1, "1":2.50}', '{"b": 1, "1": 2.5}'],
    ['{"a":1,"a":2,"b":3}', '{"a": 2, "b": 3}'],
    [
      "[1.0, 1e5, -0, 10000000000000000000001, 1E400, -1e-400]",
      "[1.0, 100000.0, 0, 10000000000000000000001, Infinity, -0.0]",
    ],
    [' "\\ud83d\\ude00 \\u00e9" ', '"😀 é"'],
    ["NaN", "NaN"],
    ["[Infinity,-Infinity]", "[Infinity, -Infinity]"],
    ['{"a" : [ ] , "b":{ }}', '{"a": [], "b": {}}'],
    ['"\\/\\b\\f\\n\\r\\t"', '"/\\b\\f\\n\\r\\t"'],
  ];
  for (const [text, dumped] of cases) assertEquals(pythonJson(parsePythonJson(text)), dumped, text);
});

Deno.test("json: loads rejects what Python rejects", () => {
  for (const text of ['{"a":1} x', "{'a': 1}", '"a\x01"', "", "[1,]", '{"a":1,}', "01", "\ufeff{}", '"\\x"', "[1 2]"]) {
    assertThrows(() => parsePythonJson(text), PythonJsonError, undefined);
  }
});
