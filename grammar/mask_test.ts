/**
 * The mask against brute force over the real 131k-token vocabulary: on random reachable states of several schemas
 * (inside strings, keys, numbers, patterns, tool calls, reasoning), at loose and tight budgets, the trie walk and
 * the precomputed string tables must allow exactly the tokens whose bytes, run through the matcher one by one,
 * are accepted with a parse that can still finish in time.
 */
import { Tokenizer } from "../chat/tokenizer.ts";
import { assertEquals } from "../tests/assert.ts";
import { fixture, mulberry32 } from "../tests/fixtures.ts";
import { buildConstraint, type ConstraintSpec } from "./constraint.ts";
import { TokenIndex } from "./mask.ts";
import { bruteForceMask, maskIds, SCHEMAS, TOOL_SETS } from "../tests/grammar_helpers.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));

function spec(json: ConstraintSpec["json"], extra: Partial<ConstraintSpec> = {}): ConstraintSpec {
  return { json, tools: null, parallelCalls: true, reasoning: false, ...extra };
}

const CASES: [string, ConstraintSpec][] = [
  ["person", spec({ schema: SCHEMAS.person })],
  ["lengths", spec({ schema: SCHEMAS.lengths })],
  ["extraProps", spec({ schema: SCHEMAS.extraProps })],
  ["oddKeys", spec({ schema: SCHEMAS.oddKeys })],
  ["bounds", spec({ schema: SCHEMAS.bounds })],
  ["formats", spec({ schema: SCHEMAS.formats })],
  ["pattern", spec({ schema: SCHEMAS.pattern })],
  ["nullable", spec({ schema: SCHEMAS.nullable })],
  ["union", spec({ schema: SCHEMAS.union })],
  ["tree", spec({ schema: SCHEMAS.tree })],
  ["json_object", spec("object")],
  ["weather tools + reasoning", spec(null, { tools: TOOL_SETS.weather, reasoning: true })],
];

/** States compared per case, each at a loose and a tight budget. */
const STATES = 10;

function describe(ids: number[]): string {
  return ids.slice(0, 5).map((id) => `${id}:${JSON.stringify(tok.decode([id], { specials: "keep" }))}`).join(" ");
}

/** Blank text tokens (spaces, newlines), which random walks mostly skip. */
const blank = new Uint8Array(tok.vocabSize);
for (let id = tok.numSpecialTokens; id < tok.usedVocabSize; id++) {
  blank[id] = tok.tokenBytes(id).every((b) => b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d) ? 1 : 0;
}
const isBlank = (id: number) => blank[id] === 1;

for (const [name, s] of CASES) {
  Deno.test(`mask: equals brute force on random states (${name})`, () => {
    const c = buildConstraint(tok, s);
    const index = TokenIndex.of(tok);
    const rand = mulberry32(name.length * 7919 + 17);
    const mask = new Uint32Array(index.maskWords);
    const kinds = new Set<string>();
    for (let trial = 0; trial < STATES; trial++) {
      // A random reachable state: a fresh output, advanced by a random number of random allowed tokens (mostly not
      // blank, as a model's text mostly is).
      const m = c.grammar.matcher();
      const steps = Math.floor(rand() * 30);
      for (let i = 0; i < steps; i++) {
        index.fill(m.stacks, 10_000, mask);
        let allowed = maskIds(mask).filter((id) => id !== tok.eosId);
        if (allowed.length === 0) break;
        if (rand() < 0.9 && allowed.some((id) => !isBlank(id))) allowed = allowed.filter((id) => !isBlank(id));
        m.advanceAll(index.symbols(allowed[Math.floor(rand() * allowed.length)])!);
      }
      kinds.add(m.stacks.map((f) => f.node.constructor.name).join("+"));
      // A loose budget, then a tight one where the budget steers to the shortest completion.
      for (const remaining of [10_000, m.need + 1 + Math.floor(rand() * 4)]) {
        index.fill(m.stacks, remaining, mask);
        const fast = maskIds(mask);
        const brute = maskIds(bruteForceMask(index, m.stacks, remaining, m.accepting));
        const bruteSet = new Set(brute), fastSet = new Set(fast);
        const extra = fast.filter((id) => !bruteSet.has(id)), missing = brute.filter((id) => !fastSet.has(id));
        assertEquals(
          [extra.length, missing.length],
          [0, 0],
          `${name}, trial ${trial}, remaining ${remaining}: extra ${describe(extra)}; missing ${describe(missing)}`,
        );
      }
    }
    console.log(`${name}: states at ${[...kinds].join(", ")}`);
  });
}
