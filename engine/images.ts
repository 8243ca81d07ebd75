/**
 * A chat prompt's images, from URLs to engine inputs: each `[IMG]` placeholder the encoder left is fetched (or
 * decoded from its `data:` URL), preprocessed for the engine's model (MODEL.md §3), and expanded into its token
 * layout, so the prompt the engine sees — and the usage the client is billed — has the image's real token count.
 *
 * @module
 */

import type { ImageRef } from "../chat/encode.ts";
import { badRequest, InvalidRequestError } from "../chat/errors.ts";
import { type ImageTokenIds, type LoadImageOptions, loadImageUrl, preprocessImage } from "../chat/image.ts";
import { expandImagePlaceholders } from "../chat/image_prompt.ts";
import type { RequestContext } from "./request_context.ts";
import type { ImageInput } from "./types.ts";

/** Limits on a request's images. */
export interface ImageOptions extends LoadImageOptions {
  /** Most images in one request (vLLM's `limit_mm_per_prompt`). */
  maxImages: number;
}

/** Defaults: 20 MB per image, 10 s per download, public addresses only, 8 images per request. */
export const DEFAULT_IMAGE_OPTIONS: Readonly<ImageOptions> = {
  maxBytes: 20_000_000,
  timeoutMs: 10_000,
  maxImages: 8,
};

/** The prompt with its images expanded, and the engine's inputs for them. */
export interface PromptImages {
  ids: number[];
  images: ImageInput[];
}

/**
 * Loads and places the images of an encoded prompt (`refs` as `encodeChat` returns them). Every problem with an
 * image — no vision in this model, too many, a bad URL, undecodable bytes — is a 400 whose `param` is the image's
 * place in the request (`messages[0].content[1].image_url`). `signal` (the client went away) aborts the downloads and
 * closes their connections.
 */
export async function promptImages(
  ctx: RequestContext,
  ids: number[],
  refs: readonly ImageRef[],
  options: { signal?: AbortSignal } = {},
): Promise<PromptImages> {
  if (refs.length === 0) return { ids, images: [] };
  const vision = ctx.engine.vision;
  if (!vision) {
    throw badRequest(
      `The model '${ctx.modelName}' does not accept images; send text only.`,
      paramOf(refs[0]),
      "unsupported_content",
    );
  }
  const limits = ctx.images;
  if (refs.length > limits.maxImages) {
    throw badRequest(
      `This request has ${refs.length} images; at most ${limits.maxImages} are accepted per request.`,
      paramOf(refs[limits.maxImages]),
      "too_many_images",
    );
  }
  const config = { patchSize: vision.patchSize, mergeSize: vision.mergeSize, maxImageSize: vision.maxImageSize };
  // Downloads overlap; decoding and resizing (CPU) go one image at a time.
  const load = { ...limits, signal: options.signal };
  const bytes = await Promise.all(refs.map((r, i) => named(refs, i, () => loadImageUrl(r.url, load))));
  const pre = [];
  for (let i = 0; i < bytes.length; i++) pre.push(await named(refs, i, () => preprocessImage(bytes[i], config)));
  const expanded = expandImagePlaceholders(ids, refs, pre.map((p) => p.grid), imageTokenIds(ctx));
  const keys = await Promise.all(
    bytes.map(async (b) => new Uint32Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>))),
  );
  return {
    ids: expanded.ids,
    images: pre.map((p, i) => ({ pixels: p.pixels, grid: p.grid, positions: expanded.imageRows[i], key: keys[i] })),
  };
}

/** The tokenizer's image control ids (the prompt is the tokenizer's, so its ids are the ones to lay out). */
function imageTokenIds(ctx: RequestContext): ImageTokenIds {
  const t = ctx.tokenizer;
  return { img: t.specialId("[IMG]"), imgBreak: t.specialId("[IMG_BREAK]"), imgEnd: t.specialId("[IMG_END]") };
}

/** Where an image is in the request; "messages" for a reference made without one. */
function paramOf(ref: ImageRef): string {
  return ref.param ?? "messages";
}

/** Runs `fn`; a client error it throws names image `i` of `refs`: its place in the request and, among several, which. */
async function named<T>(refs: readonly ImageRef[], i: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof InvalidRequestError)) throw e;
    const message = refs.length === 1 ? e.message : `Image ${i + 1} of ${refs.length}: ${e.message}`;
    throw new InvalidRequestError(message, { param: paramOf(refs[i]), code: e.code, cause: e });
  }
}
