/**
 * Constrained decoding inside the engine (tiny model, reference backend): the matcher lives in the sequence's
 * sampling state, so a sequence preempted and recomputed continues its JSON where it was, and batching does not
 * change what a greedy constrained request generates; a complete output ends the sequence as `eos` with a slot of
 * its budget to spare.
 */
import { Tokenizer } from "../chat/tokenizer.ts";
import { assert, assertEquals } from "../tests/assert.ts";
import { fixture, mulberry32 } from "../tests/fixtures.ts";
import { ModelEngine } from "../engine/engine.ts";
import type { GenerateRequest, Generation, GenerationEnd, SamplingParams } from "../engine/types.ts";
import { loadModel } from "../engine/model.ts";
import { GREEDY } from "../engine/sampler.ts";
import { buildConstraint } from "./constraint.ts";
import { SCHEMAS, validate } from "../tests/grammar_helpers.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));

async function collect(gen: Generation): Promise<{ ids: number[]; end: GenerationEnd }> {
  const ids: number[] = [];
  for (;;) {
    const r = await gen.next();
    if (r.done) return { ids, end: r.value };
    ids.push(r.value.id);
  }
}

Deno.test("engine: constrained sequences survive preemption and batching, and end as eos within budget", async () => {
  // 4 blocks of 16 tokens: four sequences of 30–54 tokens cannot all hold their blocks at once.
  const model = await loadModel("tiny", {
    backend: "reference",
    maxModelLen: 128,
    maxSeqs: 4,
    maxTokens: 16,
    numBlocks: 4,
    quiet: true,
  });
  const engine = await ModelEngine.create(model, { eosId: tok.eosId });
  try {
    const schemas = [SCHEMAS.person, SCHEMAS.enums, SCHEMAS.tree, SCHEMAS.matrix];
    const greedy: SamplingParams = GREEDY;
    const reqs: GenerateRequest[] = schemas.map((schema, i) => {
      const constraint = buildConstraint(tok, { json: { schema }, tools: null, parallelCalls: true, reasoning: false });
      const rand = mulberry32(i + 1);
      const promptIds = [1, ...Array.from({ length: 9 }, () => 1000 + Math.floor(rand() * 130000))];
      return { promptIds, sampling: { ...greedy, constraint }, maxTokens: Math.max(constraint.minTokens + 4, 24) };
    });
    const solo = [];
    for (const r of reqs) solo.push(await collect(engine.generate(r)));
    const together = await Promise.all(reqs.map((r) => collect(engine.generate(r))));
    assert(engine.stats().preemptions > 0, "the pool was too small for all four");
    assertEquals(together.map((t) => t.ids), solo.map((t) => t.ids));
    solo.forEach(({ ids, end }, i) => {
      assertEquals(end.reason, "eos");
      assert(ids.length + 1 <= reqs[i].maxTokens, "the output and its </s> fit in max_tokens");
      assertEquals(validate(JSON.parse(tok.decode(ids)), schemas[i]), []);
    });
  } finally {
    await engine.close();
    model.dispose();
  }
});
