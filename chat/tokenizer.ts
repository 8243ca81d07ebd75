/**
 * The tekken tokenizer: tiktoken-style byte-level BPE over a `tekken.json` file of any version.
 *
 * Ids: control tokens take ids `0 .. numSpecialTokens-1`; a text token of rank `r` has id `r + numSpecialTokens`.
 * Only the first `vocabSize − numSpecialTokens` ranks are used (mistral-common truncates the same way).
 *
 * @module
 */

import { bytePairEncode, type Ranks } from "./bpe.ts";

/** The control tokens of every tekken file, ids 0–19 (mistral-common's `DEPRECATED_SPECIAL_TOKENS`). */
const V3_SPECIAL_TOKENS = [
  "<unk>",
  "<s>",
  "</s>",
  "[INST]",
  "[/INST]",
  "[AVAILABLE_TOOLS]",
  "[/AVAILABLE_TOOLS]",
  "[TOOL_RESULTS]",
  "[/TOOL_RESULTS]",
  "[TOOL_CALLS]",
  "[IMG]",
  "<pad>",
  "[IMG_BREAK]",
  "[IMG_END]",
  "[PREFIX]",
  "[MIDDLE]",
  "[SUFFIX]",
  "[SYSTEM_PROMPT]",
  "[/SYSTEM_PROMPT]",
  "[TOOL_CONTENT]",
];

/** The shape of a `tekken.json` file (the fields we read). */
export interface TekkenFile {
  /** Pre-tokenizer pattern, vocabulary sizes and version. */
  config: {
    pattern: string;
    num_vocab_tokens?: number;
    default_vocab_size?: number;
    default_num_special_tokens?: number;
    version?: string;
  };
  /** Ranks with their bytes (base64). */
  vocab: { rank: number; token_bytes: string; token_str?: string | null }[];
  /** v7+: control tokens by rank. */
  special_tokens?: { rank: number; token_str: string; is_control?: boolean }[];
  /** Vision settings (Pixtral-style models). */
  image?: { image_patch_size?: number; max_image_size?: number; spatial_merge_size?: number } | null;
  /** v15: allowed `[MODEL_SETTINGS]` values. */
  model_settings_builder?: Record<string, unknown> | null;
}

/**
 * `file` as the text of a `tekken.json` laid out as Mistral's releases ship it: every vocab entry with its
 * `token_str` (the bytes as UTF-8, null when they are not valid UTF-8), one entry per line. {@link Tokenizer.fromFile}
 * reads it back to the same tokenizer.
 *
 * @example
 * ```ts ignore
 * await Deno.writeTextFile("tekken.json", tekkenJson(file));
 * ```
 */
export function tekkenJson(file: TekkenFile): string {
  const strict = new TextDecoder("utf-8", { fatal: true });
  const tokenStr = (b64: string): string | null => {
    const binary = atob(b64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    try {
      return strict.decode(bytes);
    } catch {
      return null;
    }
  };
  const lines = (entries: readonly unknown[]) => entries.map((e) => "    " + JSON.stringify(e)).join(",\n");
  const vocab = file.vocab.map((v) => ({
    rank: v.rank,
    token_bytes: v.token_bytes,
    token_str: tokenStr(v.token_bytes),
  }));
  const { config, vocab: _vocab, special_tokens, ...rest } = file;
  const parts = [
    `  "config": ${JSON.stringify(config, null, 2).replaceAll("\n", "\n  ")}`,
    `  "vocab": [\n${lines(vocab)}\n  ]`,
  ];
  if (special_tokens) parts.push(`  "special_tokens": [\n${lines(special_tokens)}\n  ]`);
  for (const [key, value] of Object.entries(rest)) {
    if (value === undefined) continue;
    parts.push(`  ${JSON.stringify(key)}: ${JSON.stringify(value, null, 2).replaceAll("\n", "\n  ")}`);
  }
  return `{\n${parts.join(",\n")}\n}\n`;
}

/** Image settings carried by the tokenizer file (Pixtral-style vision). */
export interface TokenizerImageConfig {
  /** Pixels per patch side (14). */
  patchSize: number;
  /** Longest image side before downscaling (1540). */
  maxImageSize: number;
  /** Patches merged per token side (2). */
  spatialMergeSize: number;
}

/** How `decode` treats control tokens: drop them, or write them by name. */
export type SpecialsPolicy = "skip" | "keep";

/** Pieces cached per tokenizer; cleared when full so memory stays bounded on adversarial input. */
const PIECE_CACHE_LIMIT = 100_000;

/**
 * A tekken tokenizer.
 *
 * @example
 * ```ts
 * const tok = await Tokenizer.fromFile("tekken.json");
 * const ids = tok.encode("Hello, world!");
 * tok.decode(ids); // "Hello, world!"
 * tok.specialId("[THINK]"); // 34 for Mistral Small 4
 * ```
 */
export class Tokenizer {
  /** Tokenizer version from the file (`"v3"`, `"v7"`, …, `"v15"`). */
  readonly version: string;
  /** Total id space, control tokens included (131072). */
  readonly vocabSize: number;
  /** Number of control-token ids; text id = rank + this. */
  readonly numSpecialTokens: number;
  /** Image settings from the file's `image` block, if any. */
  readonly image: TokenizerImageConfig | null;
  /** The raw `model_settings_builder` block (v15), if any. */
  readonly modelSettings: Record<string, unknown> | null;
  /** `<s>` */
  readonly bosId: number;
  /** `</s>` */
  readonly eosId: number;
  /** `<pad>` */
  readonly padId: number;
  /** `<unk>` */
  readonly unkId: number;

  private readonly ranks: Ranks;
  private readonly tokens: Uint8Array[];
  private readonly specialNames: string[];
  private readonly specialIds: Map<string, number>;
  private readonly pattern: RegExp;
  private readonly pieceCache = new Map<string, number[]>();
  private readonly utf8 = new TextEncoder();

  private constructor(file: TekkenFile) {
    const cfg = file.config;
    if (!cfg || typeof cfg.pattern !== "string" || !Array.isArray(file.vocab)) {
      throw new Error("tokenizer: not a tekken file (needs config.pattern and vocab)");
    }
    this.version = cfg.version ?? "v3";
    this.numSpecialTokens = cfg.default_num_special_tokens ?? 1000;
    this.vocabSize = cfg.default_vocab_size ?? 131072;
    const used = Math.min(this.vocabSize - this.numSpecialTokens, file.vocab.length);
    this.ranks = new Map();
    this.tokens = new Array(used);
    for (let r = 0; r < used; r++) {
      const entry = file.vocab[r];
      if (entry.rank !== r) throw new Error(`tokenizer: vocab entry ${r} has rank ${entry.rank}; ranks must be 0..n-1`);
      const binary = atob(entry.token_bytes);
      this.ranks.set(binary, r);
      const bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      this.tokens[r] = bytes;
    }
    this.specialNames = new Array(this.numSpecialTokens);
    for (let i = 0; i < this.numSpecialTokens; i++) this.specialNames[i] = `<SPECIAL_${i}>`;
    if (file.special_tokens) {
      for (const s of file.special_tokens) {
        if (s.rank < this.numSpecialTokens) this.specialNames[s.rank] = s.token_str;
      }
    } else {
      V3_SPECIAL_TOKENS.forEach((name, i) => this.specialNames[i] = name);
    }
    this.specialIds = new Map(this.specialNames.map((name, i) => [name, i]));
    this.pattern = new RegExp(cfg.pattern, "gu");
    const img = file.image;
    this.image = img
      ? {
        patchSize: img.image_patch_size ?? 16,
        maxImageSize: img.max_image_size ?? 1024,
        spatialMergeSize: img.spatial_merge_size ?? 1,
      }
      : null;
    this.modelSettings = file.model_settings_builder ?? null;
    this.bosId = this.specialId("<s>");
    this.eosId = this.specialId("</s>");
    this.padId = this.specialId("<pad>");
    this.unkId = this.specialId("<unk>");
  }

  /** Reads a `tekken.json` file. */
  static async fromFile(path: string | URL): Promise<Tokenizer> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new Error(`tokenizer: cannot read ${path}: ${(e as Error).message}`);
    }
    let json: TekkenFile;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new Error(`tokenizer: ${path} is not JSON: ${(e as Error).message}`);
    }
    return Tokenizer.fromJSON(json);
  }

  /** Builds a tokenizer from a parsed `tekken.json`. */
  static fromJSON(file: TekkenFile): Tokenizer {
    return new Tokenizer(file);
  }

  /** Encodes text to ids, without BOS/EOS. Control tokens are never produced: `"[INST]"` is plain text. */
  encode(text: string): number[] {
    const out: number[] = [];
    const offset = this.numSpecialTokens;
    const re = this.pattern;
    re.lastIndex = 0;
    for (let match = re.exec(text); match !== null; match = re.exec(text)) {
      const piece = match[0];
      let ranks = this.pieceCache.get(piece);
      if (ranks === undefined) {
        ranks = bytePairEncode(this.toBinary(piece), this.ranks);
        if (this.pieceCache.size >= PIECE_CACHE_LIMIT) this.pieceCache.clear();
        this.pieceCache.set(piece, ranks);
      }
      for (let i = 0; i < ranks.length; i++) out.push(ranks[i] + offset);
    }
    return out;
  }

  /** Decodes ids to text. Control tokens are skipped (default) or written by name. Invalid UTF-8 becomes U+FFFD. */
  decode(ids: readonly number[], opts: { specials?: SpecialsPolicy } = {}): string {
    return new TextDecoder().decode(this.decodeBytes(ids, opts));
  }

  /** Decodes ids to raw bytes (control tokens skipped, or their names' UTF-8 when kept). */
  decodeBytes(ids: readonly number[], opts: { specials?: SpecialsPolicy } = {}): Uint8Array {
    const parts: Uint8Array[] = [];
    let length = 0;
    for (const id of ids) {
      const bytes = this.isSpecial(id)
        ? (opts.specials === "keep" ? this.utf8.encode(this.specialName(id)) : null)
        : this.tokenBytes(id);
      if (bytes) {
        parts.push(bytes);
        length += bytes.length;
      }
    }
    const out = new Uint8Array(length);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** The raw bytes of a text token; empty for a control token. Throws on an id outside the vocabulary. */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    if (id < this.numSpecialTokens) return new Uint8Array(0);
    return this.tokens[id - this.numSpecialTokens];
  }

  /** The id of a control token by name, e.g. `"[INST]"`. Throws when the file has no such token. */
  specialId(name: string): number {
    const id = this.specialIds.get(name);
    if (id === undefined) {
      throw new Error(`tokenizer: no control token ${name} in this tekken file (version ${this.version})`);
    }
    return id;
  }

  /** The id of a control token, or undefined when the file lacks it. */
  maybeSpecialId(name: string): number | undefined {
    return this.specialIds.get(name);
  }

  /** True for control-token ids. */
  isSpecial(id: number): boolean {
    return id >= 0 && id < this.numSpecialTokens;
  }

  /** The name of a control-token id (`<SPECIAL_n>` for unnamed slots). */
  specialName(id: number): string {
    if (!this.isSpecial(id)) throw new Error(`tokenizer: id ${id} is not a control token`);
    return this.specialNames[id];
  }

  /** Number of ids that actually decode (control + used text ranks); ids at or above it are invalid. */
  get usedVocabSize(): number {
    return this.numSpecialTokens + this.tokens.length;
  }

  /** Throws a RangeError for ids outside the used vocabulary. */
  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.usedVocabSize) {
      throw new RangeError(`tokenizer: id ${id} is outside the vocabulary (0..${this.usedVocabSize - 1})`);
    }
  }

  /** UTF-8 bytes of `s` as a binary string (one char per byte), the key type of the rank table. */
  private toBinary(s: string): string {
    let ascii = true;
    for (let i = 0; i < s.length; i++) {
      if (s.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return s;
    const bytes = this.utf8.encode(s);
    let out = "";
    for (let i = 0; i < bytes.length; i++) out += String.fromCharCode(bytes[i]);
    return out;
  }
}

/**
 * Incremental detokenizer: returns only complete UTF-8 text, holding back a multi-byte character split across
 * tokens until its last byte arrives (never a mid-stream U+FFFD for a split character).
 *
 * @example
 * ```ts
 * const dec = new StreamDecoder(tok);
 * let text = "";
 * for (const id of ids) text += dec.push(id);
 * text += dec.finish();
 * ```
 */
export class StreamDecoder {
  private decoder = new TextDecoder();
  private readonly tok: Tokenizer;
  private readonly opts: { specials?: SpecialsPolicy };

  /** A decoder over `tok`; control tokens are skipped unless `specials: "keep"`. */
  constructor(tok: Tokenizer, opts: { specials?: SpecialsPolicy } = {}) {
    this.tok = tok;
    this.opts = opts;
  }

  /** Feeds one id; returns the text it completes. */
  push(id: number): string {
    if (this.tok.isSpecial(id)) {
      if (this.opts.specials !== "keep") return "";
      // A control token ends any pending partial character: flush it, then the name.
      return this.decoder.decode() + this.tok.specialName(id);
    }
    return this.decoder.decode(this.tok.tokenBytes(id), { stream: true });
  }

  /** Flushes held-back bytes (an incomplete character at the very end becomes U+FFFD). */
  finish(): string {
    return this.decoder.decode();
  }
}
