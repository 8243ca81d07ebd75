/**
 * Test helpers: paths to `../shared/fixtures` (beside the repository, as on CI) and a seeded PRNG.
 *
 * @module
 */

/** URL of a fixture file under `../shared/fixtures/`. */
export function fixture(path: string): URL {
  return new URL(`../../shared/fixtures/${path}`, import.meta.url);
}

/** Reads and parses a JSON fixture. */
export function fixtureJson<T = unknown>(path: string): T {
  return JSON.parse(Deno.readTextFileSync(fixture(path))) as T;
}

/** A small seeded PRNG (mulberry32) returning floats in [0, 1): failures reproduce from the seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One template's rendering of a conversation in `chat/rendered_expectations.json`. */
export interface ChatRendering {
  name: string;
  rendered: string | null;
  error: string | null;
}

/** `chat/rendered_expectations.json`: renderings per template, and the v15 prompt ids. */
export interface ChatRenderedExpectations {
  renderings: Record<string, ChatRendering[]>;
  v15_image_think_prompt_token_ids: { cases: { name: string; prompt_token_ids: number[] }[] };
}
