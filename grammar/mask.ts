/**
 * Token masks: which token ids a matcher allows next, as a bitmask over the vocabulary (`Uint32Array`, bit `id`
 * of word `id >> 5`; the layout a backend can upload as is).
 *
 * Precomputed once per vocabulary ({@link TokenIndex}):
 * - a byte trie of every text token, so the mask walk tries a shared prefix once and drops a whole subtree as soon
 *   as the matcher rejects a byte (the approach of llguidance, XGrammar and outlines);
 * - for strings, per lexer state, the tokens that stay inside the string whatever the grammar around it
 *   ("context-independent": a bitmask, with each token's character count and end state), and the tokens that
 *   close it, keyed by what follows the closing quote (a trie of those suffixes). Inside a string — where most
 *   steps of a JSON output are, and where nearly every token is allowed — the mask is a copy of a precomputed
 *   bitmask plus a walk over the few hundred tokens that contain a quote.
 *
 * Budget: with `remaining` tokens left (this one included), a token is allowed only if some parse after it can
 * still finish within `remaining − 1` bytes. Every single byte is a token, so a completion of n bytes always fits
 * in n tokens; that bound keeps the mask non-empty and the output complete (see `frame.ts`).
 *
 * @module
 */

import { complete, type Frame, isAccepting, sinkFrame, SPECIAL_BASE, totalNeed } from "./frame.ts";
import { FINISH, LEX_STATES, lexTable } from "./string_lexer.ts";
import { type CharAutomaton, StringNode } from "./string_node.ts";
import { ThinkNode } from "./sequence.ts";
import { maskWords } from "../ops/sample.ts";

/** What the index needs from a tokenizer (`chat/tokenizer.ts`'s `Tokenizer` provides it). */
export interface IndexTokenizer {
  /** Size of the id space (mask width). */
  readonly vocabSize: number;
  /** Ids below this decode; the rest are unused. */
  readonly usedVocabSize: number;
  /** Ids below this are control tokens. */
  readonly numSpecialTokens: number;
  /** `</s>`. */
  readonly eosId: number;
  /** Raw bytes of a text token. */
  tokenBytes(id: number): Uint8Array;
  /** A control token's id by name, or undefined. */
  maybeSpecialId(name: string): number | undefined;
}

/** Control tokens a grammar may contain, each a single symbol. */
export const GRAMMAR_SPECIALS = ["[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]"] as const;

/** Per-lexer-state tables of a plain string (see the module doc). */
interface StringTable {
  /** Tokens that stay inside the string. */
  ciMask: Uint32Array;
  ciIds: Int32Array;
  /** Characters each starts. */
  ciChars: Uint8Array;
  /** The lexer state each ends in. */
  ciEnd: Uint8Array;
  /** Largest of `ciChars`. */
  ciMaxChars: number;
  /** `upTo[c]`: the inside tokens of at most c characters (built on first use). */
  upTo: (Uint32Array | undefined)[];
  /** `finishUpTo[k]`: the inside tokens that end at most k bytes short of a character boundary. */
  finishUpTo: Uint32Array[];
  /** Tokens that close the string, by the bytes after the quote. */
  cd: SuffixTrie;
}

/** What one state of a pattern string allows, whatever surrounds the string (see {@link TokenIndex}). */
interface AutomatonEntry {
  /** Tokens that stay inside the string. */
  inside: Uint32Array;
  insideIds: Int32Array;
  /** Fewest bytes each leaves to finish the string, closing quote included. */
  insideNeed: Uint16Array;
  /** Largest of `insideNeed`. */
  maxNeed: number;
  /** Tokens that close the string (their prefix matches the pattern), by the bytes after the quote. */
  closing: SuffixTrie;
}

/**
 * Most cached states per pattern, and most token ids over all of them (about 6 bytes each, plus a 16 KB mask per
 * state): beyond either, masks of new states fall back to the plain trie walk (correct, just slower). A pattern with
 * a long length limit has a state per count, which must not turn into gigabytes.
 */
const MAX_AUTOMATON_ENTRIES = 1024;
const MAX_AUTOMATON_IDS = 4_000_000;

/** The cached states of one pattern. */
interface AutomatonCache {
  entries: Map<string, AutomatonEntry>;
  /** Token ids held over all entries. */
  ids: number;
}

/** The parent of a string analysed on its own: reaching it marks a closing quote. */
const MARKER_FRAME = sinkFrame();
const MARKER = MARKER_FRAME.node;

function newSuffixTrie(): SuffixTrie {
  return { next: [new Map()], ids: [[]], chars: [[]], quote: [[]] };
}

/** Adds a token to a suffix trie under `suffix`. */
function addSuffix(t: SuffixTrie, suffix: Uint8Array, id: number, chars: number, quote: number): void {
  let n = 0;
  for (const b of suffix) {
    let c = t.next[n].get(b);
    if (c === undefined) {
      c = t.next.length;
      t.next.push(new Map());
      t.ids.push([]);
      t.chars.push([]);
      t.quote.push([]);
      t.next[n].set(b, c);
    }
    n = c;
  }
  t.ids[n].push(id);
  t.chars[n].push(chars);
  t.quote[n].push(quote);
}

/** A trie of the bytes after a closing quote; each node lists the tokens whose suffix ends there. */
interface SuffixTrie {
  next: Map<number, number>[];
  /** Per node: token ids, characters before the quote, offset of the quote. */
  ids: number[][];
  chars: number[][];
  quote: number[][];
}

function setBit(mask: Uint32Array, id: number): void {
  mask[id >>> 5] |= 1 << (id & 31);
}

function hasBit(mask: Uint32Array, id: number): boolean {
  return (mask[id >>> 5] & (1 << (id & 31))) !== 0;
}

function fits(frames: Frame[], budget: number): boolean {
  for (const g of frames) if (totalNeed(g) <= budget) return true;
  return false;
}

const indexes = new WeakMap<IndexTokenizer, TokenIndex>();

/**
 * A vocabulary prepared for mask computation. Build it once per tokenizer ({@link TokenIndex.of} caches it).
 *
 * @example
 * ```ts
 * const index = TokenIndex.of(tokenizer);
 * const mask = new Uint32Array(index.maskWords);
 * index.fill(matcher.stacks, 100, mask); // ids allowed next, 100 tokens left
 * ```
 */
export class TokenIndex {
  /** Width of the id space. */
  readonly vocabSize: number;
  /** Words of a mask. */
  readonly maskWords: number;
  /** `</s>`. */
  readonly eosId: number;
  /** Symbol (`SPECIAL_BASE + id`) of each control token a grammar may use, by name; absent when missing. */
  readonly specialSyms: ReadonlyMap<string, number>;
  /** Every text token. */
  readonly textMask: Uint32Array;
  readonly #bytes: (Uint8Array | null)[];
  readonly #first: Int32Array;
  readonly #edgeByte: Uint8Array;
  readonly #edgeChild: Int32Array;
  readonly #token: Int32Array;
  readonly #end: Int32Array; // trie node → end of its subtree in preorder
  readonly #depth: Uint8Array;
  readonly #more = new Map<number, number[]>(); // trie node → further ids with the same bytes
  readonly #tables = new Map<number, StringTable>();
  readonly #automata = new WeakMap<CharAutomaton, AutomatonCache>();

  /** Indexes a tokenizer's vocabulary (about 0.2 s for 131k tokens). */
  constructor(tok: IndexTokenizer) {
    this.vocabSize = tok.vocabSize;
    this.maskWords = maskWords(tok.vocabSize);
    this.eosId = tok.eosId;
    const syms = new Map<string, number>();
    for (const name of GRAMMAR_SPECIALS) {
      const id = tok.maybeSpecialId(name);
      if (id !== undefined) syms.set(name, SPECIAL_BASE + id);
    }
    this.specialSyms = syms;
    this.#bytes = new Array(tok.usedVocabSize).fill(null);
    this.textMask = new Uint32Array(this.maskWords);
    // Tokens as binary strings (one char per byte): JavaScript's default sort orders them bytewise.
    const byKey = new Map<string, number[]>();
    let total = 0, longest = 0;
    for (let id = tok.numSpecialTokens; id < tok.usedVocabSize; id++) {
      const b = tok.tokenBytes(id);
      if (b.length === 0) continue;
      this.#bytes[id] = b;
      setBit(this.textMask, id);
      let key = "";
      for (let i = 0; i < b.length; i++) key += String.fromCharCode(b[i]);
      const same = byKey.get(key);
      if (same) same.push(id);
      else byKey.set(key, [id]);
      total += b.length;
      longest = Math.max(longest, b.length);
    }
    const keys = [...byKey.keys()].sort();
    // Sorted byte strings list the trie in preorder: each new string shares its prefix with the previous one.
    const parent = new Int32Array(total + 1), label = new Uint8Array(total + 1), token = new Int32Array(total + 1);
    parent[0] = -1;
    token[0] = -1;
    const path = new Int32Array(longest + 1);
    let n = 1;
    let prev = "";
    for (const s of keys) {
      let lcp = 0;
      while (lcp < s.length && lcp < prev.length && s.charCodeAt(lcp) === prev.charCodeAt(lcp)) lcp++;
      for (let d = lcp; d < s.length; d++) {
        parent[n] = path[d];
        label[n] = s.charCodeAt(d);
        token[n] = -1;
        path[d + 1] = n++;
      }
      const ids = byKey.get(s)!;
      token[path[s.length]] = ids[0];
      if (ids.length > 1) this.#more.set(path[s.length], ids.slice(1));
      prev = s;
    }
    this.#token = token.slice(0, n);
    this.#first = new Int32Array(n + 1);
    for (let v = 1; v < n; v++) this.#first[parent[v] + 1]++;
    for (let v = 0; v < n; v++) this.#first[v + 1] += this.#first[v];
    this.#edgeByte = new Uint8Array(n - 1);
    this.#edgeChild = new Int32Array(n - 1);
    this.#end = new Int32Array(n);
    this.#depth = new Uint8Array(n);
    for (let v = 0; v < n; v++) this.#end[v] = v + 1;
    for (let v = n - 1; v > 0; v--) this.#end[parent[v]] = Math.max(this.#end[parent[v]], this.#end[v]);
    for (let v = 1; v < n; v++) this.#depth[v] = this.#depth[parent[v]] + 1;
    const fill = this.#first.slice(0, n);
    // Children were created in byte order, so each node's edges come out sorted.
    for (let v = 1; v < n; v++) {
      const e = fill[parent[v]]++;
      this.#edgeByte[e] = label[v];
      this.#edgeChild[e] = v;
    }
  }

  /** The index of a tokenizer, built on first use and cached. */
  static of(tok: IndexTokenizer): TokenIndex {
    let index = indexes.get(tok);
    if (!index) indexes.set(tok, index = new TokenIndex(tok));
    return index;
  }

  /** Nodes in the token trie. */
  get trieSize(): number {
    return this.#token.length;
  }

  /** A text token's bytes, or null for a control or unused id. */
  bytes(id: number): Uint8Array | null {
    return this.#bytes[id] ?? null;
  }

  /** The symbols a token stands for: its bytes, or one control symbol; null when the grammar cannot use it. */
  symbols(id: number): ArrayLike<number> | null {
    const b = this.#bytes[id];
    if (b) return b;
    for (const sym of this.specialSyms.values()) if (sym === SPECIAL_BASE + id) return [sym];
    return null;
  }

  /**
   * Writes into `mask` (cleared first) the ids some parse in `stacks` allows next, given `remaining` tokens left
   * including this one.
   */
  fill(stacks: readonly Frame[], remaining: number, mask: Uint32Array): void {
    mask.fill(0);
    const budget = remaining - 1;
    for (const f of stacks) {
      if (f.node instanceof StringNode) {
        if (f.node.plain) this.#stringMask(f, f.node, budget, mask);
        else this.#automatonMask(f, f.node.automaton!, budget, mask);
      } else if (f.node instanceof ThinkNode) {
        if (1 + f.rest <= budget) orInto(mask, this.textMask);
      } else this.#walk(0, [f], budget, mask);
      for (const sym of this.specialSyms.values()) {
        const out: Frame[] = [];
        f.node.step(f, sym, out);
        if (out.length > 0 && fits(out, budget)) this.#set(mask, sym - SPECIAL_BASE);
      }
      if (isAccepting(f)) this.#set(mask, this.eosId);
    }
  }

  #set(mask: Uint32Array, id: number): void {
    if (id >>> 5 < mask.length) setBit(mask, id);
  }

  /** Sets the bits of a trie node's token(s). */
  #setNode(mask: Uint32Array, node: number): void {
    this.#set(mask, this.#token[node]);
    const more = this.#more.get(node);
    if (more) { for (const id of more) this.#set(mask, id); }
  }

  /** Depth-first walk of the token trie below `node`, the matcher advancing with each byte. */
  #walk(node: number, frames: Frame[], budget: number, mask: Uint32Array): void {
    const first = this.#first, edgeByte = this.#edgeByte, edgeChild = this.#edgeChild;
    for (let e = first[node], end = first[node + 1]; e < end; e++) {
      const byte = edgeByte[e];
      const next: Frame[] = [];
      for (const f of frames) f.node.step(f, byte, next);
      if (next.length === 0) continue;
      const child = edgeChild[e];
      if (this.#token[child] >= 0 && !hasBit(mask, this.#token[child]) && fits(next, budget)) {
        this.#setNode(mask, child);
      }
      if (first[child] < first[child + 1]) this.#walk(child, next, budget, mask);
    }
  }

  /** The tables of plain strings in lexer state `state` (built on first use). */
  stringTable(escapes: boolean, state: number): StringTable {
    const key = (escapes ? LEX_STATES : 0) + state;
    let t = this.#tables.get(key);
    if (!t) this.#tables.set(key, t = this.#buildTable(escapes, state));
    return t;
  }

  #buildTable(escapes: boolean, state: number): StringTable {
    const lex = lexTable(escapes);
    const ciMask = new Uint32Array(this.maskWords);
    const ciIds: number[] = [], ciChars: number[] = [], ciEnd: number[] = [];
    const cd = newSuffixTrie();
    let ciMaxChars = 0;
    for (let id = 0; id < this.#bytes.length; id++) {
      const b = this.#bytes[id];
      if (!b) continue;
      let st = state, chars = 0, closedAt = -1;
      for (let i = 0; i < b.length; i++) {
        const next = lex[st * 256 + b[i]];
        if (next === -1) {
          st = -1;
          break;
        }
        if (next === -2) {
          closedAt = i;
          break;
        }
        if (st === 0) chars++;
        st = next;
      }
      if (closedAt >= 0) addSuffix(cd, b.subarray(closedAt + 1), id, chars, closedAt);
      else if (st >= 0) {
        setBit(ciMask, id);
        ciIds.push(id);
        ciChars.push(chars);
        ciEnd.push(st);
        ciMaxChars = Math.max(ciMaxChars, chars);
      }
    }
    const finishUpTo = [0, 1, 2, 3].map(() => new Uint32Array(this.maskWords));
    ciIds.forEach((id, k) => {
      for (let f = FINISH[ciEnd[k]]; f < 4; f++) setBit(finishUpTo[f], id);
    });
    return {
      ciMask,
      ciIds: Int32Array.from(ciIds),
      ciChars: Uint8Array.from(ciChars),
      ciEnd: Uint8Array.from(ciEnd),
      ciMaxChars,
      upTo: [],
      finishUpTo,
      cd,
    };
  }

  /** The inside tokens of table `t` with at most `c` characters. */
  #upTo(t: StringTable, c: number): Uint32Array {
    let m = t.upTo[c];
    if (!m) {
      m = new Uint32Array(this.maskWords);
      for (let k = 0; k < t.ciIds.length; k++) if (t.ciChars[k] <= c) setBit(m, t.ciIds[k]);
      t.upTo[c] = m;
    }
    return m;
  }

  /** The mask of a plain string frame: precomputed inside tokens, then the tokens that close it. */
  #stringMask(f: Frame, node: StringNode, budget: number, mask: Uint32Array): void {
    const t = this.stringTable(node.escapes, f.s);
    const count = f.a;
    const minLeft = Math.max(0, node.minLength - count);
    const exclude = node.exclude !== null && f.x !== null;
    const room = node.maxLength - count;
    // Bytes left for finishing a partial character, once the quote and the missing characters are paid.
    const slack = budget - f.rest - 1 - minLeft - (exclude ? 2 : 0);
    if (room >= t.ciMaxChars && slack >= 4) {
      orInto(mask, t.ciMask);
    } else if (exclude) {
      for (const id of t.ciIds) if (this.#tokenFits(f, id, budget)) this.#set(mask, id);
    } else if (slack >= 4 || (minLeft === 0 && slack >= 0)) {
      // Only the character count bites (a prefix of the tokens by count), and near the end of the budget also
      // how far a token leaves the string from a character boundary.
      const byCount = room >= t.ciMaxChars ? t.ciMask : this.#upTo(t, room);
      if (slack >= 4) orInto(mask, byCount);
      else andOrInto(mask, byCount, t.finishUpTo[slack]);
    } else {
      const ids = t.ciIds, chars = t.ciChars, end = t.ciEnd;
      for (let k = 0; k < ids.length; k++) {
        const c = count + chars[k];
        if (c > node.maxLength) continue;
        if (FINISH[end[k]] + Math.max(0, node.minLength - c) + 1 + f.rest <= budget) this.#set(mask, ids[k]);
      }
    }
    // Closing tokens: the parse after the quote, walked over the suffixes; the string must be long enough (and
    // not an excluded name) at the quote.
    const closes = (cd: SuffixTrie, n: number, k: number) => {
      const c = count + cd.chars[n][k];
      if (c < node.minLength || c > node.maxLength) return false;
      if (!exclude) return true;
      const id = cd.ids[n][k];
      const key = (f.x as string) + String.fromCharCode(...this.#bytes[id]!.subarray(0, cd.quote[n][k]));
      return !node.exclude!.has(key);
    };
    this.#walkSuffix(0, [complete(f)], t.cd, budget, mask, closes);
  }

  /** Walks a suffix trie from the parses after a closing quote; `closes` filters each candidate token. */
  #walkSuffix(
    n: number,
    frames: Frame[],
    cd: SuffixTrie,
    budget: number,
    mask: Uint32Array,
    closes: ((cd: SuffixTrie, n: number, k: number) => boolean) | null,
  ): void {
    const ids = cd.ids[n];
    if (ids.length > 0 && fits(frames, budget)) {
      for (let k = 0; k < ids.length; k++) if (closes === null || closes(cd, n, k)) this.#set(mask, ids[k]);
    }
    for (const [byte, c] of cd.next[n]) {
      const next: Frame[] = [];
      for (const g of frames) g.node.step(g, byte, next);
      if (next.length > 0) this.#walkSuffix(c, next, cd, budget, mask, closes);
    }
  }

  /** The mask of a pattern string: the cached analysis of its state, then the closing tokens' suffixes. */
  #automatonMask(f: Frame, auto: CharAutomaton, budget: number, mask: Uint32Array): void {
    const e = this.#automatonEntry(f, auto);
    if (e === null) return this.#walk(0, [f], budget, mask);
    if (e.maxNeed + f.rest <= budget) orInto(mask, e.inside);
    else {
      for (let k = 0; k < e.insideIds.length; k++) {
        if (e.insideNeed[k] + f.rest <= budget) this.#set(mask, e.insideIds[k]);
      }
    }
    this.#walkSuffix(0, [complete(f)], e.closing, budget, mask, null);
  }

  /** What a pattern-string state allows, computed once by a trie walk that stops at the closing quote. */
  #automatonEntry(f: Frame, auto: CharAutomaton): AutomatonEntry | null {
    let cache = this.#automata.get(auto);
    if (!cache) this.#automata.set(auto, cache = { entries: new Map(), ids: 0 });
    const key = `${f.s}:${f.a}:${f.b}`;
    let e = cache.entries.get(key);
    if (e) return e;
    if (cache.entries.size >= MAX_AUTOMATON_ENTRIES || cache.ids >= MAX_AUTOMATON_IDS) return null;
    const start = { ...f, parent: MARKER_FRAME, rest: 0 };
    const inside = new Uint32Array(this.maskWords);
    const ids: number[] = [], needs: number[] = [];
    const closing = newSuffixTrie();
    const visit = (node: number, g: Frame) => {
      for (let edge = this.#first[node], end = this.#first[node + 1]; edge < end; edge++) {
        const out: Frame[] = [];
        g.node.step(g, this.#edgeByte[edge], out);
        const child = this.#edgeChild[edge];
        for (const h of out) {
          if (h.node === MARKER) {
            // The quote is the last byte of the path to `child`: every token below closes here.
            for (let v = child; v < this.#end[child]; v++) {
              for (const id of this.#idsAt(v)) {
                addSuffix(closing, this.#bytes[id]!.subarray(this.#depth[child]), id, 0, this.#depth[child] - 1);
              }
            }
          } else {
            for (const id of this.#idsAt(child)) {
              setBit(inside, id);
              ids.push(id);
              needs.push(h.node.need(h));
            }
            visit(child, h);
          }
        }
      }
    };
    visit(0, start);
    e = {
      inside,
      insideIds: Int32Array.from(ids),
      insideNeed: Uint16Array.from(needs),
      maxNeed: needs.reduce((a, b) => Math.max(a, b), 0),
      closing,
    };
    cache.entries.set(key, e);
    cache.ids += ids.length;
    return e;
  }

  /** The token ids of a trie node (usually none or one). */
  #idsAt(node: number): number[] {
    const id = this.#token[node];
    if (id < 0) return [];
    const more = this.#more.get(node);
    return more ? [id, ...more] : [id];
  }

  /** Whether token `id` is accepted from frame `f` with a parse that finishes within `budget`. */
  #tokenFits(f: Frame, id: number, budget: number): boolean {
    let frames = [f];
    for (const b of this.#bytes[id]!) {
      const next: Frame[] = [];
      for (const g of frames) g.node.step(g, b, next);
      if (next.length === 0) return false;
      frames = next;
    }
    return fits(frames, budget);
  }
}

function orInto(mask: Uint32Array, src: Uint32Array): void {
  const n = Math.min(mask.length, src.length);
  for (let i = 0; i < n; i++) mask[i] |= src[i];
}

function andOrInto(mask: Uint32Array, a: Uint32Array, b: Uint32Array): void {
  const n = Math.min(mask.length, a.length);
  for (let i = 0; i < n; i++) mask[i] |= a[i] & b[i];
}
