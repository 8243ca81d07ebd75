/**
 * JSON exactly as Python's `json.dumps(value, ensure_ascii=False)` writes it, and a `json.loads` twin that keeps
 * what `JSON.parse` loses: integer vs float (`1` vs `1.0`), big integers, and key order of integer-like keys.
 *
 * mistral-common builds prompts with Python's `json`, so every byte of `[AVAILABLE_TOOLS]`, `[MODEL_SETTINGS]`
 * and re-serialised tool-call arguments must match it: `", "` and `": "` separators, keys in the given order,
 * non-ASCII written as is, floats in Python's `repr` form (`1.0`, `1e-05`, `1e+16`).
 *
 * @module
 */

/**
 * A number whose Python text is already known (from {@link parsePythonJson}): `"1"` for the int `1`, `"1.0"` for
 * the float `1.0`, `"12345678901234567890"` for a big int.
 */
export class PyNumber {
  /** The number as Python's `json.dumps` writes it. */
  readonly text: string;

  /**
   * Wraps a number's Python text.
   *
   * @param text The number as Python's `json.dumps` writes it.
   */
  constructor(text: string) {
    this.text = text;
  }
}

/**
 * A value `pythonJson` can write. Plain objects keep their own key order (JavaScript puts integer-like keys
 * first); a `Map` keeps insertion order exactly, which is what {@link parsePythonJson} returns.
 */
export type PyJsonValue =
  | null
  | boolean
  | number
  | string
  | PyNumber
  | PyJsonValue[]
  | Map<string, PyJsonValue>
  | { [key: string]: PyJsonValue | undefined };

/**
 * Serialises `value` like Python's `json.dumps(value, ensure_ascii=False)`.
 *
 * A JavaScript number that is an integer is written as a Python int (`JSON.parse` cannot tell `1.0` from `1`;
 * values from {@link parsePythonJson} keep the difference). Object properties whose value is `undefined` are
 * skipped, as `JSON.stringify` does.
 *
 * @example
 * ```ts
 * pythonJson({ a: 1, b: [true, null], c: "é" }); // '{"a": 1, "b": [true, null], "c": "é"}'
 * pythonJson(parsePythonJson('{"x":1.0}'));     // '{"x": 1.0}'
 * ```
 */
export function pythonJson(value: PyJsonValue): string {
  const out: string[] = [];
  write(value, out);
  return out.join("");
}

function write(value: PyJsonValue, out: string[]): void {
  if (value === null) out.push("null");
  else if (value === true) out.push("true");
  else if (value === false) out.push("false");
  else if (typeof value === "string") out.push(pythonString(value));
  else if (typeof value === "number") out.push(pythonNumber(value));
  else if (value instanceof PyNumber) out.push(value.text);
  else if (Array.isArray(value)) {
    out.push("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(", ");
      write(value[i], out);
    }
    out.push("]");
  } else {
    const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
    out.push("{");
    let first = true;
    for (const [key, item] of entries) {
      if (item === undefined) continue;
      if (!first) out.push(", ");
      first = false;
      out.push(pythonString(key), ": ");
      write(item, out);
    }
    out.push("}");
  }
}

/** Python's escapes for `ensure_ascii=False`: only `"`, `\` and C0 controls; `\u00XX` in lower-case hex. */
function pythonString(s: string): string {
  // deno-lint-ignore no-control-regex
  return '"' + s.replace(/[\x00-\x1f"\\]/g, escapeChar) + '"';
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\b": "\\b",
  "\f": "\\f",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

function escapeChar(c: string): string {
  return SHORT_ESCAPES[c] ?? "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0");
}

function pythonNumber(x: number): string {
  if (Number.isInteger(x)) {
    // Beyond 2^53 the double is still an exact integer: write all its digits, as Python's int would.
    return Number.isSafeInteger(x) ? String(x === 0 ? 0 : x) : BigInt(x).toString();
  }
  return pythonFloatRepr(x);
}

/**
 * Python's `repr(float)`: the shortest round-trip digits, fixed notation for exponents -5 < e < 16, otherwise
 * scientific with a signed two-digit exponent; `NaN`/`Infinity` as `json.dumps` writes them.
 *
 * @example
 * ```ts
 * pythonFloatRepr(1);      // "1.0"
 * pythonFloatRepr(1e-5);   // "1e-05"
 * pythonFloatRepr(1e16);   // "1e+16"
 * ```
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  // toExponential() without an argument gives the shortest digits that round-trip, like Python's repr.
  const [mantissa, exponent] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const decpt = Number(exponent) + 1; // value = 0.DIGITS × 10^decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) return `${sign}0.${"0".repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${"0".repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const exp = decpt - 1;
  const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${mant}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
}

/** Thrown by {@link parsePythonJson} where Python's `json.loads` raises `JSONDecodeError`. */
export class PythonJsonError extends Error {
  /** Offset in the text where parsing failed. */
  readonly position: number;

  /**
   * Creates the error.
   *
   * @param message Python's message for the same failure.
   * @param position Offset in the text where parsing failed.
   */
  constructor(message: string, position: number) {
    super(`${message} (at character ${position})`);
    this.name = "PythonJsonError";
    this.position = position;
  }
}

/**
 * Parses JSON the way Python's `json.loads` does: ints and floats stay distinct ({@link PyNumber}), objects become
 * `Map`s in document order (a repeated key keeps its first position and its last value), `NaN` and `Infinity` are
 * accepted, raw control characters inside strings are rejected.
 *
 * @example
 * ```ts
 * pythonJson(parsePythonJson('{"b":1, "1":2.50}')); // '{"b": 1, "1": 2.5}'
 * ```
 */
export function parsePythonJson(text: string): PyJsonValue {
  const parser = new Parser(text);
  parser.skipSpace();
  const value = parser.value();
  parser.skipSpace();
  if (parser.pos !== text.length) throw new PythonJsonError("Extra data", parser.pos);
  return value;
}

/** Python's JSON number grammar; the literal's own text decides int vs float. */
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y;

class Parser {
  pos = 0;
  constructor(private readonly s: string) {}

  skipSpace(): void {
    const s = this.s;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.pos++;
    }
  }

  value(): PyJsonValue {
    const s = this.s;
    const c = s[this.pos];
    if (c === "{") return this.object();
    if (c === "[") return this.array();
    if (c === '"') return this.string();
    for (const [word, value] of LITERALS) {
      if (s.startsWith(word, this.pos)) {
        this.pos += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = this.pos;
    const m = NUMBER.exec(s);
    if (m) {
      this.pos += m[0].length;
      if (m[1] === undefined && m[2] === undefined) {
        // Python ints are exact at any size; -0 reads as 0.
        const digits = m[0].replace(/^-0$/, "0");
        return new PyNumber(digits);
      }
      return new PyNumber(pythonFloatRepr(Number(m[0])));
    }
    throw new PythonJsonError("Expecting value", this.pos);
  }

  private object(): Map<string, PyJsonValue> {
    const map = new Map<string, PyJsonValue>();
    this.pos++;
    this.skipSpace();
    if (this.s[this.pos] === "}") {
      this.pos++;
      return map;
    }
    for (;;) {
      if (this.s[this.pos] !== '"') {
        throw new PythonJsonError("Expecting property name enclosed in double quotes", this.pos);
      }
      const key = this.string();
      this.skipSpace();
      if (this.s[this.pos] !== ":") throw new PythonJsonError("Expecting ':' delimiter", this.pos);
      this.pos++;
      this.skipSpace();
      map.set(key, this.value());
      this.skipSpace();
      const c = this.s[this.pos++];
      if (c === "}") return map;
      if (c !== ",") throw new PythonJsonError("Expecting ',' delimiter", this.pos - 1);
      this.skipSpace();
    }
  }

  private array(): PyJsonValue[] {
    const items: PyJsonValue[] = [];
    this.pos++;
    this.skipSpace();
    if (this.s[this.pos] === "]") {
      this.pos++;
      return items;
    }
    for (;;) {
      items.push(this.value());
      this.skipSpace();
      const c = this.s[this.pos++];
      if (c === "]") return items;
      if (c !== ",") throw new PythonJsonError("Expecting ',' delimiter", this.pos - 1);
      this.skipSpace();
    }
  }

  private string(): string {
    const s = this.s;
    const start = this.pos;
    this.pos++;
    let out = "";
    let run = this.pos;
    for (;;) {
      if (this.pos >= s.length) throw new PythonJsonError("Unterminated string starting at", start);
      const c = s.charCodeAt(this.pos);
      if (c === 0x22) {
        out += s.slice(run, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) throw new PythonJsonError("Invalid control character", this.pos);
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      out += s.slice(run, this.pos);
      const e = s[this.pos + 1];
      if (e === "u") {
        const hex = s.slice(this.pos + 2, this.pos + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw new PythonJsonError("Invalid \\uXXXX escape", this.pos);
        // Surrogate halves pass through one by one: a valid pair joins into one character in UTF-16 anyway.
        out += String.fromCharCode(parseInt(hex, 16));
        this.pos += 6;
      } else {
        const decoded = UNESCAPES[e];
        if (decoded === undefined) throw new PythonJsonError("Invalid \\escape", this.pos);
        out += decoded;
        this.pos += 2;
      }
      run = this.pos;
    }
  }
}

const LITERALS: [string, PyJsonValue][] = [
  ["null", null],
  ["true", true],
  ["false", false],
  ["NaN", new PyNumber("NaN")],
  ["Infinity", new PyNumber("Infinity")],
  ["-Infinity", new PyNumber("-Infinity")],
];

const UNESCAPES: Record<string, string> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};
