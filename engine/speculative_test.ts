import { assert, assertAlmostEquals, assertEquals, assertThrows } from "../tests/assert.ts";
import { chiSquare, chiSquarePValue, pooledChiSquare } from "../tests/stats.ts";
import { Rng } from "./sampler.ts";
import { acceptProposal, sampleFrom, sampleResidual, verifyChain } from "./speculative.ts";

const V = 16;

/** A random distribution over V tokens, some of them impossible (so residuals and zero-mass proposals occur). */
function randomDistribution(rng: Rng, zeros: number): Float64Array {
  const p = new Float64Array(V);
  for (let i = 0; i < V; i++) p[i] = Math.log(1 - rng.uniform()) ** 2; // a skewed spread
  for (let z = 0; z < zeros; z++) p[Math.floor(rng.uniform() * V)] = 0;
  const s = p.reduce((a, b) => a + b, 0);
  return p.map((x) => x / s);
}

Deno.test("chi-square helper: known p-values", () => {
  assertAlmostEquals(chiSquarePValue(3.841458820694124, 1), 0.05, 1e-9);
  assertAlmostEquals(chiSquarePValue(24.995790, 15), 0.05, 1e-6);
  assertAlmostEquals(chiSquarePValue(30.577914, 15), 0.01, 1e-6);
  assertEquals(chiSquare([1, 0], [0, 1]).stat, Infinity);
  // Pooled: bins expecting < 5 (here 2 and 3 of 100) become one bin expecting 5.
  assertEquals(pooledChiSquare([50, 40, 4, 6], [0.5, 0.45, 0.02, 0.03]), chiSquare([50, 40, 10], [0.5, 0.45, 0.05]));
  assertEquals(pooledChiSquare([50, 40, 4, 6], [0.5, 0.45, 0.05, 0]).stat, Infinity);
  assertEquals(pooledChiSquare([60, 40], [0.6, 0.4]), chiSquare([60, 40], [0.6, 0.4]));
});

/**
 * Generates `positions` tokens with chains of K proposals against a context-dependent target: at position i after
 * token `prev` the target is P[i][prev % 2] and the draft Q[i] (independent of context). Each position's
 * token must follow the target's distribution whatever the draft does: counted per (position, prev parity).
 */
Deno.test("verifyChain: every emitted token follows the target's distribution (16 tokens, 1e5 runs, chi-square)", () => {
  const rng = new Rng(7), positions = 4, K = 3, trials = 100_000;
  const P = Array.from({ length: positions }, () => [randomDistribution(rng, 2), randomDistribution(rng, 1)]);
  // A draft near the target, but not it, and blind to context; it can propose ids the target never takes.
  const Q = Array.from({ length: positions }, (_, i) => {
    const noise = randomDistribution(rng, 3);
    return noise.map((x, v) => 0.35 * P[i][0][v] + 0.35 * P[i][1][v] + 0.3 * x);
  });
  const counts = P.map(() => [new Float64Array(V), new Float64Array(V)]);
  let proposed = 0, accepted = 0;
  for (let t = 0; t < trials; t++) {
    const out: number[] = [];
    while (out.length < positions) {
      const start = out.length;
      const k = Math.min(K, positions - start - 1);
      const proposals = Array.from({ length: k }, (_, j) => sampleFrom(Q[start + j], rng.uniform()));
      const prevOf = (j: number) => (j === 0 ? (out[start - 1] ?? 0) : proposals[j - 1]);
      const r = verifyChain({
        proposals,
        draft: proposals.map((_, j) => Q[start + j]),
        target: (j) => P[start + j][prevOf(j) % 2],
        uniform: () => rng.uniform(),
      });
      proposed += k;
      accepted += r.accepted;
      out.push(...proposals.slice(0, r.accepted), r.token);
    }
    for (let i = 0; i < positions; i++) counts[i][(out[i - 1] ?? 0) % 2][out[i]]++;
  }
  assert(accepted > 0.2 * proposed && accepted < proposed, `${accepted} of ${proposed} accepted`);
  for (let i = 0; i < positions; i++) {
    for (const parity of [0, 1]) {
      if (i === 0 && parity === 1) continue; // position 0 follows token 0
      const { stat, dof } = pooledChiSquare(counts[i][parity], P[i][parity]);
      const p = chiSquarePValue(stat, dof);
      assert(p > 1e-3, `position ${i}, previous parity ${parity}: chi-square ${stat.toFixed(1)} (dof ${dof}), p ${p}`);
    }
  }
});

Deno.test("verifyChain: the same draft as the target accepts everything; greedy is an exact prefix match", () => {
  const rng = new Rng(3);
  const p = randomDistribution(rng, 0);
  for (let t = 0; t < 1000; t++) {
    const d = sampleFrom(p, rng.uniform());
    assertEquals(
      verifyChain({ proposals: [d], draft: [p], target: () => p, uniform: () => rng.uniform() }).accepted,
      1,
    );
  }
  const oneHot = (i: number) => Array.from({ length: V }, (_, k) => (k === i ? 1 : 0));
  const argmax = [5, 9, 2, 7, 1];
  for (let mismatch = 0; mismatch <= 4; mismatch++) {
    const proposals = argmax.slice(0, 4).map((a, j) => (j === mismatch ? (a + 1) % V : a));
    const asked: number[] = [];
    const r = verifyChain({
      proposals,
      draft: proposals.map(() => null),
      target: (j) => (asked.push(j), oneHot(argmax[j])),
      uniform: () => rng.uniform(),
    });
    assertEquals(r, { accepted: mismatch, token: argmax[mismatch] });
    assertEquals(asked, Array.from({ length: mismatch + 1 }, (_, j) => j)); // rows asked in order, none past the cut
  }
});

Deno.test("accept/residual primitives: boundaries", () => {
  assert(acceptProposal([0.5, 0.5], [1, 0], 0, 0.49));
  assert(!acceptProposal([0.5, 0.5], [1, 0], 0, 0.5));
  assert(acceptProposal([0.5, 0.5], [0, 1], 0, 0.99)); // q(d) = 0: accepted where the target allows it
  assert(!acceptProposal([0, 1], null, 0, 0));
  assertEquals(sampleResidual([0.5, 0.5], [1, 0], 0, 0.99), 1);
  assertEquals(sampleResidual([0.5, 0.5], [0.5, 0.5], 0, 0.7), 1); // empty residual: draws from p
  assertEquals(sampleFrom([0, 0.25, 0, 0.75], 0.2), 1);
  assertEquals(sampleFrom([0, 0.25, 0, 0.75], 0.9999999), 3);
  assertThrows(() => sampleFrom([0, 0], 0.5), RangeError);
  assertThrows(() => verifyChain({ proposals: [1], draft: [], target: () => [1], uniform: Math.random }), RangeError);
});
