/**
 * Constrained decoding for the server: builds the grammar of a request's output (a JSON value, tool calls, or
 * either, after optional reasoning), caches it per request shape, and adapts it to the engine's
 * {@link TokenConstraint} interface.
 *
 * @module
 */

import type { ConstraintMatcher, TokenConstraint } from "./types.ts";
import type { GrammarNode } from "./frame.ts";
import { EmptyGrammarError, Grammar, type Matcher } from "./grammar.ts";
import { anyValueNode, compileSchema, SchemaError } from "./json_schema.ts";
import { type IndexTokenizer, TokenIndex } from "./mask.ts";
import { ObjectNode, UnionNode } from "./json_nodes.ts";
import { ThinkNode, ToolCallsNode, type ToolSpec } from "./sequence.ts";

/** A function tool whose calls the grammar constrains. */
export interface ConstraintTool {
  /** The function name. */
  name: string;
  /** JSON Schema of its arguments (absent: any object). */
  parameters?: unknown;
}

/** What a request's output must look like. */
export interface ConstraintSpec {
  /**
   * A JSON answer: `"object"` for any JSON object (`json_object`), or a schema (`json_schema`). Null: no JSON
   * answer (then `tools` must be given).
   */
  json: "object" | { schema: unknown; param?: string } | null;
  /** Tools whose calls are allowed (`required`/named: instead of an answer; with `json`: as an alternative). */
  tools: ConstraintTool[] | null;
  /** Whether several calls may follow one another. */
  parallelCalls: boolean;
  /** Whether a `[THINK]…[/THINK]` span may come first (reasoning enabled). */
  reasoning: boolean;
}

/** A request the grammar cannot serve; `param` is the request field at fault. */
export class ConstraintError extends Error {
  /** The request field, e.g. `response_format.json_schema.schema` or `tools[0].function.parameters`. */
  readonly param: string;
  /** OpenAI-style error code: `invalid_value` for a malformed field, `unsupported_value` for a feature. */
  readonly code: string;

  /** An error about `param`. */
  constructor(message: string, param: string, code = "unsupported_value") {
    super(message);
    this.name = "ConstraintError";
    this.param = param;
    this.code = code;
  }
}

/** Most grammars kept per tokenizer. */
const CACHE_SIZE = 128;
const caches = new WeakMap<TokenIndex, Map<string, GrammarConstraint>>();

/**
 * The {@link TokenConstraint} for a spec, compiled once per distinct spec and tokenizer (least recently used ones
 * are dropped beyond {@link CACHE_SIZE}).
 *
 * @throws {ConstraintError} for unsupported schemas, or a tokenizer without the needed control tokens.
 * @example
 * ```ts
 * const c = buildConstraint(tok, { json: { schema: { type: "object" } }, tools: null, parallelCalls: true,
 *   reasoning: false });
 * c.minTokens; // 2: "{}"
 * ```
 */
export function buildConstraint(tok: IndexTokenizer, spec: ConstraintSpec): GrammarConstraint {
  const index = TokenIndex.of(tok);
  let cache = caches.get(index);
  if (!cache) caches.set(index, cache = new Map());
  const key = JSON.stringify(spec);
  let c = cache.get(key);
  if (c) {
    cache.delete(key); // re-insert: most recently used last
  } else {
    c = compileConstraint(tok, spec);
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value!);
  }
  cache.set(key, c);
  return c;
}

/** {@link buildConstraint} without the cache: compiles the spec every time. */
export function compileConstraint(tok: IndexTokenizer, spec: ConstraintSpec): GrammarConstraint {
  const index = TokenIndex.of(tok);
  const checks: [GrammarNode, string][] = [];
  let grammar: Grammar | null;
  try {
    grammar = new Grammar(parts(index, spec, checks));
  } catch (e) {
    if (!(e instanceof EmptyGrammarError)) throw e;
    grammar = null;
  }
  // Each schema must admit a value on its own: an impossible one is refused, never silently left out of a choice.
  for (const [node, param] of checks) {
    if (!(node.minBytes < Infinity)) throw new ConstraintError("the schema admits no finite JSON value", param);
  }
  if (grammar === null) throw new ConstraintError("the request admits no finite output", "response_format");
  return new GrammarConstraint(grammar, index);
}

function symbol(index: TokenIndex, name: string, why: string, param: string): number {
  const sym = index.specialSyms.get(name);
  if (sym === undefined) {
    throw new ConstraintError(`${why} needs the ${name} control token, which this tokenizer lacks`, param);
  }
  return sym;
}

function compileAt(schema: unknown, param: string): GrammarNode {
  try {
    return compileSchema(schema);
  } catch (e) {
    if (e instanceof SchemaError) throw new ConstraintError(`unsupported JSON schema: ${e.message}`, param);
    throw e;
  }
}

/** The grammar's parts: optional reasoning, then the answer. Each compiled schema is listed in `checks`. */
function parts(index: TokenIndex, spec: ConstraintSpec, checks: [GrammarNode, string][]): GrammarNode[] {
  const out: GrammarNode[] = [];
  if (spec.reasoning) {
    const param = "reasoning_effort";
    out.push(
      new ThinkNode(symbol(index, "[THINK]", "reasoning", param), symbol(index, "[/THINK]", "reasoning", param)),
    );
  }
  const alts: GrammarNode[] = [];
  if (spec.json !== null) {
    const param = spec.json === "object" ? "response_format" : spec.json.param ?? "response_format.json_schema.schema";
    const value = spec.json === "object" ? new ObjectNode([], anyValueNode()) : compileAt(spec.json.schema, param);
    checks.push([value, param]);
    alts.push(value);
  }
  if (spec.tools !== null && spec.tools.length > 0) {
    const tools: ToolSpec[] = spec.tools.map((t, i) => {
      const param = `tools[${i}].function.parameters`;
      const params = t.parameters === undefined || t.parameters === null || isEmptySchema(t.parameters)
        ? new ObjectNode([], anyValueNode())
        : compileAt(t.parameters, param);
      checks.push([params, param]);
      return { name: t.name, params };
    });
    const param = "tools";
    alts.push(
      new ToolCallsNode(
        tools,
        spec.parallelCalls,
        symbol(index, "[TOOL_CALLS]", "tool calls", param),
        symbol(index, "[ARGS]", "tool calls", param),
      ),
    );
  }
  if (alts.length === 0) throw new ConstraintError("nothing to constrain: neither a JSON answer nor tools", "tools");
  out.push(alts.length === 1 ? alts[0] : new UnionNode(alts));
  return out;
}

/** `{}` as a tool's parameters means "no schema"; the arguments are still a JSON object. */
function isEmptySchema(s: unknown): boolean {
  return typeof s === "object" && s !== null && !Array.isArray(s) && Object.keys(s).length === 0;
}

/** A compiled grammar over a vocabulary: the engine's view of it. */
export class GrammarConstraint implements TokenConstraint {
  /** The grammar. */
  readonly grammar: Grammar;
  /** The vocabulary index the masks are computed over. */
  readonly index: TokenIndex;

  /** Binds a grammar to a vocabulary. */
  constructor(grammar: Grammar, index: TokenIndex) {
    this.grammar = grammar;
    this.index = index;
  }

  /**
   * Tokens of the shortest complete output (bytes, each a token at worst; control tokens one each), plus its
   * end-of-sequence.
   */
  get minTokens(): number {
    return this.grammar.minBytes + 1;
  }

  /** A matcher for one sequence. */
  matcher(): GrammarMatcher {
    return new GrammarMatcher(this.grammar.matcher(), this.index);
  }
}

/**
 * One sequence's {@link ConstraintMatcher}. Of the `remaining` tokens, the last is kept for the end-of-sequence:
 * the output completes with a slot to spare, so the usage a server reports (which counts `</s>`) stays within
 * `max_tokens`.
 */
export class GrammarMatcher implements ConstraintMatcher {
  readonly #m: Matcher;
  readonly #index: TokenIndex;

  /** Wraps a grammar matcher. */
  constructor(m: Matcher, index: TokenIndex) {
    this.#m = m;
    this.#index = index;
  }

  /** The grammar matcher (tests inspect it). */
  get inner(): Matcher {
    return this.#m;
  }

  /** Sets the ids allowed next, with `remaining` tokens left including this one. */
  fillMask(mask: Uint32Array, remaining: number): void {
    this.#index.fill(this.#m.stacks, remaining - 1, mask);
  }

  /** Consumes a sampled id; throws when the grammar does not allow it (a caller that ignored the mask). */
  advance(id: number, remaining: number): void {
    if (id === this.#index.eosId) return;
    const syms = this.#index.symbols(id);
    if (syms === null || !this.#m.advanceAll(syms, remaining - 2)) {
      throw new Error(`constrained decoding: token ${id} is not allowed here`);
    }
  }

  /** True when the output is complete and only end-of-sequence may follow. */
  get done(): boolean {
    return this.#m.done;
  }
}
