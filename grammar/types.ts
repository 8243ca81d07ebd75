/**
 * The constraint interfaces the engine samples through: what a grammar offers a sequence, one token at a time.
 *
 * @module
 */

/**
 * A constraint on the output, shared by every sequence of a request. `grammar/` implements it; the engine only
 * calls it.
 */
export interface TokenConstraint {
  /** Fewest tokens of a complete output: a request with a smaller budget cannot be served. */
  readonly minTokens: number;
  /** A fresh matcher, at the start of the output, for one sequence. */
  matcher(): ConstraintMatcher;
}

/** One sequence's position in a {@link TokenConstraint}. */
export interface ConstraintMatcher {
  /**
   * Clears `mask` (bit `id & 31` of word `id >> 5` per id) and sets the ids allowed next, given `remaining` tokens
   * left including this one: each allowed id leaves room to complete the output within the rest.
   */
  fillMask(mask: Uint32Array, remaining: number): void;
  /** Consumes the sampled id (one the mask allowed); `remaining` is what `fillMask` was given. */
  advance(id: number, remaining: number): void;
  /** True when the output is complete and only end-of-sequence may follow. */
  readonly done: boolean;
}
