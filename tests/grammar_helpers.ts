/**
 * Test helpers for constrained decoding: an independent JSON Schema validator (it shares no code with the
 * grammar: formats are checked with `Date`, `URL` and JavaScript's own `RegExp`), a set of varied schemas and tool
 * sets, a brute-force mask (every token's bytes through the matcher, one by one) and a random walk that decodes
 * like the engine does.
 *
 * @module
 */

import type { GrammarMatcher } from "../grammar/constraint.ts";
import { type Frame, totalNeed } from "../grammar/frame.ts";
import type { TokenIndex } from "../grammar/mask.ts";

/** A JSON Schema (an object or a boolean). */
export type Schema = Record<string, unknown> | boolean;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "object":
      return isObject(v);
    default:
      return typeOf(v) === t;
  }
}

function validDate(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}

function validTime(s: string): boolean {
  return /^([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?([zZ]|[+-]([01]\d|2[0-3]):[0-5]\d)$/.test(s);
}

const FORMAT_CHECKS: Record<string, (s: string) => boolean> = {
  date: validDate,
  time: validTime,
  "date-time": (s) => {
    const i = s.search(/[tT]/);
    return i > 0 && validDate(s.slice(0, i)) && validTime(s.slice(i + 1));
  },
  uuid: (s) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s),
  email: (s) => /^[^\s@"]+@[^\s@"]+\.[^\s@"]+$/.test(s) && !s.includes(".."),
  ipv4: (s) => {
    const parts = s.split(".");
    return parts.length === 4 && parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
  },
  hostname: (s) =>
    s.length <= 253 && s.split(".").every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l)),
  uri: (s) => {
    try {
      return ["http:", "https:"].includes(new URL(s).protocol);
    } catch {
      return false;
    }
  },
};

/**
 * Whitespace outside strings in a JSON text that the grammar's rule forbids (empty: compact): anything but one space
 * right after `:` or `,`. Independent of the grammar: a plain scan that skips string contents and their escapes.
 */
export function layoutErrors(text: string): string[] {
  const errs: string[] = [];
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (/\s/.test(ch) && !(ch === " " && (text[i - 1] === ":" || text[i - 1] === ","))) {
      errs.push(`whitespace ${JSON.stringify(ch)} at ${i} of ${JSON.stringify(text)}`);
    }
  }
  return errs;
}

/**
 * Errors of `value` against `schema` (empty: valid), for the keywords the grammar supports. `root` resolves
 * `$ref`s.
 */
export function validate(value: unknown, schema: Schema, root: Schema = schema, at = "$"): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${at}: false schema`];
  const s = schema;
  const errs: string[] = [];
  const fail = (m: string) => errs.push(`${at}: ${m}`);
  if (typeof s.$ref === "string") {
    let target: unknown = root;
    for (const p of s.$ref.slice(2).split("/").filter(Boolean)) target = (target as Record<string, unknown>)[p];
    errs.push(...validate(value, target as Schema, root, at));
  }
  if (s.nullable === true && value === null) return errs;
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type as string[] : [s.type as string];
    if (!types.some((t) => hasType(value, t))) fail(`type ${typeOf(value)} is not ${types.join("|")}`);
  }
  if (s.const !== undefined && !deepEqual(value, s.const)) fail("not the const");
  if (Array.isArray(s.enum) && !s.enum.some((e) => deepEqual(value, e))) fail("not in enum");
  if (Array.isArray(s.anyOf) && !s.anyOf.some((b) => validate(value, b, root).length === 0)) fail("no anyOf branch");
  if (Array.isArray(s.oneOf) && s.oneOf.filter((b) => validate(value, b, root).length === 0).length !== 1) {
    fail("not exactly one oneOf branch");
  }
  if (Array.isArray(s.allOf)) { for (const b of s.allOf) errs.push(...validate(value, b, root, at)); }
  if (typeof value === "string") {
    const len = [...value].length;
    if (typeof s.minLength === "number" && len < s.minLength) fail("too short");
    if (typeof s.maxLength === "number" && len > s.maxLength) fail("too long");
    if (typeof s.pattern === "string" && !new RegExp(s.pattern, "u").test(value)) fail(`does not match ${s.pattern}`);
    if (typeof s.format === "string" && !FORMAT_CHECKS[s.format]?.(value)) fail(`not a ${s.format}`);
  }
  if (typeof value === "number") {
    const ex = (k: string) => typeof s[k] === "number" ? s[k] as number : null;
    if (ex("minimum") !== null && value < ex("minimum")!) fail("below minimum");
    if (ex("maximum") !== null && value > ex("maximum")!) fail("above maximum");
    if (ex("exclusiveMinimum") !== null && value <= ex("exclusiveMinimum")!) fail("not above exclusiveMinimum");
    if (ex("exclusiveMaximum") !== null && value >= ex("exclusiveMaximum")!) fail("not below exclusiveMaximum");
  }
  if (Array.isArray(value)) {
    if (typeof s.minItems === "number" && value.length < s.minItems) fail("too few items");
    if (typeof s.maxItems === "number" && value.length > s.maxItems) fail("too many items");
    const prefix = Array.isArray(s.prefixItems) ? s.prefixItems as Schema[] : [];
    value.forEach((item, i) => {
      const sub = i < prefix.length ? prefix[i] : s.items as Schema | undefined;
      if (sub !== undefined) errs.push(...validate(item, sub, root, `${at}[${i}]`));
    });
  }
  if (isObject(value)) {
    const props = isObject(s.properties) ? s.properties as Record<string, Schema> : {};
    for (const r of Array.isArray(s.required) ? s.required as string[] : []) if (!(r in value)) fail(`missing ${r}`);
    for (const [k, v] of Object.entries(value)) {
      if (k in props) errs.push(...validate(v, props[k], root, `${at}.${k}`));
      else if (s.additionalProperties !== undefined) {
        errs.push(...validate(v, s.additionalProperties as Schema, root, `${at}.${k}`));
      }
    }
  }
  return errs;
}

/** Varied schemas for the end-to-end checks: every supported keyword appears somewhere. */
export const SCHEMAS: Record<string, Schema> = {
  person: {
    type: "object",
    properties: { name: { type: "string" }, age: { type: "integer" } },
    required: ["name", "age"],
  },
  nested: {
    type: "object",
    properties: {
      id: { type: "string", maxLength: 12 },
      owner: {
        type: "object",
        properties: { first: { type: "string" }, last: { type: "string" }, vip: { type: "boolean" } },
        required: ["first"],
        additionalProperties: false,
      },
      note: { type: ["string", "null"] },
    },
    required: ["id", "owner"],
  },
  orders: {
    type: "array",
    minItems: 1,
    maxItems: 3,
    items: {
      type: "object",
      properties: { sku: { type: "string", minLength: 2, maxLength: 8 }, qty: { type: "integer", minimum: 1 } },
      required: ["sku", "qty"],
    },
  },
  enums: {
    type: "object",
    properties: {
      color: { enum: ["red", "green", "blue"] },
      size: { enum: [1, 2, 3, 10, null] },
      kind: { const: "fixed" },
    },
    required: ["color", "size", "kind"],
  },
  union: {
    type: "object",
    properties: { v: { anyOf: [{ type: "string", maxLength: 5 }, { type: "number" }, { type: "null" }] } },
    required: ["v"],
  },
  oneOf: {
    type: "object",
    properties: { x: { oneOf: [{ type: "integer" }, { type: "array", items: { type: "boolean" }, maxItems: 2 }] } },
    required: ["x"],
  },
  bounds: {
    type: "object",
    properties: {
      percent: { type: "integer", minimum: 0, maximum: 100 },
      temp: { type: "number", minimum: -40.5, maximum: 55.25 },
      ratio: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 },
      big: { type: "integer", minimum: 1000, exclusiveMaximum: 5000 },
    },
    required: ["percent", "temp", "ratio", "big"],
  },
  lengths: {
    type: "object",
    properties: { code: { type: "string", minLength: 3, maxLength: 3 }, text: { type: "string", minLength: 5 } },
    required: ["code", "text"],
  },
  formats: {
    type: "object",
    properties: {
      day: { type: "string", format: "date" },
      at: { type: "string", format: "date-time" },
      id: { type: "string", format: "uuid" },
      mail: { type: "string", format: "email" },
    },
    required: ["day", "at", "id", "mail"],
  },
  pattern: {
    type: "object",
    properties: {
      ref: { type: "string", pattern: "^[A-Z]{3}-\\d{2,4}$" },
      tag: { type: "string", pattern: "x[0-9]" },
      host: { type: "string", format: "ipv4" },
    },
    required: ["ref", "tag", "host"],
  },
  extraProps: {
    type: "object",
    properties: { name: { type: "string" } },
    required: ["name"],
    additionalProperties: { type: "number" },
  },
  anyObject: { type: "object" },
  tree: {
    $defs: {
      node: {
        type: "object",
        properties: {
          label: { type: "string", maxLength: 6 },
          children: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 },
        },
        required: ["label"],
      },
    },
    $ref: "#/$defs/node",
  },
  tuple: {
    type: "array",
    prefixItems: [{ type: "string" }, { type: "integer" }, { type: "boolean" }],
    items: false,
    minItems: 2,
  },
  pydantic: {
    $defs: {
      Address: {
        type: "object",
        properties: { street: { type: "string" }, zip: { type: "string", pattern: "^\\d{5}$" } },
        required: ["street", "zip"],
        title: "Address",
      },
    },
    type: "object",
    properties: {
      address: { allOf: [{ $ref: "#/$defs/Address" }], description: "where" },
      alt: { anyOf: [{ $ref: "#/$defs/Address" }, { type: "null" }], default: null },
    },
    required: ["address"],
    title: "Model",
  },
  oddKeys: {
    type: "object",
    properties: { 'a"b': { type: "integer" }, "ünï": { type: "boolean" }, "": { type: "null" } },
    required: ['a"b', "ünï", ""],
    additionalProperties: false,
  },
  matrix: {
    type: "array",
    maxItems: 3,
    items: { type: "array", items: { type: "integer", minimum: -9, maximum: 9 }, maxItems: 3 },
  },
  topString: { enum: ["yes", "no", "maybe"] },
  topNumber: { type: "number" },
  nullable: {
    type: "object",
    properties: { when: { type: "string", format: "time", nullable: true }, web: { type: "string", format: "uri" } },
    required: ["when", "web"],
  },
};

/** A tool: name and parameters. */
export interface TestTool {
  name: string;
  parameters?: Record<string, unknown>;
}

/** Tool sets for forced tool calls. */
export const TOOL_SETS: Record<string, TestTool[]> = {
  weather: [
    {
      name: "get_weather",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, unit: { enum: ["C", "F"] } },
        required: ["city"],
      },
    },
    {
      name: "get_weather_forecast",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, days: { type: "integer", minimum: 1, maximum: 7 } },
        required: ["city", "days"],
      },
    },
  ],
  math: [
    {
      name: "add",
      parameters: {
        type: "object",
        properties: { a: { type: "number" }, b: { type: "number" } },
        required: ["a", "b"],
        additionalProperties: false,
      },
    },
    { name: "now", parameters: {} },
  ],
  search: [{
    name: "search",
    parameters: {
      type: "object",
      properties: {
        query: { type: "string", minLength: 1 },
        filters: { type: "array", items: { type: "string", maxLength: 10 }, maxItems: 2 },
        since: { type: "string", format: "date" },
      },
      required: ["query"],
    },
  }],
};

/** The ids set in a mask. */
export function maskIds(mask: Uint32Array): number[] {
  const out: number[] = [];
  for (let w = 0; w < mask.length; w++) {
    for (let bits = mask[w]; bits !== 0; bits &= bits - 1) out.push(w * 32 + (31 - Math.clz32(bits & -bits)));
  }
  return out.sort((a, b) => a - b);
}

/**
 * The mask by brute force: every token's symbols run through the parses one by one, then the same budget rule
 * (some parse can finish within `remaining − 1` bytes). What the trie walk and the string tables must reproduce.
 */
export function bruteForceMask(
  index: TokenIndex,
  stacks: readonly Frame[],
  remaining: number,
  accepting: boolean,
): Uint32Array {
  const mask = new Uint32Array(index.maskWords);
  const budget = remaining - 1;
  for (let id = 0; id < index.vocabSize; id++) {
    const syms = index.symbols(id);
    if (syms === null) continue;
    let frames = [...stacks];
    for (let i = 0; i < syms.length && frames.length > 0; i++) {
      const next: Frame[] = [];
      for (const f of frames) f.node.step(f, syms[i], next);
      frames = next;
    }
    if (frames.some((f) => totalNeed(f) <= budget)) mask[id >>> 5] |= 1 << (id & 31);
  }
  if (accepting) mask[index.eosId >>> 5] |= 1 << (index.eosId & 31);
  return mask;
}

/** Set bits in a 32-bit word. */
function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** A uniformly random id among those set in `mask` (-1 when none). */
export function pickUniform(mask: Uint32Array, rand: () => number): number {
  let total = 0;
  for (let w = 0; w < mask.length; w++) total += popcount(mask[w]);
  if (total === 0) return -1;
  let k = Math.floor(rand() * total);
  for (let w = 0; w < mask.length; w++) {
    const n = popcount(mask[w]);
    if (k >= n) {
      k -= n;
      continue;
    }
    for (let bits = mask[w];; bits &= bits - 1) {
      if (k-- === 0) return w * 32 + (31 - Math.clz32(bits & -bits));
    }
  }
  return -1;
}

/** How a random walk ended. */
export interface Walk {
  ids: number[];
  reason: "eos" | "length";
}

/**
 * Decodes like the engine: with `maxTokens` in all, fill the mask with the tokens left, pick an allowed id
 * (`pick` chooses from the mask), advance, end on `</s>`, on a complete output, or at the budget.
 */
export function randomWalk(
  matcher: GrammarMatcher,
  index: TokenIndex,
  maxTokens: number,
  pick: (mask: Uint32Array) => number,
): Walk {
  const mask = new Uint32Array(index.maskWords);
  const ids: number[] = [];
  while (ids.length < maxTokens) {
    const remaining = maxTokens - ids.length;
    matcher.fillMask(mask, remaining);
    const id = pick(mask);
    if (id < 0) throw new Error(`empty mask after ${ids.length} tokens`);
    if (id === index.eosId) return { ids, reason: "eos" };
    matcher.advance(id, remaining);
    ids.push(id);
    if (matcher.done) return { ids, reason: "eos" };
  }
  return { ids, reason: "length" };
}
