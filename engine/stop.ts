/**
 * Stop strings over streamed text: output ends just before the first occurrence of any stop string, and text that
 * could still turn into one is held back, so a streaming client never sees text that a longer output would cut.
 * The stream is a list of pieces (parser deltas) of which only some carry text; pieces without text keep their
 * place in the order.
 *
 * @module
 */

/** How to read and cut the text of a piece. */
export interface PieceText<P> {
  /** The piece's text ("" for pieces without text). */
  text(piece: P): string;
  /** The same piece with its text replaced (used to split a piece at a cut). */
  withText(piece: P, text: string): P;
}

/**
 * Finds stop strings across piece boundaries.
 *
 * @example
 * ```ts
 * const m = new StopMatcher<string>(["\n\n"], { text: (s) => s, withText: (_s, t) => t });
 * m.push(["Hello\n"]);   // [] — "\n" might start "\n\n"
 * m.push(["\nWorld"]);   // ["Hello"], and m.stopped === "\n\n"
 * ```
 */
export class StopMatcher<P> {
  readonly #stops: string[];
  readonly #io: PieceText<P>;
  readonly #longest: number;
  #pending: P[] = [];
  #pendingText = "";
  /** The stop string that matched, once one has. */
  stopped: string | null = null;

  /** `stops`: the strings to stop at (empty ones are ignored). */
  constructor(stops: readonly string[], io: PieceText<P>) {
    this.#stops = stops.filter((s) => s !== "");
    this.#io = io;
    this.#longest = Math.max(0, ...this.#stops.map((s) => s.length));
  }

  /** Adds pieces; returns those now certain. After a match, returns the text before it and ignores the rest. */
  push(pieces: readonly P[]): P[] {
    if (this.stopped !== null) return [];
    if (this.#stops.length === 0) return [...pieces];
    for (const p of pieces) {
      this.#pending.push(p);
      this.#pendingText += this.#io.text(p);
    }
    const text = this.#pendingText;
    let at = -1;
    for (const s of this.#stops) {
      const i = text.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        this.stopped = s;
      }
    }
    if (at >= 0) {
      const out = this.#take(at);
      this.#pending = [];
      this.#pendingText = "";
      return out;
    }
    return this.#take(text.length - this.#heldLength(text));
  }

  /** Ends the stream: held-back text is released (it never became a stop string). */
  finish(): P[] {
    const out = this.#pending;
    this.#pending = [];
    this.#pendingText = "";
    return out;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  #heldLength(text: string): number {
    for (let n = Math.min(text.length, this.#longest - 1); n > 0; n--) {
      const tail = text.slice(text.length - n);
      if (this.#stops.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }

  /** Removes and returns the pending pieces covering the first `cut` characters, splitting one if needed. */
  #take(cut: number): P[] {
    const out: P[] = [];
    let pos = 0;
    let i = 0;
    for (; i < this.#pending.length; i++) {
      const p = this.#pending[i];
      const t = this.#io.text(p);
      if (pos + t.length <= cut) {
        // Pieces without text right at the cut go out too: they precede whatever text is held.
        out.push(p);
        pos += t.length;
        continue;
      }
      if (pos < cut) {
        out.push(this.#io.withText(p, t.slice(0, cut - pos)));
        this.#pending[i] = this.#io.withText(p, t.slice(cut - pos));
      }
      break;
    }
    this.#pending = this.#pending.slice(i);
    this.#pendingText = this.#pendingText.slice(cut);
    return out;
  }
}
