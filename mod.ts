/**
 * Tramontane: an inference engine and OpenAI-compatible server for Mistral Small 4, in TypeScript on Deno.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "@tramontane/tramontane";
 * const tok = await Tokenizer.fromFile("tekken.json");
 * console.log(tok.encode("Hello world"));
 * ```
 *
 * @module
 */

export type { DType } from "./graph/dtype.ts";
export { DTYPES, isDType } from "./graph/dtype.ts";
export { StreamDecoder, Tokenizer } from "./chat/tokenizer.ts";
export type { SpecialsPolicy, TekkenFile, TokenizerImageConfig } from "./chat/tokenizer.ts";
export { collectDeltas, generateToolCallId, OutputStreamParser, parseOutput } from "./chat/parse.ts";
export type { Delta, OutputTokenizer, ParsedOutput, ParseOptions, ToolCall } from "./chat/parse.ts";
export { encodeChat } from "./chat/encode.ts";
export type {
  AssistantMessage,
  AssistantToolCall,
  ChatMessage,
  ChatRequest,
  ContentPart,
  EncodeChatOptions,
  EncodedChat,
  FunctionTool,
  ImagePart,
  ImageRef,
  ImageUrlPart,
  MessageContent,
  SystemMessage,
  TextPart,
  ThinkingPart,
  ToolMessage,
  UserMessage,
} from "./chat/encode.ts";
export { encodeRenderedPrompt, renderChatTemplate } from "./chat/template.ts";
export type { RenderChatTemplateOptions } from "./chat/template.ts";
export { InvalidRequestError } from "./chat/errors.ts";
