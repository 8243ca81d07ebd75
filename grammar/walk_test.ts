/**
 * Outputs of random walks through the grammar (any allowed token, as a random-weight model would pick), for every
 * test schema and tool set at budgets from the minimum up: each must parse and validate under the independent
 * validator of `testing.ts`, be compact (no whitespace run or newline between JSON tokens), end within its budget
 * with a slot left for `</s>`, and never end by length.
 */
import { parseOutput } from "../chat/parse.ts";
import { Tokenizer } from "../chat/tokenizer.ts";
import { assert, assertEquals } from "../tests/assert.ts";
import { fixture, mulberry32 } from "../tests/fixtures.ts";
import { buildConstraint, type ConstraintSpec } from "./constraint.ts";
import { TokenIndex } from "./mask.ts";
import {
  layoutErrors,
  pickUniform,
  randomWalk,
  type Schema,
  SCHEMAS,
  TOOL_SETS,
  validate,
  type Walk,
} from "../tests/grammar_helpers.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
const index = TokenIndex.of(tok);

const CONTROL = ["[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]"].map((n) => tok.specialId(n));
const has = (mask: Uint32Array, id: number) => (mask[id >>> 5] & (1 << (id & 31))) !== 0;

/**
 * A walk's picker: any allowed token, but control tokens often (one among 130k would hardly ever be drawn), and
 * for some walks the end as soon as it is allowed.
 */
function picker(seed: number): (mask: Uint32Array) => number {
  const rand = mulberry32(seed);
  const eager = rand() < 0.3;
  return (mask) => {
    if (eager && has(mask, tok.eosId)) return tok.eosId;
    const controls = CONTROL.filter((id) => has(mask, id));
    if (controls.length > 0 && rand() < 0.3) return controls[Math.floor(rand() * controls.length)];
    return pickUniform(mask, rand);
  };
}

function walk(spec: ConstraintSpec, budget: number, seed: number): Walk {
  const c = buildConstraint(tok, spec);
  const w = randomWalk(c.matcher(), index, budget, picker(seed));
  assertEquals(w.reason, "eos", `ended by length: ${tok.decode(w.ids, { specials: "keep" })}`);
  assert(w.ids.length + 1 <= budget, "a slot is left for </s>");
  return w;
}

function budgets(minTokens: number): number[] {
  return [minTokens, minTokens + 2, minTokens + 9, 60, 160].filter((b) => b >= minTokens);
}

for (const [name, schema] of Object.entries(SCHEMAS)) {
  Deno.test(`walk: ${name} outputs validate at every budget`, () => {
    const spec: ConstraintSpec = { json: { schema }, tools: null, parallelCalls: true, reasoning: false };
    const min = buildConstraint(tok, spec).minTokens;
    for (const budget of budgets(min)) {
      for (let seed = 0; seed < 3; seed++) {
        const w = walk(spec, budget, budget * 31 + seed);
        const text = tok.decode(w.ids);
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (e) {
          throw new Error(`${name} @${budget}: not JSON: ${JSON.stringify(text)} (${e})`);
        }
        assertEquals([...validate(value, schema), ...layoutErrors(text)], [], `${name} @${budget}: ${text}`);
      }
    }
  });
}

for (const [name, tools] of Object.entries(TOOL_SETS)) {
  Deno.test(`walk: ${name} tool calls are well-formed and validate (required, named, reasoning)`, () => {
    const variants: ConstraintSpec[] = [
      { json: null, tools, parallelCalls: true, reasoning: false },
      { json: null, tools, parallelCalls: false, reasoning: true },
      { json: null, tools: tools.slice(-1), parallelCalls: false, reasoning: false },
    ];
    for (const spec of variants) {
      const min = buildConstraint(tok, spec).minTokens;
      for (const budget of budgets(min)) {
        for (let seed = 0; seed < 2; seed++) {
          const w = walk(spec, budget, budget * 17 + seed);
          const out = parseOutput(tok, w.ids);
          const where = `${name} @${budget}: ${tok.decode(w.ids, { specials: "keep" })}`;
          assertEquals(out.content, null, where);
          assert(out.toolCalls.length >= 1, where);
          if (!spec.parallelCalls) assertEquals(out.toolCalls.length, 1, where);
          for (const call of out.toolCalls) {
            const tool = spec.tools!.find((t) => t.name === call.function.name);
            assert(tool, `unknown tool in ${where}`);
            const args = JSON.parse(call.function.arguments);
            const params = tool.parameters as Schema | undefined;
            const schema = params && Object.keys(params).length > 0 ? params : { type: "object" };
            assertEquals([...validate(args, schema), ...layoutErrors(call.function.arguments)], [], where);
          }
        }
      }
    }
  });
}

Deno.test("walk: a JSON answer or a tool call, after optional reasoning", () => {
  const schema = SCHEMAS.person;
  const spec: ConstraintSpec = { json: { schema }, tools: TOOL_SETS.math, parallelCalls: true, reasoning: true };
  const kinds = new Set<string>();
  for (let seed = 0; seed < 30; seed++) {
    const w = walk(spec, 50, seed);
    const out = parseOutput(tok, w.ids);
    if (out.toolCalls.length > 0) {
      kinds.add("call");
      assertEquals(out.content, null);
      for (const call of out.toolCalls) JSON.parse(call.function.arguments);
    } else {
      kinds.add("json");
      assertEquals(validate(JSON.parse(out.content!), schema), []);
    }
    if (out.reasoning !== null) kinds.add("reasoning");
  }
  assertEquals([...kinds].sort(), ["call", "json", "reasoning"]);
});
