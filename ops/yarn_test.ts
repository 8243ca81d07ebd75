import { assertAlmostEquals, assertEquals } from "../tests/assert.ts";
import { fixtureJson } from "../tests/fixtures.ts";
import { ropeInvFreq, yarnMagnitude } from "./yarn.ts";

type YarnFixture = {
  rope_dim: number;
  rope_theta: number;
  factor: number;
  original_max_position_embeddings: number;
  beta_fast: number;
  beta_slow: number;
  inv_freq: number[];
  softmax_scale_plain: number;
  softmax_scale_with_mscale_sq: number;
};

const fx = fixtureJson<YarnFixture>("model/derived_yarn_and_scales.json");
const yarn = {
  factor: fx.factor,
  originalMaxPositionEmbeddings: fx.original_max_position_embeddings,
  betaFast: fx.beta_fast,
  betaSlow: fx.beta_slow,
  mscale: 1,
  mscaleAllDim: 1,
};

Deno.test("yarn: the Mistral Small 4 table equals the fixture", () => {
  const table = ropeInvFreq({ dim: fx.rope_dim, theta: fx.rope_theta, yarn });
  assertEquals(table.length, 32);
  table.forEach((v, i) => assertAlmostEquals(v, fx.inv_freq[i], 1e-12 * fx.inv_freq[i]));
});

Deno.test("yarn: plain rope without scaling", () => {
  const table = ropeInvFreq({ dim: 8, theta: 10000 });
  table.forEach((v, i) => assertAlmostEquals(v, 10000 ** (-(2 * i) / 8), 1e-15));
});

Deno.test("yarn: magnitude reads both mscale keys", () => {
  assertEquals(yarnMagnitude(yarn), 1);
  assertEquals(yarnMagnitude(undefined), 1);
  const plain = 1 + 0.1 * Math.log(128);
  assertAlmostEquals(yarnMagnitude({ ...yarn, mscaleAllDim: undefined }), plain, 1e-15);
  assertAlmostEquals(yarnMagnitude({ ...yarn, mscale: undefined }), plain, 1e-15);
  // The fixture's two softmax scales differ by mscale² with this same mscale (1 + 0.1·ln 128), derived apart.
  const fromFixture = Math.sqrt(fx.softmax_scale_with_mscale_sq / fx.softmax_scale_plain);
  assertAlmostEquals(yarnMagnitude({ ...yarn, mscaleAllDim: undefined }), fromFixture, 1e-14);
  assertAlmostEquals(yarnMagnitude({ ...yarn, mscale: 1, mscaleAllDim: 0.5 }), plain / (1 + 0.05 * Math.log(128)));
  assertEquals(yarnMagnitude({ ...yarn, attentionFactor: 0.9 }), 0.9);
});
