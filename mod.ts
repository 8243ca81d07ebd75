/**
 * Tramontane: an inference engine and OpenAI-compatible server for Mistral Small 4, in TypeScript on Deno.
 *
 * Start with {@link createLLM}: it loads a preset or a checkpoint directory, and its `chat` takes an OpenAI chat
 * request and yields the chunks the server streams. The parts below it (tokenizer, encoder, output parser, model,
 * engine, server) are exported too. Dependencies are full `npm:` specifiers, so this module imports by path or URL
 * with no import map.
 *
 * @example
 * ```ts
 * import { createLLM } from "@tramontane/tramontane";
 * const llm = await createLLM("demo"); // random weights: the text is noise; or a checkpoint directory
 * for await (const chunk of llm.chat({ messages: [{ role: "user", content: "Hi" }], max_tokens: 16 })) {
 *   console.log(chunk.choices[0]?.delta.content ?? "");
 * }
 * await llm.close();
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
export {
  decodeImage,
  imageTokenGrid,
  imageTokenLayout,
  loadImageUrl,
  preprocessDecoded,
  preprocessImage,
  SMALL4_IMAGE_CONFIG,
  SMALL4_IMAGE_TOKEN_IDS,
} from "./chat/image.ts";
export type {
  DecodedImage,
  ImageConfig,
  ImageLimits,
  ImageTokenIds,
  ImageTokenName,
  LoadImageOptions,
  PreprocessedImage,
  TokenGrid,
} from "./chat/image.ts";
export { expandImagePlaceholders } from "./chat/image_prompt.ts";
export type { ExpandedPrompt } from "./chat/image_prompt.ts";
export { loadDemoTokenizer } from "./chat/demo_tokenizer.ts";
export { createLLM, LLM } from "./engine/llm.ts";
export type { LLMCallOptions, LLMChatRequest, LLMOptions } from "./engine/llm.ts";
export type {
  ChatChunkChoice,
  ChatChunkDelta,
  ChatCompletion,
  ChatCompletionChoice,
  ChatCompletionChunk,
  ChatCompletionMessage,
  ChatFinishReason,
  ChatToolCallDelta,
  Usage,
} from "./engine/chat_output.ts";
export type { ChatLogprob } from "./engine/logprobs.ts";
export { DraftModel, loadModel, MAX_SPECULATIVE_TOKENS, Model } from "./engine/model.ts";
export type {
  DraftStepInput,
  LoadModelOptions,
  ModelLimits,
  SpeculativeOptions,
  StepConfig,
  StepInput,
  StepSampling,
} from "./engine/model.ts";
export { EngineClosedError, ModelEngine } from "./engine/engine.ts";
export type { ModelEngineOptions, ModelEngineStats } from "./engine/engine.ts";
export type { ImageJob, VisionJobOptions } from "./engine/vision_job.ts";
export type * from "./engine/types.ts";
export { createServer, DEFAULT_SHUTDOWN_GRACE_MS } from "./server/server.ts";
export type { ServeHandle, ServerOptions, TramontaneServer } from "./server/server.ts";
export { DEFAULT_SAMPLING } from "./engine/params.ts";
export { DEFAULT_IMAGE_OPTIONS } from "./engine/images.ts";
export type { ImageOptions } from "./engine/images.ts";
export { GraphBuilder } from "./graph/builder.ts";
export type { NodeOptions, OpSignature, Tensor } from "./graph/builder.ts";
export type * from "./graph/ir.ts";
export type { ConcreteType, Cost, OpDef, RefData, RefTensor } from "./ops/op.ts";
export { presetConfig, presets } from "./graph/models/mistral4.ts";
export type {
  EagleSettings,
  Mistral4Config,
  Mistral4PresetName,
  Mistral4Quantization,
  Mistral4RopeScaling,
  Mistral4VisionConfig,
  SoftmaxScaleMode,
} from "./graph/models/mistral4.ts";
export { inspectModel, renderJson, renderText } from "./graph/inspect.ts";
export type { InspectOptions, InspectReport, LayerRow, PlanSection } from "./graph/inspect.ts";
export type * from "./runtime/backend.ts";
export { DeviceLostError, OutOfMemoryError } from "./runtime/backend.ts";
export type * from "./runtime/schedule/plan.ts";
export type { RandomRecipe } from "./weights/source.ts";
export { BlockPool } from "./engine/kv_cache.ts";
export type { BlockPoolOptions, SequenceBlocks } from "./engine/kv_cache.ts";
export { Metrics } from "./server/metrics.ts";
export type { Logger } from "./engine/request_context.ts";
