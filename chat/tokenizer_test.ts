import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { mergeHeap, mergeScan } from "./bpe.ts";
import { StreamDecoder, Tokenizer } from "./tokenizer.ts";
import { fixture, fixtureJson, mulberry32 } from "../tests/fixtures.ts";

const v15 = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
const v3 = await Tokenizer.fromFile(fixture("tokenizer/tekken_240911.json"));

interface EncodingCase {
  text: string;
  ids: number[];
  description?: string;
}

Deno.test("tokenizer: reference encodings (tiktoken core) are exact and round-trip, both file versions", () => {
  const ref = fixtureJson<{ cases: EncodingCase[] }>("tokenizer/tekken_reference_encodings.json");
  assert(ref.cases.length >= 50);
  for (const c of ref.cases) {
    for (const tok of [v15, v3]) {
      assertEquals(tok.encode(c.text), c.ids, `${tok.version}: ${c.description} ${JSON.stringify(c.text)}`);
      assertEquals(tok.decode(c.ids), c.text);
    }
  }
});

Deno.test("tokenizer: mistral-common Tekkenizer plain-text encodings are exact", () => {
  const ref = fixtureJson<{ cases: EncodingCase[] }>("tokenizer/tekken_plain_text_encodings.json");
  for (const c of ref.cases) {
    assertEquals(v15.encode(c.text), c.ids, c.text);
    assertEquals(v15.decode(c.ids), c.text);
  }
});

Deno.test("tokenizer: v15 control ids match the real Small 4 file, v3 has only ids 0-19", () => {
  const ref = fixtureJson<{ tokens: Record<string, number> }>("tokenizer/tekken_special_tokens_v15.json");
  for (const [name, id] of Object.entries(ref.tokens)) {
    assertEquals(v15.specialId(name), id, name);
    assertEquals(v15.specialName(id), name);
  }
  assertEquals([v15.bosId, v15.eosId, v15.padId, v15.unkId], [1, 2, 11, 0]);
  assertEquals(v15.version, "v15");
  assertEquals(v15.vocabSize, 131072);
  assertEquals(v15.numSpecialTokens, 1000);
  assertEquals(v15.image, { patchSize: 14, maxImageSize: 1540, spatialMergeSize: 2 });
  assert(v15.modelSettings !== null && "reasoning_effort" in v15.modelSettings);
  assertEquals(v15.specialName(500), "<SPECIAL_500>");

  assertEquals(v3.version, "v3");
  assertEquals(v3.specialId("[TOOL_CONTENT]"), 19);
  assertEquals(v3.maybeSpecialId("[THINK]"), undefined);
  assertThrows(() => v3.specialId("[THINK]"), Error, "no control token [THINK]");
  assertEquals(v3.specialName(25), "<SPECIAL_25>");
  // Only the first vocabSize - 1000 ranks of a 150k-rank file are used.
  assertEquals(v3.usedVocabSize, 131072);
  assertThrows(() => v3.tokenBytes(131072), RangeError);
});

Deno.test("tokenizer: control tokens are never produced from text", () => {
  for (const text of ["[INST]", "[THINK]hi[/THINK]", "<s></s>", "[TOOL_CALLS]f[ARGS]{}", "<SPECIAL_40>"]) {
    const ids = v15.encode(text);
    assert(ids.every((id) => id >= 1000), text);
    assertEquals(v15.decode(ids), text);
  }
});

Deno.test("tokenizer: decode skips or keeps control tokens by name", () => {
  const ids = [1, 3, ...v15.encode("Hi"), 4, 34, ...v15.encode("x"), 35, 2];
  assertEquals(v15.decode(ids), "Hix");
  assertEquals(v15.decode(ids, { specials: "keep" }), "<s>[INST]Hi[/INST][THINK]x[/THINK]</s>");
});

Deno.test("tokenizer: StreamDecoder holds back a character split across tokens", () => {
  // Find a string whose tokens split a multi-byte character (an emoji or rare CJK usually does).
  const text = "a🦜b 𓀀 鿰 ﷽ z";
  const ids = v15.encode(text);
  const dec = new StreamDecoder(v15);
  const pieces = ids.map((id) => dec.push(id));
  pieces.push(dec.finish());
  assertEquals(pieces.join(""), text);
  for (const p of pieces) assert(!p.includes("\uFFFD"), `mid-stream U+FFFD in ${JSON.stringify(pieces)}`);
  // At least one token in this text is a partial character, so some push returned "" while bytes were pending.
  const partial = ids.some((id) =>
    new TextDecoder("utf-8", { fatal: false }).decode(v15.tokenBytes(id)).includes("\uFFFD")
  );
  assert(partial, "test text should contain a token that is not a whole character");
});

Deno.test("tokenizer: StreamDecoder finish turns a truly incomplete tail into U+FFFD", () => {
  const dec = new StreamDecoder(v15);
  const partial = [...Array(v15.usedVocabSize - 1000).keys()].map((r) => r + 1000).find((id) => {
    const b = v15.tokenBytes(id);
    return b.length === 1 && b[0] >= 0xf0 && b[0] < 0xf5;
  })!;
  assertEquals(dec.push(partial), "");
  assertEquals(dec.finish(), "\uFFFD");
});

Deno.test("tokenizer: random Unicode strings round-trip (property)", () => {
  const rand = mulberry32(1234);
  const alphabet = [
    "a",
    "Z",
    "é",
    "ß",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "0",
    "7",
    "42",
    ".",
    "!?",
    "—",
    "你",
    "好",
    "日本",
    "🦜",
    "👩‍💻",
    "Ω",
    "ж",
    "ا",
    "ע",
    "ก",
    "한",
    "\u0301",
    "'s",
    "'LL",
    "x̃",
    "\u00a0",
    "$",
    "{",
    "}",
    "\\",
    "//",
  ];
  for (let n = 0; n < 500; n++) {
    let s = "";
    const len = Math.floor(rand() * 40);
    for (let i = 0; i < len; i++) {
      s += rand() < 0.1
        ? String.fromCodePoint(0x20 + Math.floor(rand() * 0x2ffff) % 0x10ff00)
        : alphabet[Math.floor(rand() * alphabet.length)];
    }
    // Lone surrogates cannot be UTF-8 encoded; the property is about valid Unicode strings.
    if (!s.isWellFormed()) continue;
    const ids = v15.encode(s);
    assertEquals(v15.decode(ids), s);
    const dec = new StreamDecoder(v15);
    assertEquals(ids.map((id) => dec.push(id)).join("") + dec.finish(), s);
  }
});

Deno.test("bpe: heap merge equals tiktoken's scan merge on random pieces", () => {
  const rand = mulberry32(99);
  const ranks = new Map<string, number>();
  for (let b = 0; b < 256; b++) ranks.set(String.fromCharCode(b), b);
  const letters = "abcde";
  let r = 256;
  for (let i = 0; i < 400; i++) {
    const len = 2 + Math.floor(rand() * 5);
    let s = "";
    for (let j = 0; j < len; j++) s += letters[Math.floor(rand() * letters.length)];
    if (!ranks.has(s)) ranks.set(s, r++);
  }
  for (let n = 0; n < 300; n++) {
    let piece = "";
    const len = 1 + Math.floor(rand() * 200);
    for (let j = 0; j < len; j++) piece += letters[Math.floor(rand() * letters.length)];
    assertEquals(mergeHeap(piece, ranks), mergeScan(piece, ranks), piece);
  }
});

Deno.test("tokenizer: long whitespace runs and long pieces encode exactly and fast enough", () => {
  const spaces = " ".repeat(20000) + "x";
  const ids = v15.encode(spaces);
  assertEquals(v15.decode(ids), spaces);
  const junk = "#".repeat(5000);
  assertEquals(v15.decode(v15.encode(junk)), junk);
});
