/**
 * Model-level properties on the `tiny` preset (random weights seeded from tensor names): finite logits, the paged
 * cache is consistent (prefill(N) ≡ prefill(N−1) + decode(1), chunked ≡ whole), a batch of two sequences ≡ two
 * single runs, absorbed ≡ naive MLA. Backends are compared with `reference` here as they arrive.
 */
import { assert, assertEquals } from "./assert.ts";
import { loadModel, type Model } from "../runtime/model.ts";

const VOCAB = 131072;
const PROMPT = [1, 3, 1500, 2201, 77_000, 4, 1100, 1200, 9000, 1042, 1043];

function row(logits: Float32Array, r: number): Float32Array {
  return logits.subarray(r * VOCAB, (r + 1) * VOCAB);
}

function relErr(a: Float32Array, b: Float32Array): number {
  let err = 0, norm = 0;
  for (let i = 0; i < a.length; i++) {
    err += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return Math.sqrt(err / Math.max(norm, 1e-30));
}

function assertClose(a: Float32Array, b: Float32Array, tol: number, what: string): void {
  assertEquals(a.length, b.length, what);
  const e = relErr(a, b);
  assert(e < tol, `${what}: relative error ${e} ≥ ${tol}`);
}

async function withModel<T>(opts: Parameters<typeof loadModel>[1], fn: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel("tiny", { backend: "reference", seed: 3, maxModelLen: 64, quiet: true, ...opts });
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

Deno.test("model: tiny forward gives finite, non-degenerate logits at every position", async () => {
  await withModel({}, async (m) => {
    const logits = await m.forward(PROMPT);
    assertEquals(logits.length, PROMPT.length * VOCAB);
    assert(logits.every(Number.isFinite), "finite");
    for (let r = 0; r < PROMPT.length; r++) {
      const x = row(logits, r);
      let mean = 0;
      for (const v of x) mean += v / x.length;
      let variance = 0;
      for (const v of x) variance += (v - mean) ** 2 / x.length;
      assert(Math.sqrt(variance) > 1e-3, `row ${r} has spread`);
    }
    // Different positions see different contexts.
    assert(relErr(row(logits, 3), row(logits, 4)) > 1e-3);
    assertEquals(m.pool.usedBlocks, 0, "forward releases its cache blocks");
  });
});

Deno.test("model: prefill(N) ≡ prefill(N−1) + decode(1) through the paged cache", async () => {
  await withModel({}, async (m) => {
    const whole = await m.forward(PROMPT);
    const seq = m.pool.newSequence();
    assert(m.pool.grow(seq, PROMPT.length));
    // Scatter the blocks: the step must follow the block table, not assume contiguity.
    seq.blockTable.reverse();
    const n = PROMPT.length - 1;
    const range = [...Array(n).keys()];
    const prefill = await m.step({
      ids: PROMPT.slice(0, n),
      pos: range,
      seq: range.map(() => 0),
      blockTables: [seq.blockTable],
      logitRows: [n - 1],
    });
    assertClose(prefill, row(whole, n - 1), 1e-5, "prefill last row");
    const decode = await m.step({
      ids: [PROMPT[n]],
      pos: [n],
      seq: [0],
      blockTables: [seq.blockTable],
      logitRows: [0],
    });
    assertClose(decode, row(whole, n), 1e-5, "decode row");
    m.pool.release(seq);
  });
});

Deno.test("model: chunked prefill equals a single pass", async () => {
  const whole = await withModel({}, (m) => m.forward(PROMPT));
  const chunked = await withModel({ maxTokens: 4 }, (m) => m.forward(PROMPT));
  assertClose(chunked, whole, 1e-5, "chunks of 4");
});

Deno.test("model: a batch of two sequences equals two single runs", async () => {
  await withModel({}, async (m) => {
    const a = PROMPT.slice(0, 7);
    const b = [1, 3, 500, 600, 700, 4];
    const single = [await m.forward(a), await m.forward(b)];
    const sa = m.pool.newSequence(), sb = m.pool.newSequence();
    assert(m.pool.grow(sa, a.length) && m.pool.grow(sb, b.length));
    // Interleave the two sequences' tokens in one step.
    const ids: number[] = [], pos: number[] = [], seqIdx: number[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i < b.length) ids.push(b[i]), pos.push(i), seqIdx.push(1);
      if (i < a.length) ids.push(a[i]), pos.push(i), seqIdx.push(0);
    }
    const lastA = seqIdx.lastIndexOf(0), lastB = seqIdx.lastIndexOf(1);
    const batched = await m.step({
      ids,
      pos,
      seq: seqIdx,
      blockTables: [sa.blockTable, sb.blockTable],
      logitRows: [lastA, lastB],
    });
    assertClose(row(batched, 0), row(single[0], a.length - 1), 1e-5, "sequence a");
    assertClose(row(batched, 1), row(single[1], b.length - 1), 1e-5, "sequence b");
    m.pool.release(sa);
    m.pool.release(sb);
  });
});

Deno.test("model: absorbed MLA ≡ naive MLA on the whole model", async () => {
  const absorbed = await withModel({ attention: "absorbed" }, (m) => m.forward(PROMPT));
  const naive = await withModel({ attention: "naive" }, (m) => m.forward(PROMPT));
  assertClose(absorbed, naive, 1e-5, "absorbed vs naive");
});

Deno.test("model: the seed changes the weights, the same seed reproduces them", async () => {
  const a = await withModel({ seed: 1 }, (m) => m.forward(PROMPT.slice(0, 3)));
  const b = await withModel({ seed: 1 }, (m) => m.forward(PROMPT.slice(0, 3)));
  const c = await withModel({ seed: 2 }, (m) => m.forward(PROMPT.slice(0, 3)));
  assertEquals(a, b);
  assert(relErr(a, c) > 0.1);
});

Deno.test("model: a make-checkpoint directory loads to the same model as the preset (HF fp8, Mistral bf16)", async () => {
  const { makeCheckpoint } = await import("../runtime/weights/make_checkpoint.ts");
  const { presetConfig } = await import("../graph/models/mistral4.ts");
  const ids = PROMPT.slice(0, 4);
  for (const [layout, dtype] of [["hf", "f8e4m3"], ["mistral", "bf16"]] as const) {
    const dir = await Deno.makeTempDir();
    try {
      await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype, seed: 5, layout });
      const fromPreset = await withModel({ seed: 5, dtype }, (m) => m.forward(ids));
      const model = await loadModel(dir, { backend: "reference", maxModelLen: 64, quiet: true });
      try {
        assertEquals(await model.forward(ids), fromPreset, `${layout} ${dtype}`);
      } finally {
        model.dispose();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
