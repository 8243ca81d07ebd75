/**
 * The draft step against hand computations: that it reads the target's hidden state (`fc = [0 | I]`: its logits
 * are the target's at the same position over the hidden state's RMS), and that it reads its own cache (a token's
 * logits depend on the tokens before it in the draft's cache, and a chained step equals one step over them all);
 * and that the engine rewrites the draft's entry at a prefix hit's last position.
 */
import { assert, assertEquals } from "./assert.ts";
import { writeSpeculativePair } from "./speculative_helpers.ts";
import { loadModel } from "../engine/model.ts";
import { ModelEngine } from "../engine/engine.ts";
import { GREEDY } from "../engine/sampler.ts";

const OPTIONS = {
  backend: "wasm",
  dtype: "f32" as const,
  cacheDtype: "f32" as const,
  maxModelLen: 64,
  maxTokens: 16,
  maxSeqs: 8,
  threads: 1,
  quiet: true,
};

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

Deno.test("draft step, fc = [0 | I]: proposal 0's logits are head(norm(target hidden)): ∝ the target's, same argmax", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The target's layers matter (outScale 1): its hidden state at a position depends on the context.
    const pair = await writeSpeculativePair(dir, { outScale: 1, fc: "hidden", seed: 5 });
    const model = await loadModel(pair.target, { ...OPTIONS, speculative: { model: pair.draft, numTokens: 2 } });
    try {
      const draft = model.draft!, vocab = model.config.vocab_size, T = 8;
      const ids = [1, 900, 17, 4242, 77, 130000, 5, 31];
      const rows = Array.from({ length: T }, (_, i) => i), table = [[0]];
      const target = await model.step({ ids, pos: rows, seq: rows.map(() => 0), blockTables: table, logitRows: rows });
      // The draft's tokens are unrelated to the target's (the embedding half of fc is zero): only the hidden counts.
      const logits = await draft.step({
        ids: ids.map((id) => (id * 7 + 3) % vocab),
        pos: rows,
        seq: rows.map(() => 0),
        blockTables: table,
        logitRows: rows,
        hiddenRows: rows,
        hiddenOut: rows.map(() => -1),
      });
      const picks = new Set<number>();
      for (let r = 0; r < T; r++) {
        const t = target.subarray(r * vocab, (r + 1) * vocab), d = logits.subarray(r * vocab, (r + 1) * vocab);
        // d = head(h / rms(h)) = t / rms(h): one positive factor over the row.
        let td = 0, dd = 0;
        for (let v = 0; v < vocab; v++) [td, dd] = [td + t[v] * d[v], dd + d[v] * d[v]];
        const scale = td / dd;
        assert(scale > 0, `row ${r}: scale ${scale}`);
        let err = 0, norm = 0;
        for (let v = 0; v < vocab; v++) {
          [err, norm] = [Math.max(err, Math.abs(t[v] - scale * d[v])), Math.max(norm, Math.abs(t[v]))];
        }
        assert(err <= 1e-4 * norm, `row ${r}: |target − ${scale}·draft| ${err} of ${norm}`);
        assertEquals(argmax(d), argmax(t), `row ${r}`);
        picks.add(argmax(t));
      }
      assert(picks.size > 1, "the target's greedy tokens vary with the position");
    } finally {
      model.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("draft step: its own cache counts (a token's logits follow the tokens before it), chained ≡ one step", async () => {
  // tiny-eagle's random layers attend over the draft's cache.
  const model = await loadModel("tiny", { ...OPTIONS, seed: 3, speculative: { model: "tiny-eagle", numTokens: 2 } });
  try {
    const draft = model.draft!, vocab = model.config.vocab_size, T = 6;
    const ids = [1, 900, 17, 4242, 77, 31], rows = Array.from({ length: T }, (_, i) => i);
    await model.step({ ids, pos: rows, seq: rows.map(() => 0), blockTables: [[0]], logitRows: [T - 1] });
    const run = (tokens: number[], block: number, first = 0) =>
      draft.step({
        ids: tokens,
        pos: tokens.map((_, i) => first + i),
        seq: tokens.map(() => 0),
        blockTables: [[block]],
        logitRows: [tokens.length - 1],
        hiddenRows: tokens.map((_, i) => first + i),
        hiddenOut: [-1],
      });
    const last = (tokens: number[]) => tokens[tokens.length - 1];
    // One step over all six, in block 1.
    const whole = await run(ids, 1);
    // The first five, then the sixth alone on top of them, in block 2: the same logits.
    await run(ids.slice(0, T - 1), 2);
    const chained = await run([last(ids)], 2, T - 1);
    let diff = 0;
    for (let v = 0; v < vocab; v++) diff = Math.max(diff, Math.abs(whole[v] - chained[v]));
    assert(diff <= 1e-5, `chained vs one step: ${diff}`);
    // Other tokens before it in block 3 (the same hidden rows): other logits for the same token and hidden state.
    await run(ids.slice(0, T - 1).map((id) => id + 1000), 3);
    const other = await run([last(ids)], 3, T - 1);
    let moved = 0;
    for (let v = 0; v < vocab; v++) moved = Math.max(moved, Math.abs(other[v] - chained[v]));
    assert(moved > 1e-3, `the draft's cache changed nothing: ${moved}`);
  } finally {
    model.dispose();
  }
});

Deno.test("engine with a draft: a prefix hit runs its last cached position again, so the draft's entry there takes this sequence's next token", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const pair = await writeSpeculativePair(dir, { outScale: 0.25 });
    const model = await loadModel(pair.target, { ...OPTIONS, speculative: { model: pair.draft, numTokens: 2 } });
    try {
      const calls: { ids: number[]; pos: number[] }[] = [];
      const draft = model.draft!, step = draft.step.bind(draft);
      draft.step = (input) => (calls.push({ ids: [...input.ids], pos: [...input.pos] }), step(input));
      const engine = await ModelEngine.create(model, { eosId: 2 });
      try {
        // Two full blocks of 16 shared; the token after them differs.
        const common = Array.from({ length: 32 }, (_, i) => 3 + ((i * 7919) % 5000));
        const run = async (promptIds: number[]) => {
          const gen = engine.generate({ promptIds, sampling: GREEDY, maxTokens: 3 });
          for (let r = await gen.next();; r = await gen.next()) if (r.done) return r.value.cachedTokens;
        };
        assertEquals(await run([...common, 101, 102, 103]), 0);
        calls.length = 0;
        const b = [...common, 201, 202];
        assertEquals(await run(b), 32, "reported as served from the cache");
        // The draft's catch-up wrote position 31 with b's token 32 (the first writer's was 101).
        const at31 = calls.flatMap((c) => c.pos.flatMap((p, i) => p === 31 ? [c.ids[i]] : []));
        assertEquals(at31, [201]);
      } finally {
        await engine.close();
      }
    } finally {
      model.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
