/**
 * Speculative decoding's accept/reject step for a chain of K proposals (Leviathan et al. 2023, Chen et al. 2023):
 * the output is distributed exactly as the target's, whatever the draft proposes.
 *
 * For proposal `j` (drawn by the draft from `q_j`), with `p_j` the target's distribution at the same position:
 * accept with probability `min(1, p_j(d) / q_j(d))`; on the first rejection draw the token from the residual
 * `max(0, p_j − q_j)` (normalised) and stop; when all K are accepted draw one more token from `p_K` (the bonus). So
 * a target forward gives between 1 and K + 1 tokens. Greedy decoding is the one-hot case: `q_j` is one-hot at the
 * draft's argmax and `p_j` at the target's, so proposals are accepted exactly while they match the target's argmax,
 * and the first mismatch is replaced by the target's argmax.
 *
 * Pure: no model, no engine; distributions are plain arrays of probabilities over the vocabulary, a draft
 * distribution of `null` means the proposal had probability 1 (greedy), and `uniform()` draws from [0, 1).
 *
 * @example
 * ```ts
 * import { verifyChain } from "./speculative.ts";
 * const p = [[0.1, 0.9], [0.5, 0.5], [1, 0]];
 * const r = verifyChain({ proposals: [1, 0], draft: [null, null], target: (j) => p[j], uniform: Math.random });
 * console.log(r.accepted, r.token); // accepted ∈ {0, 1, 2}; token the next one
 * ```
 *
 * @module
 */

/** What {@link verifyChain} needs. */
export interface ChainInput {
  /** The draft's K proposals, in order. */
  proposals: readonly number[];
  /**
   * The draft's distribution each proposal was drawn from (K entries), or `null` where the proposal was certain (a
   * greedy draft).
   */
  draft: readonly (ArrayLike<number> | null)[];
  /**
   * The target's distribution at row `j` (0..K), asked for in order, once each, and only for rows the chain reaches:
   * row `j` is asked for after proposals `0..j−1` were accepted (so the caller can record them first: penalties and
   * constraints depend on the tokens before).
   */
  target: (j: number) => ArrayLike<number>;
  /** A uniform draw in [0, 1). */
  uniform: () => number;
}

/** The outcome of one chain: `accepted` proposals kept, then `token` (a correction or the bonus). */
export interface ChainResult {
  /** How many proposals were accepted (0..K). */
  accepted: number;
  /** The token after them: drawn from the residual at the first rejection, or from `p_K` after K acceptances. */
  token: number;
}

/**
 * Runs the accept/reject chain (module docs).
 *
 * @example
 * ```ts
 * import { verifyChain } from "./speculative.ts";
 * const oneHot = (i: number) => [0, 1, 2].map((k) => k === i ? 1 : 0);
 * const argmax = [2, 0, 1];
 * verifyChain({ proposals: [2, 1], draft: [null, null], target: (j) => oneHot(argmax[j]), uniform: Math.random });
 * // { accepted: 1, token: 0 }: the first proposal matched, the second did not
 * ```
 */
export function verifyChain(input: ChainInput): ChainResult {
  const { proposals, draft } = input;
  if (draft.length !== proposals.length) {
    throw new RangeError(`verifyChain: ${draft.length} draft distributions for ${proposals.length} proposals`);
  }
  for (let j = 0; j < proposals.length; j++) {
    const p = input.target(j), q = draft[j], d = proposals[j];
    if (acceptProposal(p, q, d, input.uniform())) continue;
    return { accepted: j, token: sampleResidual(p, q, d, input.uniform()) };
  }
  return { accepted: proposals.length, token: sampleFrom(input.target(proposals.length), input.uniform()) };
}

/** Accepts proposal `d` drawn from `q` (null: certain) against `p` with the uniform `u`: `u · q(d) < p(d)`. */
export function acceptProposal(p: ArrayLike<number>, q: ArrayLike<number> | null, d: number, u: number): boolean {
  const qd = q === null ? 1 : q[d];
  // A draft never proposes what it gives no probability; if it did, p(d) / 0 would accept whatever p(d) > 0.
  if (!(qd > 0)) return p[d] > 0;
  return u * qd < p[d];
}

/**
 * Draws from `max(0, p − q)` normalised (q null: one-hot at `d`). If that is empty by rounding (p and q agree where
 * it matters), draws from `p`.
 */
export function sampleResidual(p: ArrayLike<number>, q: ArrayLike<number> | null, d: number, u: number): number {
  const n = p.length;
  const r = (i: number) => Math.max(0, p[i] - (q === null ? (i === d ? 1 : 0) : q[i]));
  let total = 0;
  for (let i = 0; i < n; i++) total += r(i);
  if (!(total > 0)) return sampleFrom(p, u);
  let target = u * total, last = -1;
  for (let i = 0; i < n; i++) {
    const w = r(i);
    if (w <= 0) continue;
    last = i;
    if (target < w) return i;
    target -= w;
  }
  return last; // rounding left the point past the end: the last id with weight
}

/** An inverse-CDF draw of `u` from `p` (probabilities, summing to about 1). */
export function sampleFrom(p: ArrayLike<number>, u: number): number {
  let total = 0;
  for (let i = 0; i < p.length; i++) total += p[i];
  let target = u * total, last = -1;
  for (let i = 0; i < p.length; i++) {
    if (!(p[i] > 0)) continue;
    last = i;
    if (target < p[i]) return i;
    target -= p[i];
  }
  if (last < 0) throw new RangeError("sampleFrom: the distribution has no mass");
  return last;
}
