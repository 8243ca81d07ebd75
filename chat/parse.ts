/**
 * Output parsing: generated token ids → content, reasoning and tool calls, whole ({@link parseOutput}) or as
 * streamed deltas ({@link OutputStreamParser}). The rules are MODEL.md §4 ("Output parsing — normative"):
 *
 * - `[THINK]` (34), `[/THINK]` (35), `[TOOL_CALLS]` (9) and `[ARGS]` (32) are recognised by id only; the same
 *   characters typed as text are text. Every other control id (`</s>`, …) is dropped.
 * - Reasoning is the text inside `[THINK]…[/THINK]` spans (several spans are concatenated); an unclosed span runs
 *   to the end; no `[THINK]` → `null`; `[THINK][/THINK]` → `""`. A `[/THINK]` outside a span is dropped.
 * - Content is the text outside reasoning and before the first `[TOOL_CALLS]`, kept exactly; `""` → `null`.
 *   Inside a reasoning span `[TOOL_CALLS]`/`[ARGS]` are dropped; after the first `[TOOL_CALLS]`, `[THINK]` and
 *   `[/THINK]` are dropped.
 * - Each `[TOOL_CALLS]` starts one call. Name = its text up to the first `[ARGS]` or `{`, whichever comes first
 *   (so a stream can close the name without waiting for the end), trimmed. Arguments = the rest up to the next
 *   `[TOOL_CALLS]` or the end, trimmed, verbatim; later `[ARGS]` tokens of the same call are dropped. Empty
 *   arguments become `"{}"`; a call with neither name nor arguments (e.g. output cut right after `[TOOL_CALLS]`) is
 *   dropped.
 * - Pre-v11 form: when a call's first non-blank character (before any `[ARGS]`) is `[`, its text is read as a JSON
 *   list `[{"name": …, "arguments": …}, …]`. A valid list gives one call per element (arguments as their source
 *   text, verbatim; a string value is used as the arguments string) and the text after its closing `]` is content.
 *   A list that is invalid or never closed is content, exactly as written (its leading blanks included).
 * - A control id always ends a run of text ids: an incomplete UTF-8 sequence before it decodes to U+FFFD.
 *
 * Streaming signals: the `[THINK]` that opens a span emits `{ type: "reasoning", text: "" }`, so a consumer can
 * tell reasoning `""` from `null`; every other delta carries non-empty text. A tool call arrives as one delta with
 * `index`, `id` and `name`, then argument deltas with the same `index`. {@link collectDeltas} folds deltas back
 * into a {@link ParsedOutput}; for every id sequence it equals {@link parseOutput} (given the same id generator).
 *
 * @example
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * import { OutputStreamParser, parseOutput } from "./parse.ts";
 *
 * const tok = await Tokenizer.fromFile("tekken.json");
 * const [calls, args] = [tok.specialId("[TOOL_CALLS]"), tok.specialId("[ARGS]")];
 * const ids = [calls, ...tok.encode("add"), args, ...tok.encode('{"a": 1}')];
 * parseOutput(tok, ids).toolCalls[0].function; // { name: "add", arguments: '{"a": 1}' }
 *
 * const parser = new OutputStreamParser(tok);
 * for (const id of ids) for (const delta of parser.push(id)) console.log(delta);
 * for (const delta of parser.finish()) console.log(delta);
 * ```
 *
 * @module
 */

/** What the parser needs from a tokenizer; `Tokenizer` from `./tokenizer.ts` provides it. */
export interface OutputTokenizer {
  /** Id of a control token by name; throws when the file lacks it. */
  specialId(name: string): number;
  /** True for control-token ids. */
  isSpecial(id: number): boolean;
  /** Raw bytes of a text token. */
  tokenBytes(id: number): Uint8Array;
}

/** One tool call in OpenAI's shape. `arguments` is the model's text, not re-serialised. */
export interface ToolCall {
  /** Fresh 9-character alphanumeric id. */
  id: string;
  /** Always `"function"`. */
  type: "function";
  /** Name and argument text. */
  function: { name: string; arguments: string };
}

/** The parse of a whole output. */
export interface ParsedOutput {
  /** Text outside reasoning and tool calls; `null` when empty. */
  content: string | null;
  /** Text inside `[THINK]…[/THINK]`; `null` when the output has no `[THINK]`. */
  reasoning: string | null;
  /** Calls in output order. */
  toolCalls: ToolCall[];
}

/**
 * One streamed piece. `tool_call` deltas: first `{ index, id, name }` once per call, then `{ index, arguments }`
 * pieces that concatenate to the call's arguments. `reasoning` with `text: ""` marks the start of a reasoning span.
 */
export type Delta =
  | { type: "content"; text: string }
  | { type: "reasoning"; text: string }
  | { type: "tool_call"; index: number; id?: string; name?: string; arguments?: string };

/** Options for {@link parseOutput} and {@link OutputStreamParser}. */
export interface ParseOptions {
  /** Makes tool-call ids; default {@link generateToolCallId}. Tests inject a deterministic one. */
  idGenerator?: () => string;
}

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/**
 * A fresh tool-call id: 9 characters from `[A-Za-z0-9]`, from the crypto random source.
 *
 * @example
 * ```ts
 * generateToolCallId(); // e.g. "aZ3k9Qb0x"
 * ```
 */
export function generateToolCallId(): string {
  let out = "";
  const bytes = new Uint8Array(16);
  while (out.length < 9) {
    crypto.getRandomValues(bytes);
    // Bytes ≥ 248 are rejected so that every character is equally likely (248 = 4 × 62).
    for (let i = 0; i < bytes.length && out.length < 9; i++) {
      if (bytes[i] < 248) out += ID_ALPHABET[bytes[i] % 62];
    }
  }
  return out;
}

interface ControlIds {
  think: number;
  endThink: number;
  toolCalls: number;
  args: number;
}

function controlIds(tok: OutputTokenizer): ControlIds {
  return {
    think: tok.specialId("[THINK]"),
    endThink: tok.specialId("[/THINK]"),
    toolCalls: tok.specialId("[TOOL_CALLS]"),
    args: tok.specialId("[ARGS]"),
  };
}

// JavaScript's `\s` is exactly the set String.prototype.trim removes, so streaming and whole parses agree.
const SPACE = /\s/;

function isSpace(ch: string): boolean {
  return SPACE.test(ch);
}

/**
 * Finds the bracket that closes a JSON list, fed piece by piece (string-aware, so `"]"` inside a string does not
 * count). Used identically by the whole and the streaming parse so that both close the list at the same place.
 */
class BracketScanner {
  #depth = 0;
  #inString = false;
  #escape = false;

  /** Scans `text` from `from`; returns the index just past the closing bracket, or -1 while still open. */
  feed(text: string, from = 0): number {
    for (let i = from; i < text.length; i++) {
      const c = text[i];
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (c === "\\") this.#escape = true;
        else if (c === '"') this.#inString = false;
      } else if (c === '"') {
        this.#inString = true;
      } else if (c === "[" || c === "{") {
        this.#depth++;
      } else if (c === "]" || c === "}") {
        if (--this.#depth === 0) return i + 1;
      }
    }
    return -1;
  }
}

interface RawCall {
  name: string;
  arguments: string;
}

function skipJsonSpace(t: string, i: number): number {
  while (i < t.length && (t[i] === " " || t[i] === "\t" || t[i] === "\n" || t[i] === "\r")) i++;
  return i;
}

function skipJsonString(t: string, i: number): number {
  for (i++; t[i] !== '"'; i++) if (t[i] === "\\") i++;
  return i + 1;
}

/** End of the JSON value starting at `i` in text already validated by JSON.parse. */
function skipJsonValue(t: string, i: number): number {
  const c = t[i];
  if (c === '"') return skipJsonString(t, i);
  if (c === "{" || c === "[") return new BracketScanner().feed(t, i);
  while (i < t.length && !",]} \t\n\r".includes(t[i])) i++;
  return i;
}

/**
 * Reads a pre-v11 call list. Returns null unless it is a JSON list of objects with a string `name`. Arguments are
 * the source text of each `arguments` value (verbatim, not re-serialised), so the value spans are located by a
 * small scan over the already-validated text.
 */
function parseLegacyList(text: string): RawCall[] | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(value)) return null;
  for (const el of value) {
    if (typeof el !== "object" || el === null || Array.isArray(el) || typeof el.name !== "string") return null;
  }
  const calls: RawCall[] = [];
  let i = skipJsonSpace(text, 1);
  for (const el of value as { name: string; arguments?: unknown }[]) {
    // i is at this element's "{"; record the source span of its last "arguments" key (JSON.parse keeps the last).
    let span: [number, number] | null = null;
    i = skipJsonSpace(text, i + 1);
    while (text[i] !== "}") {
      const keyEnd = skipJsonString(text, i);
      const key = JSON.parse(text.slice(i, keyEnd));
      const start = skipJsonSpace(text, skipJsonSpace(text, keyEnd) + 1);
      const end = skipJsonValue(text, start);
      if (key === "arguments") span = [start, end];
      i = skipJsonSpace(text, end);
      if (text[i] === ",") i = skipJsonSpace(text, i + 1);
    }
    i = skipJsonSpace(text, i + 1);
    if (text[i] === ",") i = skipJsonSpace(text, i + 1);
    let args: string;
    if (typeof el.arguments === "string") args = el.arguments;
    else if (span) args = text.slice(span[0], span[1]);
    else args = "";
    calls.push({ name: el.name.trim(), arguments: args || "{}" });
  }
  return calls;
}

/** Resolves one call's text (split at its `[ARGS]` tokens) into calls and content, by the rules above. */
function resolveCall(segments: string[]): { calls: RawCall[]; content: string } {
  const first = segments[0];
  const lead = first.length - first.trimStart().length;
  if (first[lead] === "[") {
    const raw = segments.join("");
    const end = new BracketScanner().feed(raw, lead);
    const calls = end < 0 ? null : parseLegacyList(raw.slice(lead, end));
    return calls ? { calls, content: raw.slice(end) } : { calls: [], content: raw };
  }
  const brace = first.indexOf("{");
  let name: string;
  let args: string;
  if (brace >= 0) {
    name = first.slice(0, brace);
    args = first.slice(brace) + segments.slice(1).join("");
  } else {
    name = first;
    args = segments.slice(1).join("");
  }
  name = name.trim();
  args = args.trim();
  if (name === "" && args === "") return { calls: [], content: "" };
  return { calls: [{ name, arguments: args || "{}" }], content: "" };
}

// A U+FEFF the model generates is text, not a byte-order mark to strip.
const UTF8: TextDecoderOptions = { ignoreBOM: true };

/** Decodes text ids [from, to) as one UTF-8 byte string. */
function decodeRun(tok: OutputTokenizer, ids: readonly number[], from: number, to: number): string {
  const parts: Uint8Array[] = [];
  let length = 0;
  for (let i = from; i < to; i++) {
    const bytes = tok.tokenBytes(ids[i]);
    parts.push(bytes);
    length += bytes.length;
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new TextDecoder("utf-8", UTF8).decode(all);
}

/**
 * Parses a whole generated output (ids after the prompt, `</s>` included or not).
 *
 * @example
 * ```ts
 * const out = parseOutput(tok, [tok.specialId("[THINK]"), ...tok.encode("hmm"), tok.specialId("[/THINK]"),
 *   ...tok.encode("Hi")]);
 * // { content: "Hi", reasoning: "hmm", toolCalls: [] }
 * ```
 */
export function parseOutput(tok: OutputTokenizer, ids: readonly number[], options: ParseOptions = {}): ParsedOutput {
  const ctl = controlIds(tok);
  const nextId = options.idGenerator ?? generateToolCallId;
  let state: "content" | "reasoning" | "tools" = "content";
  let content = "";
  let reasoning: string | null = null;
  const calls: string[][] = []; // each call's text, split at its [ARGS] tokens
  let i = 0;
  while (i < ids.length) {
    if (!tok.isSpecial(ids[i])) {
      let j = i + 1;
      while (j < ids.length && !tok.isSpecial(ids[j])) j++;
      const text = decodeRun(tok, ids, i, j);
      i = j;
      if (state === "content") content += text;
      else if (state === "reasoning") reasoning = (reasoning ?? "") + text;
      else {
        const segments = calls[calls.length - 1];
        segments[segments.length - 1] += text;
      }
      continue;
    }
    const id = ids[i++];
    if (id === ctl.think) {
      if (state === "content") {
        state = "reasoning";
        reasoning ??= "";
      }
    } else if (id === ctl.endThink) {
      if (state === "reasoning") state = "content";
    } else if (id === ctl.toolCalls) {
      if (state !== "reasoning") {
        state = "tools";
        calls.push([""]);
      }
    } else if (id === ctl.args) {
      if (state === "tools") calls[calls.length - 1].push("");
    }
  }
  const toolCalls: ToolCall[] = [];
  for (const segments of calls) {
    const resolved = resolveCall(segments);
    content += resolved.content;
    for (const c of resolved.calls) {
      toolCalls.push({ id: nextId(), type: "function", function: { name: c.name, arguments: c.arguments } });
    }
  }
  return { content: content === "" ? null : content, reasoning, toolCalls };
}

/**
 * Folds streamed deltas into the shape {@link parseOutput} returns.
 *
 * @example
 * ```ts
 * collectDeltas([{ type: "reasoning", text: "" }, { type: "content", text: "Hi" }]);
 * // { content: "Hi", reasoning: "", toolCalls: [] }
 * ```
 */
export function collectDeltas(deltas: Iterable<Delta>): ParsedOutput {
  let content = "";
  let reasoning: string | null = null;
  const toolCalls: ToolCall[] = [];
  for (const d of deltas) {
    if (d.type === "content") content += d.text;
    else if (d.type === "reasoning") reasoning = (reasoning ?? "") + d.text;
    else {
      if (d.id !== undefined || d.name !== undefined) {
        toolCalls[d.index] = { id: d.id ?? "", type: "function", function: { name: d.name ?? "", arguments: "" } };
      }
      if (d.arguments !== undefined) toolCalls[d.index].function.arguments += d.arguments;
    }
  }
  return { content: content === "" ? null : content, reasoning, toolCalls };
}

/**
 * Where the stream is. `start`: after `[TOOL_CALLS]`, only blanks so far; `name`: reading a name; `args`: name
 * closed, reading arguments; `legacy`: inside a pre-v11 JSON list; `trailing`: after that list (content again).
 */
type Phase = "content" | "reasoning" | "start" | "name" | "args" | "legacy" | "trailing";

/**
 * Incremental form of {@link parseOutput}: feed ids one at a time, get deltas as soon as they are certain. Work is
 * O(1) amortised per id; only a tool-call name, blanks that might end the arguments, and a pre-v11 list are held
 * back.
 *
 * @example
 * ```ts
 * const parser = new OutputStreamParser(tok);
 * const deltas = [];
 * for (const id of ids) deltas.push(...parser.push(id));
 * deltas.push(...parser.finish());
 * collectDeltas(deltas); // equals parseOutput(tok, ids) apart from the random ids
 * ```
 */
export class OutputStreamParser {
  readonly #tok: OutputTokenizer;
  readonly #ctl: ControlIds;
  readonly #nextId: () => string;
  #decoder = new TextDecoder("utf-8", UTF8);
  #phase: Phase = "content";
  #index = -1; // index of the last call announced
  #raw = ""; // start: the blanks so far; legacy: the list text so far (blanks included)
  #name = "";
  #announced = false; // current call's id+name delta sent
  #argsStarted = false; // a non-blank argument character seen
  #blanks = ""; // argument blanks held back until non-blank text follows (trailing ones are trimmed)
  #scanner = new BracketScanner();

  /** Creates a parser for one output. */
  constructor(tok: OutputTokenizer, options: ParseOptions = {}) {
    this.#tok = tok;
    this.#ctl = controlIds(tok);
    this.#nextId = options.idGenerator ?? generateToolCallId;
  }

  /** Feeds one generated id; returns the deltas it makes certain (often none). */
  push(id: number): Delta[] {
    const out: Delta[] = [];
    if (this.#tok.isSpecial(id)) {
      // A control id ends the text run: flush a partial character as U+FFFD, as the whole parse does.
      const tail = this.#decoder.decode();
      if (tail) this.#text(tail, out);
      this.#control(id, out);
    } else {
      const text = this.#decoder.decode(this.#tok.tokenBytes(id), { stream: true });
      if (text) this.#text(text, out);
    }
    return out;
  }

  /** Ends the output; returns the remaining deltas. */
  finish(): Delta[] {
    const out: Delta[] = [];
    const tail = this.#decoder.decode();
    if (tail) this.#text(tail, out);
    this.#endCall(out);
    return out;
  }

  #control(id: number, out: Delta[]): void {
    const ctl = this.#ctl;
    const phase = this.#phase;
    if (id === ctl.think) {
      if (phase === "content") {
        this.#phase = "reasoning";
        out.push({ type: "reasoning", text: "" });
      }
    } else if (id === ctl.endThink) {
      if (phase === "reasoning") this.#phase = "content";
    } else if (id === ctl.toolCalls) {
      if (phase !== "reasoning") {
        this.#endCall(out);
        this.#phase = "start";
        this.#raw = "";
        this.#name = "";
        this.#announced = false;
        this.#argsStarted = false;
        this.#blanks = "";
        this.#scanner = new BracketScanner();
      }
    } else if (id === ctl.args) {
      if (phase === "start" || phase === "name") this.#closeName(out);
    }
  }

  #text(text: string, out: Delta[]): void {
    switch (this.#phase) {
      case "content":
      case "trailing":
        out.push({ type: "content", text });
        return;
      case "reasoning":
        out.push({ type: "reasoning", text });
        return;
      case "start": {
        let k = 0;
        while (k < text.length && isSpace(text[k])) k++;
        if (k === text.length) {
          this.#raw += text;
        } else if (text[k] === "[") {
          this.#phase = "legacy";
          this.#raw += text.slice(0, k);
          this.#legacy(text.slice(k), out);
        } else {
          this.#phase = "name";
          this.#text(text.slice(k), out);
        }
        return;
      }
      case "name": {
        const brace = text.indexOf("{");
        if (brace < 0) {
          this.#name += text;
        } else {
          this.#name += text.slice(0, brace);
          this.#closeName(out);
          this.#args(text.slice(brace), out);
        }
        return;
      }
      case "args":
        this.#args(text, out);
        return;
      case "legacy":
        this.#legacy(text, out);
        return;
    }
  }

  #closeName(out: Delta[]): void {
    this.#phase = "args";
    this.#name = this.#name.trim();
    // An empty name is announced only if arguments follow: a bare `[TOOL_CALLS]` makes no call.
    if (this.#name !== "") this.#announce(this.#name, out);
  }

  #announce(name: string, out: Delta[]): void {
    this.#index++;
    this.#announced = true;
    out.push({ type: "tool_call", index: this.#index, id: this.#nextId(), name });
  }

  #args(text: string, out: Delta[]): void {
    if (!this.#argsStarted) {
      text = text.trimStart();
      if (text === "") return;
      this.#argsStarted = true;
      if (!this.#announced) this.#announce(this.#name, out);
    }
    let end = text.length;
    while (end > 0 && isSpace(text[end - 1])) end--;
    if (end === 0) {
      this.#blanks += text;
      return;
    }
    out.push({ type: "tool_call", index: this.#index, arguments: this.#blanks + text.slice(0, end) });
    this.#blanks = text.slice(end);
  }

  #legacy(text: string, out: Delta[]): void {
    const end = this.#scanner.feed(text);
    if (end < 0) {
      this.#raw += text;
      return;
    }
    this.#raw += text.slice(0, end);
    const calls = parseLegacyList(this.#raw.trimStart());
    if (calls) {
      for (const c of calls) {
        this.#announce(c.name, out);
        out.push({ type: "tool_call", index: this.#index, arguments: c.arguments });
      }
    } else {
      out.push({ type: "content", text: this.#raw });
    }
    this.#phase = "trailing";
    if (end < text.length) out.push({ type: "content", text: text.slice(end) });
  }

  /** Closes the current call (at the next `[TOOL_CALLS]` or the end). */
  #endCall(out: Delta[]): void {
    switch (this.#phase) {
      case "name":
        this.#closeName(out);
        out.push({ type: "tool_call", index: this.#index, arguments: "{}" });
        break;
      case "args":
        if (!this.#argsStarted && this.#announced) {
          out.push({ type: "tool_call", index: this.#index, arguments: "{}" });
        }
        break;
      case "legacy":
        out.push({ type: "content", text: this.#raw });
        break;
    }
  }
}
