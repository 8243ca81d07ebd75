/**
 * Checkpoint I/O and weight codecs: safetensors reading (streamed, one tensor at a time) and writing, checkpoint
 * layout detection (Hugging Face / Mistral), checking against the model's expected tensors, exact element
 * conversions (bf16, f16, f8e4m3, NVFP4, scaled FP8, q8), and weights as row-chunk sources (`openWeightSources`,
 * `convertSource`, `chunkRows`) so a backend can upload a model the host never holds whole.
 *
 * @example
 * ```ts
 * import { bytesToF32, loadTensors, openCheckpoint } from "./mod.ts";
 * const ckpt = await openCheckpoint("/models/tiny");
 * await loadTensors(ckpt.reader, specs, ({ spec, info, data }) => {
 *   if (info.dtype === "bf16") store(spec.name, bytesToF32(data, "bf16"));
 * });
 * ```
 *
 * @module
 */

export * from "./errors.ts";
export * from "./codecs.ts";
export * from "./safetensors.ts";
export * from "./safetensors_writer.ts";
export * from "./progress.ts";
export * from "./checkpoint.ts";
export * from "./source.ts";
export * from "./chunks.ts";
export * from "./stream.ts";
export * from "./convert_source.ts";
export * from "./generation_config.ts";
