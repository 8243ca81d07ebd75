import { assertEquals } from "../tests/assert.ts";
import { fixture, fixtureJson } from "../tests/fixtures.ts";
import { loadDemoTekkenFile, loadDemoTokenizer } from "./demo_tokenizer.ts";
import { tekkenJson, Tokenizer } from "./tokenizer.ts";

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

Deno.test("demo tokenizer: its tekken.json (as make-checkpoint writes it) loads back to the same tokenizer", async () => {
  const file = await loadDemoTekkenFile();
  const demo = Tokenizer.fromJSON(file);
  const text = tekkenJson(file);
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, text);
    const back = await Tokenizer.fromFile(path);
    for (const k of ["version", "vocabSize", "numSpecialTokens", "usedVocabSize", "bosId", "eosId", "padId"] as const) {
      assertEquals(back[k], demo[k], k);
    }
    assertEquals(back.image, demo.image);
    assertEquals(back.modelSettings, demo.modelSettings);
    for (let id = 0; id < 1000; id++) assertEquals(back.specialName(id), demo.specialName(id));
    for (let id = 1000; id < demo.usedVocabSize; id++) assertEquals(back.tokenBytes(id), demo.tokenBytes(id));
    const ref = fixtureJson<{ cases: { text: string; ids: number[] }[] }>("tokenizer/tekken_reference_encodings.json");
    for (const c of ref.cases) assertEquals(back.encode(c.text), c.ids, c.text);
  } finally {
    await Deno.remove(path);
  }
  // Mistral's layout: every rank (the 130,072 a 131,072-id model uses) with token_str (null where the bytes are not UTF-8), the v15 control table.
  const json = JSON.parse(text);
  assertEquals(Object.keys(json), ["config", "vocab", "special_tokens", "image", "model_settings_builder"]);
  assertEquals(json.config.num_vocab_tokens, 130072);
  assertEquals(json.vocab.length, 130072);
  assertEquals(json.vocab[0], { rank: 0, token_bytes: "AA==", token_str: "\u0000" });
  assertEquals(json.vocab[128], { rank: 128, token_bytes: "gA==", token_str: null });
  assertEquals(json.special_tokens[34], { rank: 34, token_str: "[THINK]", is_control: true });
  // …the same file, field for field, as the v15 fixture derived from mistral-common's tekken file.
  assertEquals(json, fixtureJson("tokenizer/tekken_small4_v15_derived.json"));
});
