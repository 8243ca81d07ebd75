import { assertEquals } from "../tests/assert.ts";
import { fixture, fixtureJson } from "../tests/fixtures.ts";
import { loadDemoTokenizer } from "./demo_tokenizer.ts";
import { Tokenizer } from "./tokenizer.ts";

Deno.test("demo tokenizer: same vocabulary and v15 control ids as Small 4's tokenizer", async () => {
  const demo = await loadDemoTokenizer();
  const v15 = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
  assertEquals(demo.version, "v15");
  assertEquals(demo.usedVocabSize, v15.usedVocabSize);
  const specials = fixtureJson<{ tokens: Record<string, number> }>("tokenizer/tekken_special_tokens_v15.json");
  for (const [name, id] of Object.entries(specials.tokens)) assertEquals(demo.specialId(name), id, name);
  for (let id = 0; id < 1000; id++) assertEquals(demo.specialName(id), v15.specialName(id));
  for (let id = 1000; id < demo.usedVocabSize; id += 97) assertEquals(demo.tokenBytes(id), v15.tokenBytes(id));
  const ref = fixtureJson<{ cases: { text: string; ids: number[] }[] }>("tokenizer/tekken_reference_encodings.json");
  for (const c of ref.cases) assertEquals(demo.encode(c.text), c.ids, c.text);
  assertEquals(demo.image, v15.image);
  assertEquals(demo.modelSettings, v15.modelSettings);
});
