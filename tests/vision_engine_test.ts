/**
 * Images through the engine and the server: the engine's chunked prefill places each image's vectors exactly as
 * one direct `Model.step` does, prefix caching tells pictures apart, and a chat request with two images on the
 * `demo` model is billed the token counts of their grids.
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";
import { fixture } from "./fixtures.ts";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import type { ImageInput, SamplingParams } from "../engine/types.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { GREEDY as GREEDY_SAMPLING } from "../engine/sampler.ts";
import { createServer } from "../server/server.ts";

const GREEDY: SamplingParams = { ...GREEDY_SAMPLING, logprobs: 3 };

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

/** A prompt `<s> [INST] text [IMG]… 13 texts [/INST]` with one random image of `rows × cols` tokens at position 3. */
function imagePrompt(rows: number, cols: number, seed: number): { ids: number[]; image: ImageInput } {
  const rand = lcg(seed);
  const ids = [1, 3, 1500], positions: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      positions.push(ids.length);
      ids.push(10);
    }
    ids.push(r === rows - 1 ? 13 : 12);
  }
  for (let t = 0; t < 13; t++) ids.push(1600 + t);
  ids.push(4);
  const pixels = new Float32Array(3 * 28 * rows * 28 * cols).map(() => 4 * rand() - 2);
  const key = Uint32Array.from({ length: 8 }, () => Math.floor(rand() * 2 ** 32));
  return { ids, image: { pixels, grid: { rows, cols }, positions, key } };
}

async function withTiny<T>(fn: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel("tiny", { backend: "reference", dtype: "f32", seed: 3, maxModelLen: 128, quiet: true });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

async function firstToken(engine: ModelEngine, ids: number[], image: ImageInput) {
  const gen = engine.generate({ promptIds: ids, sampling: GREEDY, maxTokens: 1, images: [image] });
  const tok = await gen.next();
  let end = await gen.next();
  while (!end.done) end = await gen.next();
  assert(!tok.done);
  return { token: tok.value, cached: end.value.cachedTokens };
}

Deno.test("engine: an image prompt prefilled in small chunks ≡ one direct step with the image rows", async () => {
  await withTiny(async (model) => {
    const { ids, image } = imagePrompt(3, 4, 7);
    await model.storeImages([image], [5]); // its vectors at store rows 5…
    const seq = model.pool.newSequence();
    assert(model.pool.grow(seq, ids.length));
    const range = ids.map((_, i) => i);
    const logits = await model.step({
      ids,
      pos: range,
      seq: range.map(() => 0),
      blockTables: [seq.blockTable],
      logitRows: [ids.length - 1],
      imageRows: image.positions,
      imageSlots: image.positions.map((_, i) => 5 + i),
    });
    model.pool.release(seq);
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;

    // 7-token chunks: the image's 12 rows and 3 breaks straddle three steps.
    const engine = await ModelEngine.create(model, { eosId: 2, maxTokensPerStep: 7, prefixCaching: false });
    try {
      const { token } = await firstToken(engine, ids, image);
      assertEquals(token.id, best);
      const max = logits[best];
      const lse = max + Math.log(logits.reduce((s, v) => s + Math.exp(v - max), 0));
      assert(Math.abs(token.logprob! - (logits[best] - lse)) < 1e-4, `${token.logprob} vs ${logits[best] - lse}`);
    } finally {
      await engine.close();
    }
  });
});

Deno.test("engine: a text sequence decodes between the encoder's units; the image's logits are unchanged", async () => {
  await withTiny(async (model) => {
    const { ids, image } = imagePrompt(4, 5, 17); // 80 patches: 27 units of ≥ 18 rows at a unit per step
    const alone = await (async () => {
      const engine = await ModelEngine.create(model, { eosId: 2, prefixCaching: false });
      try {
        return (await firstToken(engine, ids, image)).token;
      } finally {
        await engine.close();
      }
    })();
    // One unit per step (every unit is over 1 FLOP).
    const engine = await ModelEngine.create(model, { eosId: 2, prefixCaching: false, visionFlopsPerStep: 1 });
    try {
      const seen: { units: number; encoding: number }[] = [];
      const text = (async () => {
        const gen = engine.generate({ promptIds: [1, 3, 1500, 1501], sampling: GREEDY, maxTokens: 40 });
        for await (const _ of gen) {
          seen.push({ units: engine.stats().visionUnits, encoding: engine.stats().imagesEncoding });
        }
      })();
      const { token } = await firstToken(engine, ids, image);
      await text;
      assertEquals([token.id, token.logprob], [alone.id, alone.logprob], "the same first token and logprob");
      const stats = engine.stats();
      assertEquals([stats.visionUnits, stats.imagesEncoded, stats.imagesEncoding], [27, 1, 0]);
      // Text tokens arrived while the image was mid-encode, after different numbers of units: between them.
      const during = new Set(seen.filter((s) => s.encoding === 1 && s.units > 0).map((s) => s.units));
      assert(during.size >= 10, `text tokens between encoder units: ${[...during]}`);
    } finally {
      await engine.close();
    }
  });
});

Deno.test("engine: cancelling a sequence mid-encode frees its image-store rows and the encoder", async () => {
  await withTiny(async (model) => {
    const engine = await ModelEngine.create(model, { eosId: 2, prefixCaching: false, visionFlopsPerStep: 1 });
    try {
      const a = imagePrompt(4, 5, 19), stop = new AbortController();
      const gen = engine.generate({
        promptIds: a.ids,
        sampling: GREEDY,
        maxTokens: 1,
        images: [a.image],
        signal: stop.signal,
      });
      const done = (async () => {
        for await (const _ of gen);
      })().catch(() => {});
      while (engine.stats().visionUnits < 3) await new Promise((r) => setTimeout(r, 0));
      assertEquals([engine.stats().imagesEncoding, engine.stats().imageStoreRowsUsed], [1, 20]);
      stop.abort();
      await done;
      const units = engine.stats().visionUnits;
      assertEquals([engine.stats().imagesEncoding, engine.stats().imageStoreRowsUsed], [0, 0]);
      // The encoder is free: another image encodes from its first unit, and that request completes.
      const b = imagePrompt(3, 4, 20);
      const { token } = await firstToken(engine, b.ids, b.image);
      assert(token.id >= 0);
      const after = engine.stats();
      assertEquals([after.imagesEncoded, after.imageStoreRowsUsed, after.running], [1, 0, 0]);
      assert(after.visionUnits > units, "b ran its own units");
    } finally {
      await engine.close();
    }
  });
});

Deno.test("engine: a sequence preempted mid-encode drops its encode and rows, and encodes again when readmitted", async () => {
  // 5 blocks of 16: a text sequence growing to 3 blocks preempts the image sequence (3 blocks) mid-encode.
  const model = await loadModel("tiny", {
    backend: "reference",
    dtype: "f32",
    seed: 3,
    maxModelLen: 128,
    numBlocks: 5,
    quiet: true,
  });
  try {
    const b = imagePrompt(4, 5, 23); // 43 tokens, 27 units at a unit per step
    const alone = await (async () => {
      const engine = await ModelEngine.create(model, { eosId: 2, prefixCaching: false });
      try {
        return (await firstToken(engine, b.ids, b.image)).token;
      } finally {
        await engine.close();
      }
    })();
    const engine = await ModelEngine.create(model, { eosId: 2, prefixCaching: false, visionFlopsPerStep: 1 });
    try {
      const text = (async () => {
        const gen = engine.generate({ promptIds: new Array(15).fill(1600), sampling: GREEDY, maxTokens: 40 });
        for await (const _ of gen);
      })();
      const { token } = await firstToken(engine, b.ids, b.image);
      await text;
      const stats = engine.stats();
      assert(stats.preemptions > 0, "the image sequence was preempted");
      assert(stats.visionUnits > 27, `it encoded again after its readmission: ${stats.visionUnits} units`);
      assertEquals([stats.imagesEncoded, stats.imageStoreRowsUsed, stats.imagesEncoding], [1, 0, 0]);
      assertEquals([token.id, token.logprob], [alone.id, alone.logprob]);
    } finally {
      await engine.close();
    }
  } finally {
    model.dispose();
  }
});

Deno.test("engine: image vectors wait in the image store; a sequence waits for rows; rows come back", async () => {
  // Room for one 3×4 image (12 rows): the second request's image waits until the first's prefill passes its image.
  const model = await loadModel("tiny", {
    backend: "reference",
    dtype: "f32",
    seed: 3,
    maxModelLen: 128,
    imageStoreRows: 12,
    quiet: true,
  });
  try {
    assertEquals(model.limits.imageStoreRows, 12);
    const a = imagePrompt(3, 4, 7), b = imagePrompt(3, 4, 8);
    const alone = async (p: typeof a) => {
      const engine = await ModelEngine.create(model, { eosId: 2, prefixCaching: false });
      try {
        return (await firstToken(engine, p.ids, p.image)).token;
      } finally {
        await engine.close();
      }
    };
    const [ta, tb] = [await alone(a), await alone(b)];
    const engine = await ModelEngine.create(model, { eosId: 2, maxTokensPerStep: 64, prefixCaching: false });
    try {
      // Together, both prompts fit one step: b's chunk skips it while a holds the rows, then b runs once a's prefill
      // has passed its image; each gets what it got alone.
      const [ra, rb] = await Promise.all([firstToken(engine, a.ids, a.image), firstToken(engine, b.ids, b.image)]);
      assertEquals([ra.token.id, rb.token.id], [ta.id, tb.id]);
      assertEquals(engine.stats().imagesEncoded, 2);
      assert(engine.stats().imageStoreWaits > 0, "b waited for store rows");
      // More image tokens than the store holds: that request fails, saying so.
      const big = imagePrompt(4, 4, 9);
      const gen = engine.generate({ promptIds: big.ids, sampling: GREEDY, maxTokens: 1, images: [big.image] });
      let error: unknown;
      try {
        await gen.next();
      } catch (e) {
        error = e;
      }
      assert(
        error instanceof RangeError && /16 rows of the image store, which holds 12/.test(error.message),
        `${error}`,
      );
    } finally {
      await engine.close();
    }
  } finally {
    model.dispose();
  }
});

Deno.test("engine: the prefix cache reuses an image's blocks only for the same picture", async () => {
  await withTiny(async (model) => {
    const engine = await ModelEngine.create(model, { eosId: 2, maxTokensPerStep: 64 });
    try {
      const a = imagePrompt(4, 4, 11), b = imagePrompt(4, 4, 12); // same tokens, other pixels and key
      const first = await firstToken(engine, a.ids, a.image);
      assertEquals(engine.stats().imagesEncoded, 1);
      // Blocks of 16 tokens: the image sits in tokens 3–22 of 37, so two whole blocks (32 tokens) are cached and
      // its vectors are not needed again.
      const again = await firstToken(engine, a.ids, a.image);
      assertEquals(again.cached, 32);
      assertEquals(engine.stats().imagesEncoded, 1, "a prompt whose image is cached does not run the encoder");
      assertEquals(again.token, first.token);
      const other = await firstToken(engine, b.ids, b.image);
      assert(other.cached <= a.image.positions[0], `another picture reuses at most the text before it`);
      assert(
        other.token.topLogprobs!.some((t, i) => t.logprob !== first.token.topLogprobs![i].logprob),
        "another picture changes the distribution",
      );
    } finally {
      await engine.close();
    }
  });
});

Deno.test("engine: images for a text-only model, or with a wrong shape, fail that request only", async () => {
  const model = await loadModel("tiny", { backend: "reference", dtype: "f32", maxModelLen: 128, vision: false });
  try {
    const engine = await ModelEngine.create(model, { eosId: 2 });
    assertEquals(engine.vision, null);
    const { ids, image } = imagePrompt(2, 2, 1);
    await assertRejects(engine.generate({ promptIds: ids, sampling: GREEDY, maxTokens: 1, images: [image] }), "vision");
    await engine.close();
  } finally {
    model.dispose();
  }
  await withTiny(async (model) => {
    const engine = await ModelEngine.create(model, { eosId: 2 });
    const { ids, image } = imagePrompt(2, 2, 1);
    const bad = { ...image, positions: image.positions.slice(1) };
    await assertRejects(
      engine.generate({ promptIds: ids, sampling: GREEDY, maxTokens: 1, images: [bad] }),
      "positions",
    );
    const { token } = await firstToken(engine, ids, image);
    assert(token.id >= 0);
    await engine.close();
  });
});

async function assertRejects(gen: AsyncGenerator<unknown, unknown>, word: string): Promise<void> {
  try {
    await gen.next();
  } catch (e) {
    assert(String(e).includes(word), String(e));
    return;
  }
  throw new Error("expected the generation to fail");
}

Deno.test("server: two images and text on the demo model → 200, prompt tokens match their grids", async () => {
  const tok = await loadDemoTokenizer();
  const model = await loadModel("demo", { maxModelLen: 1024, maxTokens: 256, quiet: true });
  const engine = await ModelEngine.create(model, { eosId: tok.eosId });
  const logs: string[] = [];
  const logger = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: () => {} };
  const handle = createServer({ engine, tokenizer: tok, modelName: "demo", logger }).serve({ port: 0 });
  try {
    assert(engine.vision !== null, "demo loads with vision");
    const url = async (name: string) => {
      const bytes = await Deno.readFile(fixture(`images/${name}`));
      return `data:image/png;base64,${btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""))}`;
    };
    const content = [
      { type: "text", text: "Compare" },
      { type: "image_url", image_url: { url: await url("chelsea.png") } },
      { type: "text", text: "with" },
      { type: "image_url", image_url: { url: await url("camera.png") } },
    ];
    const body = (c: unknown[]) =>
      JSON.stringify({ model: "demo", max_tokens: 4, messages: [{ role: "user", content: c }] });
    const post = (b: string) => fetch(`${handle.url}/v1/chat/completions`, { method: "POST", body: b });
    const res = await post(body(content));
    assertEquals(res.status, 200);
    const usage = (await res.json()).usage;
    // The same prompt with 1×1-token images (foo3x5x4indexed.png: [IMG][IMG_END]) isolates the images' share.
    const tiny = await url("foo3x5x4indexed.png");
    const small = await post(body(content.map((c) => c.type === "text" ? c : { ...c, image_url: { url: tiny } })));
    assertEquals(small.status, 200);
    const smallTokens = (await small.json()).usage.prompt_tokens;
    // image_preprocessing_reference.json: chelsea.png 198 tokens (17×11 + 11 breaks/end), camera.png 380 (19×19 + 19).
    assertEquals(usage.prompt_tokens - smallTokens, 198 + 380 - 2 * 2);
    assertEquals(engine.stats().running, 0);
  } finally {
    await handle.shutdown();
    await engine.close();
    model.dispose();
  }
});
