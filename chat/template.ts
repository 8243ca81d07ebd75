/**
 * The other way to build a prompt: render a model directory's own Hugging Face `chat_template` (Jinja) and
 * tokenize the result. {@link encodeChat} in `encode.ts` is the reference path for v15; this one serves models
 * whose protocol lives only in their template, and lets tests check both paths against each other.
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- a full specifier, so the library imports without our deno.json
import { Environment, Interpreter, Template } from "npm:@huggingface/jinja@0.5.11";
import { InvalidRequestError } from "./errors.ts";
import type { ChatRequest } from "./encode.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Options for {@link renderChatTemplate}. */
export interface RenderChatTemplateOptions {
  /** Text of the begin-of-sequence token, `<s>` for tekken models. */
  bosToken: string;
  /** Text of the end-of-sequence token, `</s>` for tekken models. */
  eosToken: string;
  /** Passed to the template as `add_generation_prompt` (Mistral templates ignore it). */
  addGenerationPrompt?: boolean;
  /** Further template variables (`tool_choice`, …), set after the standard ones. */
  variables?: Record<string, unknown>;
}

/** Parsed templates by source: a server renders the same one or two templates for every request. */
const parsedTemplates = new Map<string, Template>();
const PARSED_TEMPLATE_LIMIT = 16;

/**
 * Renders `template` for `request` as `transformers`' `apply_chat_template` does: variables `messages`, `tools`,
 * `reasoning_effort`, `bos_token`, `eos_token`, `add_generation_prompt`; blocks trimmed (`trim_blocks`,
 * `lstrip_blocks`); `tojson` with Python's separators and key order.
 *
 * @throws {InvalidRequestError} when the template calls `raise_exception` (its message is kept) or fails on the
 *   request's data.
 * @throws {Error} when the template itself does not parse.
 *
 * @example
 * ```ts
 * const text = renderChatTemplate(await Deno.readTextFile("chat_template.jinja"), request, {
 *   bosToken: "<s>",
 *   eosToken: "</s>",
 * });
 * const ids = encodeRenderedPrompt(tok, text);
 * ```
 */
export function renderChatTemplate(
  template: string,
  request: ChatRequest,
  options: RenderChatTemplateOptions,
): string {
  const program = parseTemplate(template);
  const env = new Environment();
  const variables: Record<string, unknown> = {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    raise_exception: (message: unknown) => {
      throw new InvalidRequestError(String(message), { code: "invalid_value" });
    },
    range,
    strftime_now: strftimeNow,
    messages: request.messages,
    tools: request.tools,
    reasoning_effort: request.reasoning_effort,
    bos_token: options.bosToken,
    eos_token: options.eosToken,
    add_generation_prompt: options.addGenerationPrompt ?? false,
    ...options.variables,
  };
  for (const [name, value] of Object.entries(variables)) env.set(name, value);
  try {
    return String(new Interpreter(env).run(program.parsed).value);
  } catch (e) {
    if (e instanceof InvalidRequestError) throw e;
    // Anything else the interpreter hits comes from the request's shape (a missing field, a wrong type).
    throw new InvalidRequestError(`The chat template cannot render this request: ${(e as Error).message}`, {
      code: "invalid_value",
      cause: e,
    });
  }
}

function parseTemplate(source: string): Template {
  let parsed = parsedTemplates.get(source);
  if (parsed === undefined) {
    try {
      parsed = new Template(source);
    } catch (e) {
      throw new Error(`chat template does not parse: ${(e as Error).message}`, { cause: e });
    }
    if (parsedTemplates.size >= PARSED_TEMPLATE_LIMIT) parsedTemplates.clear();
    parsedTemplates.set(source, parsed);
  }
  return parsed;
}

/** Control-token splitters per tokenizer, built once. */
const splitters = new WeakMap<Tokenizer, RegExp>();

/**
 * Tokenizes a rendered prompt whose control tokens are written by name (`<s>[INST]…`): every control-token name of
 * the tokenizer becomes its id, and the plain text between them goes through `tok.encode` piece by piece, which
 * is how mistral-common tokenizes each segment.
 *
 * @example
 * ```ts
 * encodeRenderedPrompt(tok, "<s>[INST]Hi[/INST]"); // [1, 3, ...ids of "Hi", 4]
 * ```
 */
export function encodeRenderedPrompt(tok: Tokenizer, text: string): number[] {
  const re = splitter(tok);
  const ids: number[] = [];
  // A loop, not push(...spread): one long document can be more ids than the call stack takes as arguments.
  const pushText = (s: string) => {
    for (const id of tok.encode(s)) ids.push(id);
  };
  let last = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m.index > last) pushText(text.slice(last, m.index));
    ids.push(tok.specialId(m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) pushText(text.slice(last));
  return ids;
}

function splitter(tok: Tokenizer): RegExp {
  let re = splitters.get(tok);
  if (re === undefined) {
    const names = new Set<string>();
    for (let id = 0; id < tok.numSpecialTokens; id++) names.add(tok.specialName(id));
    // Longest first, so a name that is a prefix of another never wins the alternation.
    const sorted = [...names].sort((a, b) => b.length - a.length);
    re = new RegExp(sorted.map((n) => n.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|"), "g");
    splitters.set(tok, re);
  }
  return re;
}

/** Jinja's `range`, as templates use it. */
function range(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error("range() step must not be zero");
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

/** `strftime_now` as transformers provides it, for the few formats chat templates use for dates. */
function strftimeNow(format: string): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  const month = (style: "long" | "short") => new Intl.DateTimeFormat("en-US", { month: style }).format(d);
  const codes: Record<string, () => string> = {
    "%Y": () => String(d.getFullYear()),
    "%m": () => pad(d.getMonth() + 1),
    "%d": () => pad(d.getDate()),
    "%b": () => month("short"),
    "%B": () => month("long"),
    "%H": () => pad(d.getHours()),
    "%M": () => pad(d.getMinutes()),
    "%%": () => "%",
  };
  return format.replace(/%[YmdbBHM%]/g, (code) => codes[code]());
}
