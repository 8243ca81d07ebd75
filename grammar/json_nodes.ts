/**
 * Grammar nodes for JSON values: objects (declared properties in order, then additional ones), arrays (tuple
 * prefix, item schema, length limits), literal alternatives (`enum`, `const`, `true`/`false`/`null`), unions
 * (`anyOf`) and references (`$ref`, possibly recursive). Strings and numbers have files of their own.
 *
 * Objects emit their declared properties in the schema's order (optional ones may be skipped), then additional
 * properties when allowed. A fixed order is what constrained decoders commonly do (and OpenAI's strict mode): it
 * keeps the grammar deterministic and the shortest completion easy to compute, and any order is valid JSON.
 *
 * @module
 */

import { ByteTrie } from "./byte_trie.ts";
import { again, complete, type Frame, frame, GrammarNode, SPACE, utf8 } from "./frame.ts";
import { StringNode } from "./string_node.ts";

const enum Obj {
  OPEN,
  AFTER_KEY,
  AFTER_COLON,
  AFTER_VALUE,
  AFTER_COMMA,
  AWAIT_KEY,
  AWAIT_VALUE,
}

/** One declared property. */
export interface PropertySpec {
  /** The property name. */
  name: string;
  /** Its value's grammar. */
  value: GrammarNode;
  /** Whether it must appear. */
  required: boolean;
}

/**
 * An object. Frame: `s` phase, `a` index of the next declared property that may appear, `b` 1 after the one space
 * allowed after `:` or `,` (see {@link SPACE}), `c` the property whose value comes next (-1: an additional one).
 */
export class ObjectNode extends GrammarNode {
  /** Declared properties, in emission order. */
  readonly props: PropertySpec[];
  /** Schema of additional properties, or null when none are allowed. */
  readonly additional: GrammarNode | null;
  /** Matches a declared key (after its opening quote). */
  readonly keyNode: KnownKeyNode;
  /** Matches an additional key: any string but a declared name. */
  readonly freeKey: StringNode | null;
  readonly #keys: Uint8Array[];
  #afterValue = new Float64Array(0);
  #keyStart = new Float64Array(0);
  #reqCount = new Int32Array(0);
  #tries: (ByteTrie | null)[] = [];

  /** An object with these properties; `additional` null forbids others. */
  constructor(props: PropertySpec[], additional: GrammarNode | null) {
    super();
    this.props = props;
    this.additional = additional;
    this.#keys = props.map((p) => utf8(JSON.stringify(p.name)));
    this.keyNode = new KnownKeyNode(this);
    const names = new Set(props.map((p) => String.fromCharCode(...utf8(p.name))));
    this.freeKey = additional ? new StringNode({ escapes: false, exclude: names }) : null;
  }

  override children(): GrammarNode[] {
    const out = this.props.map((p) => p.value);
    if (this.additional) out.push(this.additional, this.freeKey!);
    return out;
  }

  #member(j: number): number {
    return this.#keys[j].length + 1 + this.props[j].value.minBytes;
  }

  override computeMin(): number {
    let sum = 0, count = 0;
    for (let j = 0; j < this.props.length; j++) {
      if (!this.props[j].required) continue;
      sum += this.#member(j);
      count++;
    }
    return count === 0 ? 2 : 2 + sum + count - 1;
  }

  override finalize(): void {
    const n = this.props.length;
    this.#reqCount = new Int32Array(n + 1);
    const reqSum = new Float64Array(n + 1);
    for (let j = n - 1; j >= 0; j--) {
      const req = this.props[j].required ? 1 : 0;
      this.#reqCount[j] = this.#reqCount[j + 1] + req;
      reqSum[j] = reqSum[j + 1] + (req ? this.#member(j) : 0);
    }
    this.#afterValue = new Float64Array(n + 1);
    for (let i = 0; i <= n; i++) {
      this.#afterValue[i] = this.#reqCount[i] > 0 ? reqSum[i] + this.#reqCount[i] + 1 : 1;
    }
    this.#keyStart = new Float64Array(n + 1);
    this.#tries = new Array(n + 1).fill(null);
    for (let i = 0; i <= n; i++) {
      let best = this.#freeAllowed(i) ? this.#freeMember() + 1 : Infinity;
      for (const j of this.#candidates(i)) best = Math.min(best, this.#member(j) + this.#afterValue[j + 1]);
      this.#keyStart[i] = best;
    }
  }

  /** Declared properties that may come next at index `i`: up to and including the first required one. */
  #candidates(i: number): number[] {
    const out: number[] = [];
    for (let j = i; j < this.props.length; j++) {
      if (this.props[j].value.minBytes < Infinity) out.push(j);
      if (this.props[j].required) break;
    }
    return out;
  }

  #freeAllowed(i: number): boolean {
    return this.additional !== null && this.additional.minBytes < Infinity && this.#reqCount[i] === 0;
  }

  /** Fewest bytes of an additional member: key, colon, value. */
  #freeMember(): number {
    return this.freeKey!.minBytes + 1 + this.additional!.minBytes;
  }

  /** The trie of keys that may start at index `i` (built on first use). */
  keyTrie(i: number): ByteTrie {
    let t = this.#tries[i];
    if (t === null) {
      t = new ByteTrie();
      for (const j of this.#candidates(i)) t.add(this.#keys[j], j);
      t.finish((j) => 1 + this.props[j].value.minBytes + this.#afterValue[j + 1]);
      this.#tries[i] = t;
    }
    return t;
  }

  /** The value grammar of property `prop` (-1: an additional property). */
  #valueNode(prop: number): GrammarNode {
    return prop < 0 ? this.additional! : this.props[prop].value;
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    if (sym === 0x7b) out.push(frame(this, Obj.OPEN, 0, 0, -1, null, parent, rest));
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    const i = f.a;
    // Other whitespace bytes match no case below, and no value starts with one.
    if (sym === SPACE) {
      if (f.b === 0 && (f.s === Obj.AFTER_COLON || f.s === Obj.AFTER_COMMA)) out.push(again(f, f.s, i, 1));
      return;
    }
    switch (f.s) {
      case Obj.OPEN:
        if (sym === 0x7d && this.#reqCount[0] === 0) out.push(complete(f));
        else if (sym === 0x22) this.#startKey(f, out);
        return;
      case Obj.AFTER_KEY:
        if (sym === 0x3a) out.push(again(f, Obj.AFTER_COLON, i, 0));
        return;
      case Obj.AFTER_COLON: {
        const parent = again(f, Obj.AWAIT_VALUE, i, 0);
        this.#valueNode(f.c).start(sym, parent, this.#afterValue[i] + f.rest, out);
        return;
      }
      case Obj.AFTER_VALUE:
        if (sym === 0x2c && this.#keyStart[i] < Infinity) out.push(again(f, Obj.AFTER_COMMA, i, 0));
        else if (sym === 0x7d && this.#reqCount[i] === 0) out.push(complete(f));
        return;
      case Obj.AFTER_COMMA:
        if (sym === 0x22) this.#startKey(f, out);
        return;
    }
  }

  /** On a key's opening quote: a declared key and/or an additional one (two parses when both are possible). */
  #startKey(f: Frame, out: Frame[]): void {
    const i = f.a;
    const parent = again(f, Obj.AWAIT_KEY, i, 0);
    const trie = this.keyTrie(i);
    const first = trie.child(0, 0x22);
    if (first >= 0) out.push(frame(this.keyNode, first, 0, 0, 0, trie, parent, f.rest));
    if (this.#freeAllowed(i)) this.freeKey!.start(0x22, parent, 1 + this.additional!.minBytes + 1 + f.rest, out);
  }

  override need(f: Frame): number {
    const i = f.a;
    switch (f.s) {
      case Obj.OPEN:
        return Math.min(this.#reqCount[0] === 0 ? 1 : Infinity, this.#keyStart[0]);
      case Obj.AFTER_KEY:
        return 1 + this.#valueNode(f.c).minBytes + this.#afterValue[i];
      case Obj.AFTER_COLON:
        return this.#valueNode(f.c).minBytes + this.#afterValue[i];
      case Obj.AFTER_VALUE:
        return this.#afterValue[i];
      case Obj.AFTER_COMMA:
        return this.#keyStart[i];
      default:
        return 0;
    }
  }

  override resume(f: Frame, child: Frame): Frame {
    if (child.node === this.keyNode) {
      const j = (child.x as ByteTrie).term[child.s];
      return again(f, Obj.AFTER_KEY, j + 1, 0, j);
    }
    if (child.node === this.freeKey) return again(f, Obj.AFTER_KEY, this.props.length, 0, -1);
    return again(f, Obj.AFTER_VALUE, f.a, 0, -1);
  }
}

/** A declared key, after its opening quote. Frame: `s` trie node, `x` the trie. */
export class KnownKeyNode extends GrammarNode {
  /** The object whose keys these are. */
  readonly owner: ObjectNode;

  /** The key matcher of `owner`. */
  constructor(owner: ObjectNode) {
    super();
    this.owner = owner;
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    const trie = f.x as ByteTrie;
    const c = trie.child(f.s, sym);
    if (c < 0) return;
    const g = again(f, c, 0, 0);
    // A quoted key is never a prefix of another: its closing quote ends it.
    out.push(trie.term[c] >= 0 ? complete(g) : g);
  }

  override need(f: Frame): number {
    return (f.x as ByteTrie).need[f.s];
  }
}

const enum Arr {
  OPEN,
  AFTER_ITEM,
  AFTER_COMMA,
  AWAIT,
}

/** An array. Frame: `s` phase, `a` items so far, `b` 1 after the one space allowed after `,`. */
export class ArrayNode extends GrammarNode {
  /** Schemas of the first items (`prefixItems`). */
  readonly prefix: GrammarNode[];
  /** Schema of the items after the prefix, or null when there may be none. */
  readonly items: GrammarNode | null;
  /** Fewest items. */
  readonly minItems: number;
  /** Most items, as the schema states it. */
  readonly maxItems: number;
  #max = 0;
  #afterItem = new Float64Array(0);

  /** An array; `items` null allows only the prefix. */
  constructor(prefix: GrammarNode[], items: GrammarNode | null, minItems: number, maxItems: number) {
    super();
    this.prefix = prefix;
    this.items = items;
    this.minItems = minItems;
    this.maxItems = maxItems;
  }

  override children(): GrammarNode[] {
    return this.items ? [...this.prefix, this.items] : [...this.prefix];
  }

  #itemAt(p: number): GrammarNode | null {
    return p < this.prefix.length ? this.prefix[p] : this.items;
  }

  /** Most items that can actually be written (an impossible item schema ends the array before it). */
  #effectiveMax(): number {
    let max = this.maxItems;
    for (let p = 0; p < this.prefix.length && p < max; p++) if (!(this.prefix[p].minBytes < Infinity)) max = p;
    if (max > this.prefix.length && !(this.items && this.items.minBytes < Infinity)) max = this.prefix.length;
    return max;
  }

  override computeMin(): number {
    const max = this.#effectiveMax();
    if (this.minItems > max) return Infinity;
    let sum = 2;
    for (let p = 0; p < this.minItems; p++) sum += this.#itemAt(p)!.minBytes + (p > 0 ? 1 : 0);
    return sum;
  }

  override finalize(): void {
    this.#max = this.#effectiveMax();
    const m = this.minItems;
    this.#afterItem = new Float64Array(m + 1);
    this.#afterItem[m] = 1;
    for (let c = m - 1; c >= 0; c--) this.#afterItem[c] = 1 + this.#itemAt(c)!.minBytes + this.#afterItem[c + 1];
  }

  /** Fewest bytes after `c` items, the closing bracket included. */
  #after(c: number): number {
    return c >= this.minItems ? 1 : this.#afterItem[c];
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    if (sym === 0x5b) out.push(frame(this, Arr.OPEN, 0, 0, 0, null, parent, rest));
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    const c = f.a;
    if (f.s === Arr.AWAIT) return;
    if (sym === SPACE) {
      if (f.b === 0 && f.s === Arr.AFTER_COMMA) out.push(again(f, f.s, c, 1));
      return;
    }
    if (f.s === Arr.AFTER_ITEM) {
      if (sym === 0x2c && c < this.#max) out.push(again(f, Arr.AFTER_COMMA, c, 0));
      else if (sym === 0x5d && c >= this.minItems) out.push(complete(f));
      return;
    }
    if (f.s === Arr.OPEN && sym === 0x5d) {
      if (this.minItems === 0) out.push(complete(f));
      return;
    }
    if (c < this.#max) this.#itemAt(c)!.start(sym, again(f, Arr.AWAIT, c, 0), this.#after(c + 1) + f.rest, out);
  }

  override need(f: Frame): number {
    const c = f.a;
    switch (f.s) {
      case Arr.OPEN:
        return this.minItems === 0 ? 1 : this.#itemAt(0)!.minBytes + this.#after(1);
      case Arr.AFTER_ITEM:
        return this.#after(c);
      case Arr.AFTER_COMMA:
        return this.#itemAt(c)!.minBytes + this.#after(c + 1);
      default:
        return 0;
    }
  }

  override resume(f: Frame, _child: Frame): Frame {
    return again(f, Arr.AFTER_ITEM, f.a + 1, 0);
  }
}

/** One of a fixed set of JSON texts (`enum`, `const`, `true`, …), written compactly. Frame: `s` trie node. */
export class LiteralNode extends GrammarNode {
  /** The alternatives' bytes. */
  trie: ByteTrie = new ByteTrie();
  /** The alternatives as JSON texts. */
  texts: string[] = [];

  /** Literal alternatives from their JSON texts. */
  constructor(texts: string[]) {
    super();
    this.#build(texts);
  }

  /** Keeps only the alternatives `keep` accepts (an `enum` filtered by the schema's other keywords). */
  retain(keep: (text: string) => boolean): void {
    this.#build(this.texts.filter(keep));
  }

  #build(texts: string[]): void {
    this.texts = texts;
    this.trie = new ByteTrie();
    for (const t of texts) this.trie.add(utf8(t), 0);
    this.trie.finish(() => 0);
  }

  override computeMin(): number {
    return this.trie.need[0];
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    const c = this.trie.child(0, sym);
    if (c >= 0) this.#enter(frame(this, c, 0, 0, 0, null, parent, rest), out);
  }

  #enter(g: Frame, out: Frame[]): void {
    // A terminal with no longer alternative is complete at once; `1` of [1, 10] waits for what follows.
    out.push(this.trie.term[g.s] >= 0 && this.trie.isLeaf(g.s) ? complete(g) : g);
  }

  override step(f: Frame, sym: number, out: Frame[]): void {
    const c = this.trie.child(f.s, sym);
    if (c >= 0) this.#enter(again(f, c, 0, 0), out);
    if (this.trie.term[f.s] >= 0) {
      const p = complete(f);
      p.node.step(p, sym, out);
    }
  }

  override canEnd(f: Frame): boolean {
    return this.trie.term[f.s] >= 0;
  }

  override need(f: Frame): number {
    return this.trie.need[f.s];
  }
}

/** Any of several alternatives (`anyOf`, a list of types). Never has frames of its own. */
export class UnionNode extends GrammarNode {
  /** The alternatives. */
  alts: GrammarNode[];

  /** A union of `alts`. */
  constructor(alts: GrammarNode[]) {
    super();
    this.alts = alts;
  }

  override children(): GrammarNode[] {
    return this.alts;
  }

  override computeMin(): number {
    return Math.min(...this.alts.map((a) => a.minBytes));
  }

  override finalize(): void {
    // Branches with no instance would only add dead parses.
    this.alts = this.alts.filter((a) => a.minBytes < Infinity);
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    for (const a of this.alts) a.start(sym, parent, rest, out);
  }

  override step(): void {}

  override need(): number {
    return 0;
  }
}

/** A reference resolved after compilation (`$ref`), which lets schemas be recursive. */
export class RefNode extends GrammarNode {
  /** What it refers to; set once the target is compiled. */
  target: GrammarNode | null = null;

  override children(): GrammarNode[] {
    return this.target ? [this.target] : [];
  }

  override computeMin(): number {
    return this.target!.minBytes;
  }

  override start(sym: number, parent: Frame, rest: number, out: Frame[]): void {
    this.target!.start(sym, parent, rest, out);
  }

  override step(): void {}

  override need(): number {
    return 0;
  }
}
