/**
 * JSON Schema → grammar nodes.
 *
 * Supported: `type` (one or a list), `properties`, `required`, `additionalProperties` (boolean or schema), `items`
 * (schema, or the draft-4 tuple list with `additionalItems`), `prefixItems`, `minItems`, `maxItems`, `enum`,
 * `const`, `anyOf`, `oneOf` (when its branches start differently, so "exactly one" holds), `allOf` (merged),
 * `$ref` to `#` and JSON pointers inside the document (`$defs`, `definitions`; recursion included), `nullable`,
 * `minLength`, `maxLength`, `pattern`, `format` (date, time, date-time, uuid, email, ipv4, hostname, uri),
 * `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (both drafts' forms). Annotations (`title`,
 * `description`, `default`, `examples`, …) are ignored, as are unknown keywords, as JSON Schema says.
 *
 * Everything else that constrains values (`patternProperties`, `not`, `if`, `uniqueItems`, external `$ref`, …) is
 * refused with a {@link SchemaError} naming it: a constraint the grammar cannot enforce is never dropped silently.
 *
 * Choices that narrow what the schema allows (any instance produced is still valid):
 * - without `type`, the type is inferred from the keywords (`properties` → object, …);
 * - an object schema with `properties` and no `additionalProperties` allows no other properties (what strict
 *   structured-output modes do); without `properties` any properties are allowed;
 * - declared properties come in schema order; additional keys are written without escapes;
 * - numbers have at most 15 digits, integers no fraction or exponent (see `number_node.ts`).
 *
 * @module
 */

import { type Frame, type GrammarNode, sinkFrame, utf8 } from "./frame.ts";
import { finalizeNodes } from "./grammar.ts";
import { ArrayNode, LiteralNode, ObjectNode, type PropertySpec, RefNode, UnionNode } from "./json_nodes.ts";
import { NumberNode } from "./number_node.ts";
import { formatAutomaton, patternAutomaton, RegexError } from "./regex.ts";
import { StringNode } from "./string_node.ts";

/** A schema the grammar cannot follow: `message` names the feature and where it is. */
export class SchemaError extends Error {
  /** JSON pointer of the offending part of the schema (`#/properties/a`). */
  readonly path: string;

  /** An error at `path`. */
  constructor(message: string, path: string) {
    super(`${path}: ${message}`);
    this.name = "SchemaError";
    this.path = path;
  }
}

type Schema = Record<string, unknown>;

/** Keywords that constrain values in ways the grammar does not implement. */
const UNSUPPORTED: Record<string, string> = {
  patternProperties: "patternProperties",
  propertyNames: "propertyNames",
  dependentRequired: "dependentRequired",
  dependentSchemas: "dependentSchemas",
  dependencies: "dependencies",
  unevaluatedProperties: "unevaluatedProperties",
  unevaluatedItems: "unevaluatedItems",
  contains: "contains",
  minContains: "minContains",
  maxContains: "maxContains",
  not: "not",
  if: "if/then/else",
  then: "if/then/else",
  else: "if/then/else",
  $dynamicRef: "$dynamicRef",
  $recursiveRef: "$recursiveRef",
};

/** Keywords that only annotate, or that this compiler reads elsewhere (`$defs`). */
const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "$defs",
  "definitions",
  "deprecated",
  "readOnly",
  "writeOnly",
  "contentEncoding",
  "contentMediaType",
  "$anchor",
  "strict",
]);

const OBJECT_KEYS = ["properties", "required", "additionalProperties", "minProperties", "maxProperties"];
const ARRAY_KEYS = ["items", "prefixItems", "minItems", "maxItems", "additionalItems", "uniqueItems"];
const STRING_KEYS = ["minLength", "maxLength", "pattern", "format"];
const NUMBER_KEYS = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"];
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"];

function isRecord(v: unknown): v is Schema {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0;
}

/** JSON texts compared as values (key order ignored), for `enum` intersections and merges. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isRecord(v)) {
    const keys = Object.keys(v).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/**
 * Compiles a JSON Schema into a value node (not yet finalized: wrap it in a `Grammar`).
 *
 * @throws {SchemaError} for unsupported or invalid schemas.
 * @example
 * ```ts
 * const node = compileSchema({ type: "object", properties: { a: { type: "integer" } }, required: ["a"] });
 * const grammar = new Grammar([node]);
 * ```
 */
export function compileSchema(schema: unknown): GrammarNode {
  return new Compiler(schema).compileRoot();
}

/** The node of "any JSON value", with `additional` as a shared recursive reference. */
export function anyValueNode(): GrammarNode {
  const any = new RefNode();
  any.target = new UnionNode([
    new ObjectNode([], any),
    new ArrayNode([], any, 0, Infinity),
    new StringNode(),
    new NumberNode(false),
    new LiteralNode(["true", "false", "null"]),
  ]);
  return any;
}

/** An `enum`/`const` whose values must still satisfy the schema's other keywords (checked once all is compiled). */
interface PendingEnum {
  literal: LiteralNode;
  rest: GrammarNode;
  path: string;
}

/** Limits that keep a hostile schema from costing memory or stack: far beyond any output that fits a budget. */
const MAX_DEPTH = 128;
const MAX_ITEMS = 10_000;
const MAX_PROPERTIES = 2_000;

class Compiler {
  #depth = 0;
  readonly #root: unknown;
  readonly #refs = new Map<string, RefNode>();
  readonly #pendingEnums: PendingEnum[] = [];
  readonly #pendingOneOf: { branches: GrammarNode[]; path: string }[] = [];
  #any: GrammarNode | null = null;

  constructor(root: unknown) {
    this.#root = root;
  }

  compileRoot(): GrammarNode {
    const node = this.compile(this.#root, "#");
    for (const { literal, rest, path } of this.#pendingEnums) {
      finalizeNodes(rest);
      literal.retain((text) => accepts(rest, text));
      if (literal.texts.length === 0) throw new SchemaError("no enum/const value satisfies the schema", path);
    }
    for (const { branches, path } of this.#pendingOneOf) checkDisjoint(branches, path);
    for (const [ref, node] of this.#refs) checkNotLeftRecursive(node, ref);
    return node;
  }

  #anyNode(): GrammarNode {
    return this.#any ??= anyValueNode();
  }

  compile(s: unknown, path: string): GrammarNode {
    if (this.#depth >= MAX_DEPTH) {
      throw new SchemaError(`schemas nested deeper than ${MAX_DEPTH} are not supported`, path);
    }
    this.#depth++;
    try {
      return this.#compile(s, path);
    } finally {
      this.#depth--;
    }
  }

  #compile(s: unknown, path: string): GrammarNode {
    if (s === true) return this.#anyNode();
    if (s === false) return new UnionNode([]);
    if (!isRecord(s)) throw new SchemaError("a schema must be an object or a boolean", path);
    for (const key of Object.keys(s)) {
      const what = UNSUPPORTED[key];
      if (what !== undefined) throw new SchemaError(`${what} is not supported`, path);
    }
    if (typeof s.$ref === "string") return this.#compileRef(s, path);
    if (s.$ref !== undefined) throw new SchemaError("$ref must be a string", path);
    if (s.allOf !== undefined) return this.compile(this.#mergeAllOf(s, path), path);
    if (s.anyOf !== undefined || s.oneOf !== undefined) return this.#compileUnion(s, path);
    if (s.enum !== undefined || s.const !== undefined) return this.#compileEnum(s, path);
    return this.#compileTypes(s, path);
  }

  #compileRef(s: Schema, path: string): GrammarNode {
    const ref = s.$ref as string;
    const siblings = Object.keys(s).filter((k) => k !== "$ref" && !ANNOTATIONS.has(k));
    if (siblings.length === 0) {
      let node = this.#refs.get(ref);
      if (!node) {
        node = new RefNode();
        this.#refs.set(ref, node);
        node.target = this.compile(this.#resolve(ref, path), ref);
      }
      return node;
    }
    // Keywords beside a $ref apply too (2019-09 and later): merge them into the target.
    const rest: Schema = {};
    for (const k of siblings) rest[k] = s[k];
    const target = this.#resolve(ref, path);
    return this.compile({ allOf: [target, rest] }, path);
  }

  #resolve(ref: string, path: string): unknown {
    if (!ref.startsWith("#")) {
      throw new SchemaError(`$ref ${JSON.stringify(ref)} is not supported: only references inside the schema`, path);
    }
    if (ref !== "#" && !ref.startsWith("#/")) {
      throw new SchemaError(`$ref ${JSON.stringify(ref)} (an anchor) is not supported; use a JSON pointer`, path);
    }
    let cur: unknown = this.#root;
    for (const raw of ref.slice(2).split("/").filter((p, i) => i > 0 || p !== "")) {
      const key = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
      if (Array.isArray(cur) && /^\d+$/.test(key)) cur = cur[Number(key)];
      else if (isRecord(cur) && key in cur) cur = cur[key];
      else throw new SchemaError(`$ref ${JSON.stringify(ref)} does not resolve`, path);
    }
    return cur;
  }

  #mergeAllOf(s: Schema, path: string): Schema {
    if (!Array.isArray(s.allOf) || s.allOf.length === 0) {
      throw new SchemaError("allOf must be a non-empty list of schemas", path);
    }
    let merged: Schema = { ...s };
    delete merged.allOf;
    for (const [i, part] of s.allOf.entries()) {
      let p = part;
      // A referenced part is merged by value (a recursive reference must stand alone, outside allOf).
      for (let depth = 0; isRecord(p) && typeof p.$ref === "string" && Object.keys(p).length === 1; depth++) {
        if (depth > 32) throw new SchemaError("allOf through a cycle of references is not supported", path);
        p = this.#resolve(p.$ref as string, `${path}/allOf/${i}`);
      }
      if (p === true) continue;
      if (p === false) return { enum: [] };
      if (!isRecord(p)) throw new SchemaError("allOf items must be schemas", `${path}/allOf/${i}`);
      merged = mergeSchemas(merged, p, `${path}/allOf/${i}`);
    }
    return merged;
  }

  #compileUnion(s: Schema, path: string): GrammarNode {
    const kind = s.anyOf !== undefined ? "anyOf" : "oneOf";
    if (s.anyOf !== undefined && s.oneOf !== undefined) {
      throw new SchemaError("anyOf and oneOf together are not supported", path);
    }
    const list = s[kind];
    if (!Array.isArray(list) || list.length === 0) throw new SchemaError(`${kind} must be a non-empty list`, path);
    const base: Schema = { ...s };
    delete base[kind];
    const hasBase = Object.keys(base).some((k) => !ANNOTATIONS.has(k));
    const branches = list.map((b, i) => {
      const at = `${path}/${kind}/${i}`;
      if (!hasBase) return this.compile(b, at);
      return this.compile({ allOf: [base, b] }, at);
    });
    if (kind === "oneOf") this.#pendingOneOf.push({ branches, path });
    return branches.length === 1 ? branches[0] : new UnionNode(branches);
  }

  #compileEnum(s: Schema, path: string): GrammarNode {
    let values: unknown[];
    if (s.const !== undefined) values = [s.const];
    else if (Array.isArray(s.enum)) values = s.enum;
    else throw new SchemaError("enum must be a list", path);
    if (s.const !== undefined && Array.isArray(s.enum)) {
      const allowed = new Set(s.enum.map(canonical));
      values = values.filter((v) => allowed.has(canonical(v)));
    }
    const texts = [...new Set(values.map((v) => JSON.stringify(v)))];
    const literal = new LiteralNode(texts);
    const rest: Schema = { ...s };
    delete rest.enum;
    delete rest.const;
    if (Object.keys(rest).some((k) => !ANNOTATIONS.has(k))) {
      // The values must also satisfy the rest (a type, a length…): checked on the compiled rest.
      this.#pendingEnums.push({ literal, rest: this.compile(rest, path), path });
    } else if (texts.length === 0) {
      throw new SchemaError("enum is empty: no value can match", path);
    }
    return literal;
  }

  #compileTypes(s: Schema, path: string): GrammarNode {
    let types: string[];
    if (s.type === undefined) {
      types = [];
      const has = (keys: string[]) => keys.some((k) => s[k] !== undefined);
      if (has(OBJECT_KEYS)) types.push("object");
      if (has(ARRAY_KEYS)) types.push("array");
      if (has(STRING_KEYS)) types.push("string");
      if (has(NUMBER_KEYS)) types.push("number");
      if (types.length === 0) return this.#anyNode();
    } else {
      types = typeof s.type === "string" ? [s.type] : Array.isArray(s.type) ? s.type as string[] : [];
      if (types.length === 0 || types.some((t) => typeof t !== "string" || !TYPES.includes(t))) {
        throw new SchemaError(`type must be one of ${TYPES.join(", ")} or a list of them`, path);
      }
    }
    if (s.nullable === true && !types.includes("null")) types = [...types, "null"];
    if (types.includes("number")) types = types.filter((t) => t !== "integer");
    const nodes = [...new Set(types)].map((t) => this.#compileType(t, s, path));
    return nodes.length === 1 ? nodes[0] : new UnionNode(nodes);
  }

  #compileType(type: string, s: Schema, path: string): GrammarNode {
    switch (type) {
      case "object":
        return this.#compileObject(s, path);
      case "array":
        return this.#compileArray(s, path);
      case "string":
        return compileString(s, path);
      case "number":
      case "integer":
        return compileNumber(s, type === "integer", path);
      case "boolean":
        return new LiteralNode(["true", "false"]);
      default:
        return new LiteralNode(["null"]);
    }
  }

  #compileObject(s: Schema, path: string): GrammarNode {
    const props = s.properties ?? {};
    if (!isRecord(props)) throw new SchemaError("properties must be an object", path);
    if (Object.keys(props).length > MAX_PROPERTIES) {
      throw new SchemaError(`more than ${MAX_PROPERTIES} properties are not supported`, path);
    }
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) {
      throw new SchemaError("required must be a list of strings", path);
    }
    const req = new Set(required as string[]);
    const extra = s.additionalProperties;
    let additional: GrammarNode | null;
    if (extra === undefined) additional = s.properties === undefined ? this.#anyNode() : null;
    else if (extra === false) additional = null;
    else additional = this.compile(extra, `${path}/additionalProperties`);
    const specs: PropertySpec[] = Object.entries(props).map(([name, sub]) => ({
      name,
      value: this.compile(sub, `${path}/properties/${name}`),
      required: req.has(name),
    }));
    // A required name with no declared schema takes the additional-properties schema (any value when the schema
    // does not say: only an explicit `false` forbids it).
    for (const name of req) {
      if (name in props) continue;
      if (extra === false) {
        throw new SchemaError(`required property ${JSON.stringify(name)} is not allowed by the schema`, path);
      }
      specs.push({ name, value: additional ?? this.#anyNode(), required: true });
    }
    const minP = s.minProperties, maxP = s.maxProperties;
    if (minP !== undefined && !(isNonNegInt(minP) && minP <= req.size)) {
      throw new SchemaError("minProperties is not supported (beyond the count of required properties)", path);
    }
    if (maxP !== undefined && !(isNonNegInt(maxP) && additional === null && maxP >= specs.length)) {
      throw new SchemaError("maxProperties is not supported (below the count of declared properties)", path);
    }
    return new ObjectNode(specs, additional);
  }

  #compileArray(s: Schema, path: string): GrammarNode {
    if (s.uniqueItems === true) throw new SchemaError("uniqueItems is not supported", path);
    let prefix: unknown[] = [];
    let items: unknown = s.items ?? true;
    if (Array.isArray(s.prefixItems)) prefix = s.prefixItems;
    else if (s.prefixItems !== undefined) throw new SchemaError("prefixItems must be a list of schemas", path);
    if (Array.isArray(s.items)) {
      // Draft 4–7 tuples: items is the prefix, additionalItems the rest.
      prefix = s.items;
      items = s.additionalItems ?? true;
    } else if (s.additionalItems !== undefined) {
      throw new SchemaError("additionalItems without a list of items is not supported", path);
    }
    const minItems = s.minItems ?? 0, maxItems = s.maxItems ?? Infinity;
    if (!isNonNegInt(minItems) || !(maxItems === Infinity || isNonNegInt(maxItems))) {
      throw new SchemaError("minItems and maxItems must be non-negative integers", path);
    }
    if (minItems > MAX_ITEMS || prefix.length > MAX_ITEMS) {
      throw new SchemaError(`minItems or prefixItems beyond ${MAX_ITEMS} are not supported`, path);
    }
    const prefixNodes = prefix.map((p, i) => this.compile(p, `${path}/prefixItems/${i}`));
    const itemsNode = items === false ? null : this.compile(items, `${path}/items`);
    return new ArrayNode(prefixNodes, itemsNode, minItems, maxItems as number);
  }
}

function compileString(s: Schema, path: string): GrammarNode {
  const minLength = s.minLength ?? 0, maxLength = s.maxLength ?? Infinity;
  if (!isNonNegInt(minLength) || !(maxLength === Infinity || isNonNegInt(maxLength))) {
    throw new SchemaError("minLength and maxLength must be non-negative integers", path);
  }
  const lengths = { minLength, maxLength: maxLength as number };
  try {
    if (s.format !== undefined || s.pattern !== undefined) {
      if (s.format !== undefined && s.pattern !== undefined) {
        throw new SchemaError("format and pattern together are not supported", path);
      }
      const automaton = s.format !== undefined
        ? formatAutomaton(s.format, lengths)
        : patternAutomaton(s.pattern, lengths);
      return new StringNode({ automaton });
    }
  } catch (e) {
    if (e instanceof RegexError) throw new SchemaError(e.message, path);
    throw e;
  }
  return new StringNode(lengths);
}

function compileNumber(s: Schema, integer: boolean, path: string): GrammarNode {
  if (s.multipleOf !== undefined && !(integer && s.multipleOf === 1)) {
    throw new SchemaError("multipleOf is not supported", path);
  }
  const num = (k: string) => {
    const v = s[k];
    if (v === undefined || typeof v === "boolean") return null;
    if (typeof v !== "number" || !Number.isFinite(v)) throw new SchemaError(`${k} must be a number`, path);
    return v;
  };
  let min = num("minimum"), max = num("maximum");
  let minEx = false, maxEx = false;
  const exMin = num("exclusiveMinimum"), exMax = num("exclusiveMaximum");
  // Draft 4: exclusiveMinimum: true makes minimum exclusive. Later drafts: exclusiveMinimum is the bound itself.
  if (s.exclusiveMinimum === true) minEx = true;
  if (s.exclusiveMaximum === true) maxEx = true;
  if (exMin !== null && (min === null || exMin >= min)) [min, minEx] = [exMin, true];
  if (exMax !== null && (max === null || exMax <= max)) [max, maxEx] = [exMax, true];
  if (min === null && max === null) return new NumberNode(integer);
  return new NumberNode(integer, { min, minExclusive: minEx, max, maxExclusive: maxEx });
}

/** Keywords whose merge keeps the stricter value. */
const TAKE_MAX = new Set(["minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum"]);
const TAKE_MIN = new Set(["maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum"]);

/** `allOf` of two schemas as one, where that is exact; otherwise a {@link SchemaError}. */
export function mergeSchemas(a: Schema, b: Schema, path: string): Schema {
  const out: Schema = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (!(k in out) || ANNOTATIONS.has(k)) {
      if (!(k in out)) out[k] = v;
      continue;
    }
    const u = out[k];
    if (canonical(u) === canonical(v)) continue;
    if (k === "properties" && isRecord(u) && isRecord(v)) {
      const props: Schema = { ...u };
      for (const [name, sub] of Object.entries(v)) props[name] = name in props ? { allOf: [props[name], sub] } : sub;
      out.properties = props;
    } else if (k === "required" && Array.isArray(u) && Array.isArray(v)) {
      out.required = [...new Set([...u, ...v])];
    } else if (k === "type") {
      const ta = new Set(typeof u === "string" ? [u] : u as string[]);
      const tb = typeof v === "string" ? [v] : v as string[];
      const both = tb.filter((t) => ta.has(t) || (t === "integer" && ta.has("number")));
      if (ta.has("integer") && tb.includes("number")) both.push("integer");
      if (both.length === 0) throw new SchemaError("allOf with incompatible types admits no value", path);
      out.type = [...new Set(both)];
    } else if (k === "enum" && Array.isArray(u) && Array.isArray(v)) {
      const keep = new Set(v.map(canonical));
      out.enum = u.filter((x) => keep.has(canonical(x)));
    } else if (TAKE_MAX.has(k) && typeof u === "number" && typeof v === "number") {
      out[k] = Math.max(u, v);
    } else if (TAKE_MIN.has(k) && typeof u === "number" && typeof v === "number") {
      out[k] = Math.min(u, v);
    } else {
      throw new SchemaError(`allOf with two different values of ${k} is not supported`, path);
    }
  }
  return out;
}

/** Whether `node` (finalized) accepts exactly the JSON text `text`. */
function accepts(node: GrammarNode, text: string): boolean {
  // A throwaway parse: the node inside a minimal grammar of one value.
  const top = sinkFrame();
  let frames = [] as Frame[];
  const bytes = utf8(text);
  node.start(bytes[0], top, 0, frames);
  for (let i = 1; i < bytes.length && frames.length > 0; i++) {
    const next: typeof frames = [];
    for (const f of frames) f.node.step(f, bytes[i], next);
    frames = next;
  }
  return frames.some((f) => {
    for (let g = f;; g = g.parent!.node.resume(g.parent!, g)) {
      if (g.node === top.node) return true;
      if (!g.node.canEnd(g)) return false;
    }
  });
}

/**
 * A reference that reaches itself through unions and references alone (`{"anyOf": [{"$ref": "#"}, …]}`) would
 * start itself forever without reading a byte: refused.
 */
function checkNotLeftRecursive(start: RefNode, ref: string): void {
  const seen = new Set<GrammarNode>();
  const stack: GrammarNode[] = [start.target!];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (n === start) throw new SchemaError("a $ref that contains itself before any other value is not supported", ref);
    if (seen.has(n)) continue;
    seen.add(n);
    if (n instanceof RefNode) stack.push(n.target!);
    else if (n instanceof UnionNode) stack.push(...n.alts);
  }
}

/** `oneOf` means exactly one: guaranteed when no two branches can start with the same byte. */
function checkDisjoint(branches: GrammarNode[], path: string): void {
  const top = sinkFrame();
  const owner = new Map<number, number>();
  branches.forEach((node, i) => {
    for (let b = 0; b < 256; b++) {
      const out: Frame[] = [];
      node.start(b, top, 0, out);
      if (out.length === 0) continue;
      const prev = owner.get(b);
      if (prev !== undefined && prev !== i) {
        throw new SchemaError(
          `oneOf branches ${prev} and ${i} may match the same value (both can start with ` +
            `${JSON.stringify(String.fromCharCode(b))}); oneOf is supported when branches have different types`,
          path,
        );
      }
      owner.set(b, i);
    }
  });
}
