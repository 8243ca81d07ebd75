/**
 * Goodness-of-fit helpers for tests of samplers: Pearson's chi-square statistic and its p-value.
 *
 * @module
 */

/** Pearson's statistic of `counts` against `probs` (expected = n · p); bins with p = 0 must have no counts. */
export function chiSquare(counts: ArrayLike<number>, probs: ArrayLike<number>): { stat: number; dof: number } {
  let n = 0;
  for (let i = 0; i < counts.length; i++) n += counts[i];
  let stat = 0, bins = 0;
  for (let i = 0; i < counts.length; i++) {
    const e = n * probs[i];
    if (e === 0) {
      if (counts[i] !== 0) return { stat: Infinity, dof: 1 };
      continue;
    }
    stat += (counts[i] - e) ** 2 / e;
    bins++;
  }
  return { stat, dof: bins - 1 };
}

/**
 * {@link chiSquare} with the bins expecting fewer than `minExpected` (n · p < 5 by default: the statistic's
 * chi-square approximation needs it) pooled into one bin; a count where p = 0 is still an infinite statistic.
 */
export function pooledChiSquare(
  counts: ArrayLike<number>,
  probs: ArrayLike<number>,
  minExpected = 5,
): { stat: number; dof: number } {
  let n = 0;
  for (let i = 0; i < counts.length; i++) n += counts[i];
  const keptCounts: number[] = [], keptProbs: number[] = [];
  let restCount = 0, restProb = 0;
  for (let i = 0; i < counts.length; i++) {
    if (probs[i] === 0 && counts[i] !== 0) return { stat: Infinity, dof: 1 };
    if (n * probs[i] >= minExpected) {
      keptCounts.push(counts[i]);
      keptProbs.push(probs[i]);
    } else {
      restCount += counts[i];
      restProb += probs[i];
    }
  }
  if (restProb > 0 || restCount > 0) {
    keptCounts.push(restCount);
    keptProbs.push(restProb);
  }
  return chiSquare(keptCounts, keptProbs);
}

/** P(X ≥ stat) for X chi-square with `dof` degrees of freedom: the regularised upper incomplete gamma Q(dof/2, stat/2). */
export function chiSquarePValue(stat: number, dof: number): number {
  if (!Number.isFinite(stat)) return 0;
  return upperGammaQ(dof / 2, stat / 2);
}

/** Q(a, x) by its series (x < a + 1) or Lentz's continued fraction (Numerical Recipes §6.2). */
function upperGammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const lnPre = -x + a * Math.log(x) - logGamma(a);
  if (x < a + 1) {
    let sum = 1 / a, term = sum;
    for (let n = 1; n < 1000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(lnPre);
  }
  const tiny = 1e-300;
  let b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return Math.exp(lnPre) * h;
}

/** ln Γ(x), Lanczos (g = 7, n = 9). */
function logGamma(x: number): number {
  const g = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = g[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += g[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}
