/**
 * OpenAI request fields → a {@link ConstraintSpec}: `response_format` (`text`, `json_object`, `json_schema`, and
 * llama.cpp's `json_object` with a `schema`), `tool_choice` (`auto`, `none`, `required`, a named function),
 * `tools` and `parallel_tool_calls`. Malformed fields are {@link ConstraintError}s naming the field.
 *
 * @module
 */

import { ConstraintError, type ConstraintSpec, type ConstraintTool } from "./constraint.ts";

/** A checked `tool_choice`. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks `tool_choice` (absent: `auto`). */
export function parseToolChoice(choice: unknown): ToolChoice {
  if (choice === undefined || choice === null || choice === "auto") return "auto";
  if (choice === "none" || choice === "required") return choice;
  if (isRecord(choice) && choice.type === "function") {
    const fn = choice.function;
    if (isRecord(fn) && typeof fn.name === "string") return { name: fn.name };
  }
  throw new ConstraintError(
    'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}.',
    "tool_choice",
    "invalid_value",
  );
}

/** The JSON answer `response_format` asks for; null for plain text. */
export function parseResponseFormat(format: unknown): ConstraintSpec["json"] {
  if (format === undefined || format === null) return null;
  if (!isRecord(format) || typeof format.type !== "string") {
    throw new ConstraintError(
      'response_format must be an object with a type, e.g. {"type": "text"}.',
      "response_format",
      "invalid_value",
    );
  }
  const schemaOf = (v: unknown, param: string) => {
    if (typeof v !== "boolean" && !isRecord(v)) {
      throw new ConstraintError(`${param} must be a JSON Schema (an object).`, param, "invalid_value");
    }
    return { schema: v, param };
  };
  switch (format.type) {
    case "text":
      return null;
    case "json_object":
      // llama.cpp's extension: a schema inside json_object.
      return format.schema === undefined ? "object" : schemaOf(format.schema, "response_format.schema");
    case "json_schema": {
      const js = format.json_schema;
      if (!isRecord(js)) {
        throw new ConstraintError(
          'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}.',
          "response_format.json_schema",
          "invalid_value",
        );
      }
      return schemaOf(js.schema ?? {}, "response_format.json_schema.schema");
    }
    default:
      throw new ConstraintError(
        `response_format type ${JSON.stringify(format.type)} is not supported; use "text", "json_object" or ` +
          '"json_schema".',
        "response_format.type",
        "invalid_value",
      );
  }
}

/** Name and parameters of each function tool (the prompt encoder checks the rest of their shape). */
function toolList(tools: unknown): ConstraintTool[] {
  if (!Array.isArray(tools)) return [];
  return tools.map((t, i) => {
    const fn = isRecord(t) ? t.function : undefined;
    if (!isRecord(fn) || typeof fn.name !== "string") {
      throw new ConstraintError(
        `tools[${i}] must be {"type": "function", "function": {...}}.`,
        `tools[${i}]`,
        "invalid_value",
      );
    }
    return { name: fn.name, parameters: fn.parameters ?? undefined };
  });
}

/**
 * The constraint a chat request asks for, or null when its output is free: a JSON answer (`response_format`),
 * forced tool calls (`tool_choice` `required` or named), or, with `auto` and tools beside a JSON answer, either.
 *
 * @example
 * ```ts
 * chatConstraintSpec({ tools, tool_choice: "required" }, false); // { json: null, tools: [...], ... }
 * ```
 */
export function chatConstraintSpec(body: Record<string, unknown>, reasoning: boolean): ConstraintSpec | null {
  const json = parseResponseFormat(body.response_format);
  const choice = parseToolChoice(body.tool_choice);
  const all = toolList(body.tools);
  let tools: ConstraintTool[] | null = null;
  if (choice === "required") {
    if (all.length === 0) {
      throw new ConstraintError('tool_choice "required" needs tools.', "tool_choice", "invalid_value");
    }
    tools = all;
  } else if (typeof choice === "object") {
    const named = all.filter((t) => t.name === choice.name);
    if (named.length === 0) {
      throw new ConstraintError(
        `tool_choice names the function ${JSON.stringify(choice.name)}, which is not in tools.`,
        "tool_choice",
        "invalid_value",
      );
    }
    tools = named.slice(0, 1);
  } else if (choice === "auto" && json !== null && all.length > 0) {
    tools = all; // the model may answer in JSON or call a tool
  }
  if (json === null && tools === null) return null;
  // A named function is one call; "required" follows parallel_tool_calls (default true).
  const parallelCalls = typeof choice === "object" ? false : body.parallel_tool_calls !== false;
  return { json: tools !== null && choice !== "auto" ? null : json, tools, parallelCalls, reasoning };
}
