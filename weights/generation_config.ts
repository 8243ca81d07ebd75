/**
 * `generation_config.json`: the generation defaults a Hugging Face checkpoint ships beside its weights. The server
 * reads `max_new_tokens` from it (the answer length of a request that sets no `max_tokens`); `make-checkpoint`
 * writes one, because random weights never end an answer on their own.
 *
 * @module
 */

import { join } from "node:path";
import { isNotFound, readTextFile } from "../graph/files.ts";
import type { Mistral4Config } from "../graph/models/mistral4.ts";
import { CheckpointError } from "./errors.ts";

/** The file's name in a checkpoint directory. */
export const GENERATION_CONFIG = "generation_config.json";

/** Answer length for random weights (a preset, a make-checkpoint directory): they never end an answer on their own. */
export const RANDOM_MAX_NEW_TOKENS = 256;

/** What the server takes from a checkpoint's `generation_config.json`. */
export interface GenerationDefaults {
  /** `max_new_tokens`: tokens generated when a request sets no limit; null when the file has none. */
  maxNewTokens: number | null;
}

/**
 * Reads `dir/generation_config.json`; null when the directory has none. A file that is not JSON, or whose
 * `max_new_tokens` is not a positive integer, is a {@link CheckpointError} naming the file.
 *
 * @example
 * ```ts ignore
 * const g = await readGenerationConfig("/models/tiny"); // { maxNewTokens: 256 } for a make-checkpoint directory
 * ```
 */
export async function readGenerationConfig(dir: string): Promise<GenerationDefaults | null> {
  const file = join(dir, GENERATION_CONFIG);
  let text: string;
  try {
    text = await readTextFile(file);
  } catch (e) {
    if (isNotFound(e)) return null;
    throw new CheckpointError({ kind: "bad_config", message: `cannot read ${file}: ${(e as Error).message}`, file });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError({ kind: "bad_config", message: `${file} is not JSON: ${(e as Error).message}`, file });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CheckpointError({ kind: "bad_config", message: `${file} must hold a JSON object`, file });
  }
  const max = (json as Record<string, unknown>).max_new_tokens;
  if (max === undefined || max === null) return { maxNewTokens: null };
  if (!Number.isSafeInteger(max) || (max as number) < 1) {
    throw new CheckpointError({
      kind: "bad_config",
      message: `${file}: max_new_tokens must be a positive integer, got ${JSON.stringify(max)}; fix or remove it`,
      file,
    });
  }
  return { maxNewTokens: max as number };
}

/**
 * The `generation_config.json` of a checkpoint of `config`, as transformers writes it (token ids from the config),
 * with `max_new_tokens` when given.
 *
 * @example
 * ```ts ignore
 * generationConfigJson(presetConfig("tiny"), 256); // { bos_token_id: 1, eos_token_id: 2, pad_token_id: 11, max_new_tokens: 256 }
 * ```
 */
export function generationConfigJson(config: Mistral4Config, maxNewTokens: number | null): Record<string, unknown> {
  return {
    bos_token_id: config.bos_token_id,
    eos_token_id: config.eos_token_id,
    pad_token_id: config.pad_token_id,
    ...(maxNewTokens === null ? {} : { max_new_tokens: maxNewTokens }),
  };
}
