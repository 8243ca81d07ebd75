/**
 * Request encoding for the Mistral v15 protocol (Mistral Small 4): an OpenAI-shaped chat request becomes prompt
 * ids exactly as mistral-common's `encode_chat_completion` builds them (MODEL.md §4).
 *
 * The steps follow mistral-common: validate roles and order, merge consecutive user (or assistant) messages,
 * put tool results in call order, then write `<s>`, `[SYSTEM_PROMPT]…`, `[AVAILABLE_TOOLS]…` and
 * `[MODEL_SETTINGS]…` before the first `[INST]`, and each turn. Every text segment is tokenized on its own and
 * control tokens are looked up by name, so no text can ever produce a control id.
 *
 * @module
 */

import { InvalidRequestError } from "./errors.ts";
import { parsePythonJson, type PyJsonValue, pythonJson, PythonJsonError } from "./json.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** A text content part. */
export interface TextPart {
  /** Discriminator. */
  type: "text";
  /** The text. */
  text: string;
}

/** An image content part, OpenAI style. */
export interface ImageUrlPart {
  /** Discriminator. */
  type: "image_url";
  /** An `http(s)` or `data:` URL, as `{ url }` or as a bare string; `detail` is ignored. */
  image_url: { url: string; detail?: string } | string;
}

/** An image content part, mistral-common style (its `ImageChunk`). */
export interface ImagePart {
  /** Discriminator. */
  type: "image";
  /** A base64 or `data:` URL string. */
  image: string;
}

/** A reasoning chunk (mistral-common's `ThinkChunk`), written `[THINK]…[/THINK]`. Assistant messages only. */
export interface ThinkingPart {
  /** Discriminator. */
  type: "thinking";
  /** The reasoning text. */
  thinking: string;
  /** `false` leaves `[THINK]` open (no `[/THINK]`); default `true`. */
  closed?: boolean;
}

/** One part of a message's content. */
export type ContentPart = TextPart | ImageUrlPart | ImagePart | ThinkingPart;

/** Message content: a string or a list of parts. */
export type MessageContent = string | ContentPart[];

/** A tool call made by the assistant. */
export interface AssistantToolCall {
  /** The call's id; tool messages answer it by `tool_call_id`. Any non-empty string (v15 does not encode it). */
  id: string;
  /** Always `"function"`. */
  type?: "function";
  /** The function called; `arguments` is a JSON string (or an already parsed object), re-serialised on encoding. */
  function: { name: string; arguments?: string | Record<string, unknown> | null };
}

/** A system message. `developer` (OpenAI's newer name for it) is accepted as a synonym. */
export interface SystemMessage {
  /** `system`, or its synonym `developer`. */
  role: "system" | "developer";
  /** Text only. */
  content: MessageContent;
}

/** A user message. */
export interface UserMessage {
  /** Discriminator. */
  role: "user";
  /** Text and images. */
  content: MessageContent;
}

/**
 * An assistant message: reasoning, text, tool calls. As the last message it is continued: encoded without `</s>`
 * so that generation extends it.
 */
export interface AssistantMessage {
  /** Discriminator. */
  role: "assistant";
  /** Text and thinking parts; may be absent when there are tool calls. */
  content?: MessageContent | null;
  /** The calls made in this turn. */
  tool_calls?: AssistantToolCall[] | null;
  /** Reasoning, written as `[THINK]…[/THINK]` before the content (vLLM's field name). */
  reasoning?: string | null;
  /** Same as `reasoning` (DeepSeek's and llama.cpp's field name); wins when both are set. */
  reasoning_content?: string | null;
  /** mistral-common's prefix flag: only allowed on the last message, which is continued anyway. */
  prefix?: boolean;
}

/** The result of one tool call. */
export interface ToolMessage {
  /** Discriminator. */
  role: "tool";
  /** Text and images. */
  content: MessageContent;
  /** The `id` of the call this answers. */
  tool_call_id: string;
  /** The function name; accepted and not encoded. */
  name?: string;
}

/** Any chat message. */
export type ChatMessage = SystemMessage | UserMessage | AssistantMessage | ToolMessage;

/** An OpenAI function tool. */
export interface FunctionTool {
  /** Always `"function"`. */
  type: "function";
  /** The function; `description` defaults to `""`, `parameters` to `{}`; `strict` is not shown to the model. */
  function: {
    name: string;
    description?: string | null;
    parameters?: Record<string, unknown> | null;
    strict?: boolean | null;
  };
}

/** The fields of an OpenAI chat-completions request that shape the prompt. */
export interface ChatRequest {
  /** The conversation. */
  messages: ChatMessage[];
  /** Tools the model may call, listed in `[AVAILABLE_TOOLS]`. */
  tools?: FunctionTool[] | null;
  /** `"none"` or `"high"` for Mistral Small 4; absent means the tokenizer file's default. */
  reasoning_effort?: string | null;
}

/** Where an image goes in the prompt. */
export interface ImageRef {
  /** Position of the image's `[IMG]` placeholder in `ids`, to be expanded by the vision encoder. */
  index: number;
  /** The image's URL or `data:` URL as given. */
  url: string;
  /** Where the URL sits in the request (`messages[0].content[1].image_url`): the `param` of an error about it. */
  param?: string;
}

/** An encoded prompt. */
export interface EncodedChat {
  /** Prompt ids, starting with `<s>`. */
  ids: number[];
  /** The same prompt with control tokens written by name (`<s>[INST]…`), for logs and tests. */
  text: string;
  /** Images in prompt order, each with its placeholder position. */
  images: ImageRef[];
}

/** Options for {@link encodeChat}. */
export interface EncodeChatOptions {
  /** Reasoning effort when the request has none; defaults to the tokenizer's `model_settings_builder` default. */
  defaultReasoningEffort?: string;
}

type Role = "system" | "user" | "assistant" | "tool";

type Chunk =
  | { kind: "text"; text: string }
  | { kind: "image"; url: string; param: string }
  | { kind: "think"; text: string; closed: boolean };

/** One message after parsing: content as chunks, calls with their arguments already re-serialised. */
interface Parsed {
  role: Role;
  index: number;
  chunks: Chunk[];
  calls: { id: string; name: string; args: string }[];
  toolCallId: string;
  prefix: boolean;
}

/** One turn as it is written: consecutive user or assistant messages merged. */
interface Turn {
  role: Role;
  index: number;
  content: string | Chunk[];
  calls: Parsed["calls"];
  toolCallId: string;
}

/** Roles allowed right after each role (mistral-common's validator and the v15 chat template agree). */
const NEXT_ROLES: Record<Role, Role[]> = {
  system: ["user", "assistant", "system"],
  user: ["assistant", "system", "user"],
  assistant: ["assistant", "user", "tool"],
  tool: ["assistant", "tool", "user"],
};

/** Function names mistral-common accepts for tools and tool calls. */
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** Text from different messages is joined by a blank line; adjacent text parts of one message by nothing (v15). */
const MESSAGE_JOIN = "\n\n";

/**
 * Encodes a chat request for a v15 tokenizer (Mistral Small 4).
 *
 * Images become a single `[IMG]` placeholder each, listed in `images`; the vision encoder expands them.
 * `reasoning_effort` must be one of the tokenizer's allowed values (`none`, `high`); without a
 * `model_settings_builder` block the allowed values are `none` and `high` and the default is `none`.
 *
 * @throws {InvalidRequestError} for anything the client must fix (roles, order, empty turns, bad values).
 * @throws {Error} "unsupported tokenizer version" when the tokenizer is not v15.
 *
 * @example
 * ```ts
 * const tok = await Tokenizer.fromFile("tekken.json");
 * const { ids, text } = encodeChat(tok, { messages: [{ role: "user", content: "Hi" }] });
 * // text: '<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]Hi[/INST]'
 * ```
 */
export function encodeChat(tok: Tokenizer, request: ChatRequest, options: EncodeChatOptions = {}): EncodedChat {
  if (tok.version !== "v15") {
    throw new Error(
      `unsupported tokenizer version "${tok.version}": the request encoder speaks the v15 protocol of ` +
        "Mistral Small 4 only; load the model's own v15 tekken.json",
    );
  }
  if (!isRecord(request)) throw invalid("The request body must be a JSON object.", "", "invalid_value");
  const tools = normalizeTools(request.tools);
  const settings = pythonJson({ reasoning_effort: resolveReasoningEffort(tok, request.reasoning_effort, options) });
  const parsed = parseMessages(request.messages);
  checkOrder(parsed);
  const turns = mergeTurns(parsed);
  orderToolResults(turns);

  const out = new Emitter(tok);
  out.control("<s>");
  let settingsWritten = false;
  for (let t = 0; t < turns.length; t++) {
    const turn = turns[t];
    if (turn.role === "system") {
      out.control("[SYSTEM_PROMPT]");
      out.content(turn.content);
      out.control("[/SYSTEM_PROMPT]");
    } else if (turn.role === "user") {
      if (!settingsWritten) {
        if (tools.length > 0) {
          out.control("[AVAILABLE_TOOLS]");
          out.text(pythonJson(tools));
          out.control("[/AVAILABLE_TOOLS]");
        }
        out.control("[MODEL_SETTINGS]");
        out.text(settings);
        out.control("[/MODEL_SETTINGS]");
        settingsWritten = true;
      }
      out.control("[INST]");
      out.content(imageFirst(turn.content));
      out.control("[/INST]");
    } else if (turn.role === "assistant") {
      // mistral-common strips trailing spaces from plain-string assistant content (not from parts).
      out.content(typeof turn.content === "string" ? turn.content.replace(/ +$/, "") : turn.content);
      for (const call of turn.calls) {
        out.control("[TOOL_CALLS]");
        out.text(call.name);
        out.control("[ARGS]");
        out.text(call.args);
      }
      // A trailing assistant turn is continued: no end of turn, generation extends it.
      if (t < turns.length - 1) out.control("</s>");
    } else {
      out.control("[TOOL_RESULTS]");
      out.content(turn.content);
      out.control("[/TOOL_RESULTS]");
    }
  }
  return { ids: out.ids, text: out.parts.join(""), images: out.images };
}

/** Accumulates ids, the readable text and image positions side by side. */
class Emitter {
  readonly ids: number[] = [];
  readonly parts: string[] = [];
  readonly images: ImageRef[] = [];
  constructor(private readonly tok: Tokenizer) {}

  control(name: string): void {
    this.ids.push(this.tok.specialId(name));
    this.parts.push(name);
  }

  /** One text segment, tokenized on its own as mistral-common does. */
  text(s: string): void {
    if (s === "") return;
    for (const id of this.tok.encode(s)) this.ids.push(id);
    this.parts.push(s);
  }

  content(content: string | Chunk[]): void {
    if (typeof content === "string") return this.text(content);
    for (const chunk of content) {
      if (chunk.kind === "text") this.text(chunk.text);
      else if (chunk.kind === "image") {
        this.images.push({ index: this.ids.length, url: chunk.url, param: chunk.param });
        this.control("[IMG]");
      } else {
        this.control("[THINK]");
        this.text(chunk.text);
        if (chunk.closed) this.control("[/THINK]");
      }
    }
  }
}

/**
 * The URL of an image content part (`image_url` in OpenAI's form, `image` in mistral-common's), or null when `part`
 * is not one; `at` names the part in the error an image part without a URL gets.
 *
 * @example
 * ```ts
 * imagePartUrl({ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }, "messages[0].content[1]");
 * ```
 */
export function imagePartUrl(part: Record<string, unknown>, at: string): string | null {
  if (part.type !== "image_url" && part.type !== "image") return null;
  const source = part.type === "image" ? part.image : part.image_url;
  const url = isRecord(source) ? source.url : source;
  if (typeof url !== "string" || url === "") {
    throw invalid(`${at} needs an image URL: {"type": "image_url", "image_url": {"url": "..."}}.`, at);
  }
  return url;
}

/**
 * Where an image part's URL sits, for errors about the image: `at.image_url` (OpenAI's form) or `at.image`
 * (mistral-common's).
 *
 * @example
 * ```ts
 * imagePartParam({ type: "image_url", image_url: { url: "https://x/cat.png" } }, "messages[0].content[1]");
 * // "messages[0].content[1].image_url"
 * ```
 */
export function imagePartParam(part: Record<string, unknown>, at: string): string {
  return part.type === "image" ? `${at}.image` : `${at}.image_url`;
}

/** mistral-common's compatibility rule: a user turn of one text then one image puts the image first. */
function imageFirst(content: string | Chunk[]): string | Chunk[] {
  if (typeof content === "string" || content.length !== 2) return content;
  const [a, b] = content;
  return a.kind === "text" && b.kind === "image" ? [b, a] : content;
}

function resolveReasoningEffort(tok: Tokenizer, requested: unknown, options: EncodeChatOptions): string {
  const builder = tok.modelSettings?.reasoning_effort;
  const spec = isRecord(builder) ? builder : {};
  const allowed = Array.isArray(spec.values) ? spec.values.filter((v) => typeof v === "string") : ["none", "high"];
  const fallback = options.defaultReasoningEffort ?? (typeof spec.default === "string" ? spec.default : "none");
  const value = requested ?? fallback;
  if (typeof value !== "string" || !allowed.includes(value)) {
    const list = allowed.map((v) => `"${v}"`).join(", ");
    throw invalid(
      `reasoning_effort ${JSON.stringify(value)} is not supported by this model; use one of ${list}` +
        ` (or leave it out for "${fallback}").`,
      "reasoning_effort",
      "unsupported_value",
    );
  }
  return value;
}

function normalizeTools(tools: unknown): PyJsonValue[] {
  if (tools === undefined || tools === null) return [];
  if (!Array.isArray(tools)) throw invalid("tools must be a list of function tools.", "tools", "invalid_value");
  return tools.map((tool, i) => {
    const param = `tools[${i}]`;
    if (!isRecord(tool) || !isRecord(tool.function)) {
      throw invalid(`${param} must be {"type": "function", "function": {...}}.`, param, "invalid_value");
    }
    if (tool.type !== undefined && tool.type !== "function") {
      throw invalid(`${param}.type must be "function"; other tool types are not supported.`, `${param}.type`);
    }
    const fn = tool.function;
    checkFunctionName(fn.name, `${param}.function.name`);
    const description = fn.description ?? "";
    if (typeof description !== "string") {
      throw invalid(`${param}.function.description must be a string.`, `${param}.function.description`);
    }
    const parameters = fn.parameters ?? {};
    if (!isRecord(parameters)) {
      throw invalid(`${param}.function.parameters must be a JSON Schema object.`, `${param}.function.parameters`);
    }
    // mistral-common's Tool.model_dump(): these keys in this order; `strict` and extra keys are not shown.
    return { type: "function", function: { name: fn.name, description, parameters: parameters as PyJsonValue } };
  });
}

function parseMessages(messages: unknown): Parsed[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw invalid("messages must be a non-empty list of messages.", "messages", "invalid_value");
  }
  return messages.map((m, index) => parseMessage(m, index));
}

function parseMessage(m: unknown, index: number): Parsed {
  const at = `messages[${index}]`;
  if (!isRecord(m)) throw invalid(`${at} must be an object with a role and content.`, at, "invalid_value");
  const role = m.role === "developer" ? "system" : m.role;
  if (role !== "system" && role !== "user" && role !== "assistant" && role !== "tool") {
    throw invalid(
      `${at}.role ${JSON.stringify(m.role)} is not supported; use "system", "user", "assistant" or "tool".`,
      `${at}.role`,
      "invalid_value",
    );
  }
  const parsed: Parsed = { role, index, chunks: [], calls: [], toolCallId: "", prefix: m.prefix === true };
  if (role === "assistant") {
    parsed.chunks = parseContent(m.content, `${at}.content`, role, true);
    const reasoning = m.reasoning_content ?? m.reasoning;
    if (reasoning !== undefined && reasoning !== null && reasoning !== "") {
      if (typeof reasoning !== "string") throw invalid(`${at}.reasoning must be a string.`, `${at}.reasoning`);
      if (parsed.chunks.some((c) => c.kind === "think")) {
        throw invalid(
          `${at} has both thinking parts in content and a reasoning field; send the reasoning once.`,
          `${at}.reasoning`,
        );
      }
      parsed.chunks.unshift({ kind: "think", text: reasoning, closed: true });
    }
    parsed.calls = parseToolCalls(m.tool_calls, `${at}.tool_calls`);
  } else {
    parsed.chunks = parseContent(m.content, `${at}.content`, role, false);
  }
  if (role === "tool") {
    if (typeof m.tool_call_id !== "string" || m.tool_call_id === "") {
      throw invalid(
        `${at} needs tool_call_id: the id of the assistant tool call it answers.`,
        `${at}.tool_call_id`,
        "missing_required_parameter",
      );
    }
    parsed.toolCallId = m.tool_call_id;
  }
  return parsed;
}

/** Content as chunks; which kinds each role may carry follows mistral-common v15. */
function parseContent(content: unknown, at: string, role: Role, optional: boolean): Chunk[] {
  if (typeof content === "string") return [{ kind: "text", text: content }];
  if (content === null || content === undefined) {
    if (optional) return [];
    throw invalid(`${at} is required: a string or a list of content parts.`, at, "missing_required_parameter");
  }
  if (!Array.isArray(content)) throw invalid(`${at} must be a string or a list of content parts.`, at);
  return content.map((part, j): Chunk => {
    const p = `${at}[${j}]`;
    if (!isRecord(part)) throw invalid(`${p} must be a content part object with a type.`, p);
    if (part.type === "text") {
      if (typeof part.text !== "string") throw invalid(`${p}.text must be a string.`, `${p}.text`);
      return { kind: "text", text: part.text };
    }
    if (part.type === "image_url" || part.type === "image") {
      if (role !== "user" && role !== "tool") {
        throw invalid(`${p}: images are only supported in user and tool messages.`, p, "unsupported_value");
      }
      return { kind: "image", url: imagePartUrl(part, p)!, param: imagePartParam(part, p) };
    }
    if (part.type === "thinking") {
      if (role === "system") {
        throw invalid(
          `${p}: thinking chunks in a system message are not supported by this model; send them as text.`,
          p,
          "unsupported_value",
        );
      }
      if (role !== "assistant") {
        throw invalid(`${p}: thinking chunks are only supported in assistant messages.`, p, "unsupported_value");
      }
      if (typeof part.thinking !== "string") throw invalid(`${p}.thinking must be a string.`, `${p}.thinking`);
      return { kind: "think", text: part.thinking, closed: part.closed !== false };
    }
    throw invalid(
      `${p}.type ${JSON.stringify(part.type)} is not supported; use "text", "image_url" or "thinking".`,
      `${p}.type`,
      "unsupported_value",
    );
  });
}

function parseToolCalls(calls: unknown, at: string): Parsed["calls"] {
  if (calls === undefined || calls === null) return [];
  if (!Array.isArray(calls)) throw invalid(`${at} must be a list of tool calls.`, at);
  const seen = new Set<string>();
  return calls.map((call, j) => {
    const p = `${at}[${j}]`;
    if (!isRecord(call) || !isRecord(call.function)) {
      throw invalid(`${p} must be {"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}.`, p);
    }
    if (typeof call.id !== "string" || call.id === "") {
      throw invalid(`${p}.id is required so that tool results can refer to the call.`, `${p}.id`);
    }
    if (seen.has(call.id)) throw invalid(`${p}.id ${JSON.stringify(call.id)} is used twice; ids must be unique.`, p);
    seen.add(call.id);
    checkFunctionName(call.function.name, `${p}.function.name`);
    return { id: call.id, name: call.function.name, args: serializeArguments(call.function.arguments, p) };
  });
}

/**
 * mistral-common parses the arguments and dumps them again with Python's json (`{"a":1}` → `{"a": 1}`); text
 * that is not JSON is written as a JSON string; missing or empty arguments become `{}`.
 */
function serializeArguments(args: unknown, at: string): string {
  if (args === undefined || args === null || args === "") return "{}";
  if (typeof args === "string") {
    try {
      return pythonJson(parsePythonJson(args));
    } catch (e) {
      if (e instanceof PythonJsonError) return pythonJson(args);
      throw e;
    }
  }
  if (isRecord(args)) return pythonJson(args as PyJsonValue);
  throw invalid(`${at}.function.arguments must be a JSON string.`, `${at}.function.arguments`);
}

function checkFunctionName(name: unknown, at: string): asserts name is string {
  if (typeof name !== "string" || !FUNCTION_NAME.test(name)) {
    throw invalid(
      `${at} ${JSON.stringify(name)} is not a valid function name: use 1-64 letters, digits, '_' or '-'.`,
      at,
    );
  }
}

/** Role order: first a user or system message, then only the transitions in {@link NEXT_ROLES}. */
function checkOrder(messages: Parsed[]): void {
  const first = messages[0];
  if (first.role !== "user" && first.role !== "system") {
    throw invalid(
      `The conversation must start with a user or system message, got ${first.role}.`,
      "messages[0].role",
      "invalid_message_order",
    );
  }
  for (let i = 1; i < messages.length; i++) {
    const prev = messages[i - 1].role;
    const role = messages[i].role;
    if (!NEXT_ROLES[prev].includes(role)) {
      const hint = role === "tool"
        ? " A tool message must follow the assistant message whose tool_calls it answers."
        : ` After ${prev} may come: ${NEXT_ROLES[prev].join(", ")}.`;
      throw invalid(
        `Unexpected role '${role}' after role '${prev}' at messages[${i}].${hint}`,
        `messages[${i}].role`,
        "invalid_message_order",
      );
    }
  }
  for (const m of messages) {
    if (m.prefix && m !== messages[messages.length - 1]) {
      throw invalid(
        `messages[${m.index}] has prefix=true but is not the last message; only the last message can be continued.`,
        `messages[${m.index}].prefix`,
      );
    }
  }
}

/** Merges runs of user or assistant messages; system and tool messages stay one turn each. */
function mergeTurns(messages: Parsed[]): Turn[] {
  const turns: Turn[] = [];
  let i = 0;
  while (i < messages.length) {
    const head = messages[i];
    let j = i + 1;
    if (head.role === "user" || head.role === "assistant") {
      while (j < messages.length && messages[j].role === head.role) j++;
    }
    const group = messages.slice(i, j);
    const turn: Turn = {
      role: head.role,
      index: head.index,
      content: aggregate(group.map((m) => m.chunks)),
      calls: group.flatMap((m) => m.calls),
      toolCallId: head.toolCallId,
    };
    if (turn.role === "assistant" && turn.content === "" && turn.calls.length === 0) {
      throw invalid(
        `The assistant turn at messages[${head.index}] is empty: give it content, reasoning or tool_calls.`,
        `messages[${head.index}].content`,
      );
    }
    turns.push(turn);
    i = j;
  }
  return turns;
}

/**
 * mistral-common's `_aggregate_content_chunks` (v15): texts of one message are joined directly, texts of
 * different messages by a blank line, empty texts are dropped; text only gives a string.
 */
function aggregate(contents: Chunk[][]): string | Chunk[] {
  const all: Chunk[] = [];
  let text: string[] = [];
  const flush = () => {
    if (text.length > 0) all.push({ kind: "text", text: text.join("") });
    text = [];
  };
  for (const chunks of contents) {
    let newMessage = text.length > 0;
    for (const chunk of chunks) {
      if (chunk.kind !== "text") {
        flush();
        all.push(chunk);
        continue;
      }
      if (chunk.text === "") continue;
      text.push(text.length > 0 && newMessage ? MESSAGE_JOIN + chunk.text : chunk.text);
      newMessage = false;
    }
  }
  if (all.length === 0) return text.join("");
  flush();
  return all;
}

/**
 * Checks that the tool results after each assistant turn answer its calls, each exactly once, and sorts them
 * into call order (mistral-common's v13+ normalizer). A trailing assistant turn with calls may wait for results.
 */
function orderToolResults(turns: Turn[]): void {
  let i = 0;
  while (i < turns.length) {
    const turn = turns[i];
    let j = i + 1;
    while (j < turns.length && turns[j].role === "tool") j++;
    const results = turns.slice(i + 1, j);
    if (turn.role === "assistant" && (results.length > 0 || (turn.calls.length > 0 && j < turns.length))) {
      const ids = turn.calls.map((c) => c.id);
      const answered = new Set<string>();
      for (const r of results) {
        const at = `messages[${r.index}].tool_call_id`;
        if (!ids.includes(r.toolCallId)) {
          const known = ids.length > 0 ? `the calls of messages[${turn.index}] are ${ids.join(", ")}` : "no calls";
          throw invalid(
            `tool_call_id ${JSON.stringify(r.toolCallId)} matches no tool call of the assistant turn before it ` +
              `(${known}).`,
            at,
          );
        }
        if (answered.has(r.toolCallId)) {
          throw invalid(`Tool call ${JSON.stringify(r.toolCallId)} has more than one result.`, at);
        }
        answered.add(r.toolCallId);
      }
      if (answered.size !== ids.length) {
        const missing = ids.filter((id) => !answered.has(id));
        throw invalid(
          `The tool calls of messages[${turn.index}] need one tool message each; missing results for ` +
            `${missing.join(", ")}.`,
          `messages[${turn.index}].tool_calls`,
        );
      }
      results.sort((a, b) => ids.indexOf(a.toolCallId) - ids.indexOf(b.toolCallId));
      turns.splice(i + 1, results.length, ...results);
    }
    i = j;
  }
}

function invalid(message: string, param: string, code = "invalid_value"): InvalidRequestError {
  return new InvalidRequestError(message, param === "" ? { code } : { param, code });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
