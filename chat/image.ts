/**
 * Image inputs for the vision encoder: fetching (`data:` and http(s) URLs), decoding, and Mistral's
 * preprocessing exactly as mistral-common 1.11 does it (MODEL.md §3):
 *
 * 1. RGB, transparency composited on white ({@link decodeImage});
 * 2. token grid: if the long side exceeds `maxImageSize`, the size is divided by `max(w, h) / maxImageSize` and
 *    rounded (Python's `round`, half to even); then `cols = (w − 1) // (patch·merge) + 1`, likewise rows;
 * 3. OpenCV INTER_CUBIC resize of the float image to exactly `(patch·merge·cols) × (patch·merge·rows)`, no clamping
 *    ({@link resizeCubic});
 * 4. `/255` in float32, then `(x − mean) / std` per channel with CLIP's mean and std, channels first.
 *
 * The prompt side is {@link imageTokenLayout}: `cols × [IMG]` then `[IMG_BREAK]` per row, the last break being
 * `[IMG_END]`.
 *
 * @module
 */

import { InvalidRequestError } from "./errors.ts";
import { BodyTooLargeError, pinnedGet } from "./image_fetch.ts";
import { type DecodedImage, decodeImage, type ImageLimits } from "./image_decode.ts";
import { resizeCubic } from "./image_resize.ts";

export {
  type DecodedImage,
  decodeImage,
  DEFAULT_IMAGE_LIMITS,
  imageError,
  type ImageFormat,
  type ImageHeader,
  type ImageLimits,
  probeImage,
  sniffImageFormat,
} from "./image_decode.ts";
export { resizeCubic } from "./image_resize.ts";

/** CLIP's per-channel mean (RGB), used by every Pixtral-style encoder. */
export const IMAGE_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
/** CLIP's per-channel standard deviation (RGB). */
export const IMAGE_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** The vision configuration that shapes preprocessing (tekken.json's `image` section). */
export interface ImageConfig {
  /** Side of one ViT patch in pixels (14 for Mistral Small 4). */
  patchSize: number;
  /** Patches merged per token along each axis (2 for Mistral Small 4; 1 means no merge). */
  mergeSize: number;
  /** Longest side, in pixels, before the image is scaled down (1540 for Mistral Small 4). */
  maxImageSize: number;
}

/** Mistral Small 4's vision preprocessing (MODEL.md §3). */
export const SMALL4_IMAGE_CONFIG: Readonly<ImageConfig> = { patchSize: 14, mergeSize: 2, maxImageSize: 1540 };

/** The grid of image tokens: one token per `(patch·merge)²` pixel block of the resized image. */
export interface TokenGrid {
  /** Token rows (`[IMG_BREAK]`-terminated lines in the prompt). */
  rows: number;
  /** Tokens per row. */
  cols: number;
}

/** An image ready for the vision encoder. */
export interface PreprocessedImage {
  /** Width after resizing: `patch · merge · grid.cols`. */
  width: number;
  /** Height after resizing: `patch · merge · grid.rows`. */
  height: number;
  /** The token grid (merged patches). */
  grid: TokenGrid;
  /** Normalised pixels, channels first: `[3][height][width]`. */
  pixels: Float32Array;
}

/** Python's `round()` on a double: halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function checkConfig(config: ImageConfig): void {
  for (const key of ["patchSize", "mergeSize", "maxImageSize"] as const) {
    const v = config[key];
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`image config ${key} must be a positive integer, got ${v}`);
  }
}

/**
 * The token grid mistral-common's `ImageEncoder._image_to_num_tokens` gives an image of `width × height`.
 *
 * @example
 * ```ts
 * imageTokenGrid(451, 300, SMALL4_IMAGE_CONFIG); // { rows: 11, cols: 17 }
 * ```
 */
export function imageTokenGrid(width: number, height: number, config: ImageConfig): TokenGrid {
  checkConfig(config);
  let w = width, h = height;
  const ratio = Math.max(h / config.maxImageSize, w / config.maxImageSize);
  if (ratio > 1) {
    w = roundHalfEven(w / ratio);
    h = roundHalfEven(h / ratio);
  }
  const block = config.patchSize * config.mergeSize;
  // A side that scales to 0 pixels (extreme aspect ratio) would get 0 tokens, which mistral-common rejects with an
  // assertion; MODEL.md §3 makes every image of at least 1×1 valid, so it gets one token.
  return { rows: Math.max(1, Math.floor((h - 1) / block) + 1), cols: Math.max(1, Math.floor((w - 1) / block) + 1) };
}

/** One of the three image control tokens. */
export type ImageTokenName = "[IMG]" | "[IMG_BREAK]" | "[IMG_END]";

/** Ids of the image control tokens; {@link SMALL4_IMAGE_TOKEN_IDS} are the v15 tokenizer's. */
export interface ImageTokenIds {
  /** `[IMG]`: one per token-grid cell; receives an image vector. */
  img: number;
  /** `[IMG_BREAK]`: ends each row but the last. */
  imgBreak: number;
  /** `[IMG_END]`: ends the last row. */
  imgEnd: number;
}

/** The control-token ids of the real tekken v15 file (MODEL.md §4). */
export const SMALL4_IMAGE_TOKEN_IDS: Readonly<ImageTokenIds> = { img: 10, imgBreak: 12, imgEnd: 13 };

/**
 * The prompt tokens that stand for an image: each of the `rows` rows is `cols × [IMG]` then `[IMG_BREAK]`, and the
 * last `[IMG_BREAK]` is `[IMG_END]`. Only the `[IMG]` positions receive image vectors (row-major).
 *
 * @example
 * ```ts
 * imageTokenLayout({ rows: 2, cols: 2 }).names;
 * // ["[IMG]", "[IMG]", "[IMG_BREAK]", "[IMG]", "[IMG]", "[IMG_END]"]
 * ```
 */
export function imageTokenLayout(
  grid: TokenGrid,
  ids: ImageTokenIds = SMALL4_IMAGE_TOKEN_IDS,
): { names: ImageTokenName[]; ids: number[] } {
  if (!Number.isInteger(grid.rows) || !Number.isInteger(grid.cols) || grid.rows < 1 || grid.cols < 1) {
    throw new RangeError(`token grid must be at least 1×1, got ${grid.rows}×${grid.cols}`);
  }
  const names: ImageTokenName[] = [];
  const out: number[] = [];
  for (let r = 0; r < grid.rows; r++) {
    for (let c = 0; c < grid.cols; c++) {
      names.push("[IMG]");
      out.push(ids.img);
    }
    const last = r === grid.rows - 1;
    names.push(last ? "[IMG_END]" : "[IMG_BREAK]");
    out.push(last ? ids.imgEnd : ids.imgBreak);
  }
  return { names, ids: out };
}

/**
 * Decodes an image and preprocesses it exactly as mistral-common does for `config` (see the module doc).
 *
 * @example
 * ```ts
 * const img = await preprocessImage(await Deno.readFile("cat.png"), SMALL4_IMAGE_CONFIG);
 * img.grid; // { rows: 11, cols: 17 }; img.pixels.length === 3 * img.height * img.width
 * ```
 * @throws {InvalidRequestError} when the bytes are not a supported, valid image within `limits`.
 */
export async function preprocessImage(
  bytes: Uint8Array,
  config: ImageConfig,
  limits: ImageLimits = {},
): Promise<PreprocessedImage> {
  checkConfig(config);
  return preprocessDecoded(await decodeImage(bytes, limits), config);
}

/**
 * {@link preprocessImage} for an image already decoded to RGB (token grid, resize, normalisation).
 *
 * @example
 * ```ts
 * const gray = { width: 1, height: 1, rgb: new Uint8Array([128, 128, 128]) };
 * preprocessDecoded(gray, SMALL4_IMAGE_CONFIG).grid; // { rows: 1, cols: 1 }
 * ```
 */
export function preprocessDecoded(image: DecodedImage, config: ImageConfig): PreprocessedImage {
  if (image.width < 1 || image.height < 1 || image.rgb.length !== image.width * image.height * 3) {
    throw new RangeError(`expected ${image.width}×${image.height}×3 RGB bytes, got ${image.rgb.length}`);
  }
  const grid = imageTokenGrid(image.width, image.height, config);
  const block = config.patchSize * config.mergeSize;
  const width = grid.cols * block, height = grid.rows * block;
  const resized = resizeCubic(image.rgb, image.width, image.height, 3, width, height);
  return { width, height, grid, pixels: normalizeChw(resized, width, height) };
}

/**
 * mistral-common's `normalize`: `x / 255` on the float32 image stays float32 (NumPy keeps the array's type for a
 * scalar operand); subtracting the float64 mean and dividing by the std happen in float64; the result is stored as
 * float32.
 */
function normalizeChw(hwc: Float32Array, width: number, height: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const mean = IMAGE_MEAN[c], std = IMAGE_STD[c];
    for (let i = 0; i < plane; i++) out[c * plane + i] = (Math.fround(hwc[i * 3 + c] / 255) - mean) / std;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// URLs

/** Options of {@link loadImageUrl}. */
export interface LoadImageOptions {
  /** Largest accepted image, in bytes (decoded size for `data:` URLs). */
  maxBytes: number;
  /** Time allowed for the whole download, redirects included, in milliseconds. */
  timeoutMs: number;
  /**
   * Private, loopback, link-local and other non-public addresses are refused by default (they reach the server's
   * own network). `true` lets any through (tests, trusted deployments); a list of origins (`"http://10.0.0.5:8080"`)
   * lets only those through.
   */
  allowPrivate?: boolean | readonly string[];
  /** At most this many redirects are followed (default 3); each target is checked like the first URL. */
  maxRedirects?: number;
  /**
   * Resolves a host name to its addresses (default: the system resolver). The download connects to the addresses
   * it returned and were checked, never resolving the name again. Tests inject one.
   */
  resolve?: (hostname: string) => Promise<string[]>;
  /** Aborts the download (the client went away): the connection closes at once. */
  signal?: AbortSignal;
  /** Root certificates (PEM) trusted for https images besides the system's: a private CA, or a test's. */
  caCerts?: string[];
}

function urlError(message: string, cause?: unknown): InvalidRequestError {
  return new InvalidRequestError(message, { param: "messages", code: "invalid_image_url", cause });
}

/**
 * Returns the bytes behind an image URL: a `data:` URL (base64) or an http(s) URL fetched with a size limit, a
 * timeout, redirects followed by hand (at most 3) and every hop's host resolved once, checked, and connected to at
 * that address (`image_fetch.ts`), so a request cannot make the server fetch from its private network, not even by
 * DNS rebinding. `options.signal` aborts the download and closes its connection.
 *
 * @example
 * ```ts
 * const bytes = await loadImageUrl("data:image/png;base64,iVBORw0KGgo...", { maxBytes: 20e6, timeoutMs: 10_000 });
 * ```
 * @throws {InvalidRequestError} for malformed, oversized, unreachable, slow or refused URLs.
 */
export async function loadImageUrl(url: string, options: LoadImageOptions): Promise<Uint8Array> {
  if (url.startsWith("data:")) return decodeDataUrl(url, options.maxBytes);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw urlError(`Invalid image URL ${JSON.stringify(clip(url))}: send an http(s) or data: URL.`, cause);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw urlError(`Unsupported image URL scheme ${JSON.stringify(parsed.protocol)}: send an http(s) or data: URL.`);
  }
  return await fetchImage(parsed, options);
}

function clip(s: string, n = 100): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

/** `data:[<mediatype>][;base64],<data>`: only base64 payloads carry binary images faithfully. */
function decodeDataUrl(url: string, maxBytes: number): Uint8Array {
  const comma = url.indexOf(",");
  if (comma < 0) throw urlError("Malformed data: URL (no comma): use data:image/png;base64,<data>.");
  const meta = url.slice(5, comma).toLowerCase();
  if (!meta.split(";").includes("base64")) {
    throw urlError("data: image URLs must be base64-encoded: use data:image/png;base64,<data>.");
  }
  const mediaType = meta.split(";")[0];
  if (mediaType && !mediaType.startsWith("image/") && mediaType !== "application/octet-stream") {
    throw urlError(`data: URL has media type ${JSON.stringify(mediaType)}; an image/* type is expected.`);
  }
  const payload = url.slice(comma + 1).replace(/\s+/g, "");
  if (Math.floor((payload.length * 3) / 4) - 2 > maxBytes) {
    throw urlError(`The data: URL image is larger than ${maxBytes} bytes.`);
  }
  let binary: string;
  try {
    // Browsers' atob takes base64 only; base64url characters are mapped so both spellings are accepted.
    binary = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
  } catch (cause) {
    throw urlError("The data: URL is not valid base64.", cause);
  }
  if (binary.length > maxBytes) throw urlError(`The data: URL image is larger than ${maxBytes} bytes.`);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function systemResolve(hostname: string): Promise<string[]> {
  const { lookup } = await import("node:dns/promises");
  const found = await lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

function parseIpv4(s: string): number[] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  return parts.every((p) => p <= 255) ? parts : undefined;
}

function hexGroup(g: string): number {
  return /^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16) : NaN;
}

/** Expands an IPv6 literal (no brackets, no zone) to its 8 groups. */
function parseIpv6(s: string): number[] | undefined {
  if (!s.includes(":")) return undefined;
  let text = s;
  // A dotted IPv4 tail (`::ffff:10.0.0.1`) is two groups.
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const p = parseIpv4(v4[2]);
    if (!p) return undefined;
    text = `${v4[1]}${((p[0] << 8) | p[1]).toString(16)}:${((p[2] << 8) | p[3]).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === "" ? [] : h.split(":").map(hexGroup));
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const known = head.length + tail.length;
  if ([...head, ...tail].some(Number.isNaN) || known > 8 || (halves.length === 1 && known !== 8)) return undefined;
  if (halves.length === 2 && known === 8) return undefined;
  return [...head, ...new Array(8 - known).fill(0), ...tail];
}

/** True for addresses that must not be fetched by default: anything not globally routable. */
export function isPrivateAddress(address: string): boolean {
  const a = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const v4 = parseIpv4(a);
  if (v4) {
    const [x, y] = v4;
    return x === 0 || x === 10 || x === 127 || x >= 224 || // this network, private, loopback, multicast, reserved
      (x === 100 && y >= 64 && y <= 127) || // carrier-grade NAT
      (x === 169 && y === 254) || // link-local (cloud metadata lives here)
      (x === 172 && y >= 16 && y <= 31) ||
      (x === 192 && y === 168) ||
      (x === 192 && y === 0 && v4[2] === 0) || // IETF protocol assignments
      (x === 198 && (y === 18 || y === 19)); // benchmarking
  }
  const v6 = parseIpv6(a);
  if (!v6) return true; // not an address we understand: refuse rather than guess
  const [g0, g1, g2, g3, g4, g5, g6, g7] = v6;
  const embedded = `${g6 >> 8}.${g6 & 255}.${g7 >> 8}.${g7 & 255}`;
  if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0 && (g5 === 0xffff || g5 === 0)) {
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), :: and ::1
    return g5 === 0 && g6 === 0 && g7 <= 1 ? true : isPrivateAddress(embedded);
  }
  if (g0 === 0x64 && g1 === 0xff9b && !g2 && !g3 && !g4 && !g5) return isPrivateAddress(embedded); // NAT64
  return (g0 & 0xfe00) === 0xfc00 || // unique local
    (g0 & 0xffc0) === 0xfe80 || // link-local
    (g0 & 0xff00) === 0xff00 || // multicast
    g0 === 0x2001 && g1 === 0x0db8; // documentation
}

/** `allowPrivate` origins as `URL.origin` spells them (`http://h:80` is `http://h`); unparsable ones match nothing. */
function normalOrigin(origin: string): string | undefined {
  try {
    return new URL(origin).origin;
  } catch {
    return undefined;
  }
}

/**
 * The addresses to connect to for `url`: its host resolved once, and refused if any is non-public (unless
 * allowed). The caller connects to these very addresses, so a DNS answer that changes after this check (rebinding)
 * is never used.
 */
async function checkedAddresses(url: URL, options: LoadImageOptions, signal: AbortSignal): Promise<string[]> {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  let addresses: string[];
  if (parseIpv4(host) || host.includes(":")) addresses = [host];
  else if (host === "localhost" || host.endsWith(".localhost")) addresses = ["127.0.0.1"];
  else {
    try {
      addresses = await untilAborted((options.resolve ?? systemResolve)(host), signal);
    } catch (cause) {
      if (signal.aborted) throw cause;
      throw urlError(`Could not resolve the image host ${JSON.stringify(host)}.`, cause);
    }
    if (addresses.length === 0) throw urlError(`Could not resolve the image host ${JSON.stringify(host)}.`);
  }
  const allow = options.allowPrivate ?? false;
  if (allow === true || (Array.isArray(allow) && allow.some((o) => normalOrigin(o) === url.origin))) return addresses;
  if (addresses.some(isPrivateAddress)) {
    throw urlError(`Refusing to fetch the image from ${url.origin}: it is a private or local address.`);
  }
  return addresses;
}

/** `p`, or the signal's reason as soon as it aborts (a lookup cannot be cancelled, only no longer waited for). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

async function fetchImage(start: URL, options: LoadImageOptions): Promise<Uint8Array> {
  const { maxBytes, timeoutMs } = options;
  const maxRedirects = options.maxRedirects ?? 3;
  // A timer of our own (not AbortSignal.timeout) so that it is cleared as soon as the download settles.
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException("image download timed out", "TimeoutError")),
    timeoutMs,
  );
  const signal = options.signal ? AbortSignal.any([controller.signal, options.signal]) : controller.signal;
  let url = start;
  try {
    for (let hop = 0;; hop++) {
      const addresses = await checkedAddresses(url, options, signal);
      const response = await pinnedGet(url, {
        addresses,
        signal,
        maxBytes,
        headers: { accept: "image/*" },
        caCerts: options.caCerts,
      });
      if (response.status >= 300 && response.status < 400 && response.headers.has("location")) {
        if (hop >= maxRedirects) throw urlError(`Too many redirects fetching the image (more than ${maxRedirects}).`);
        const next = new URL(response.headers.get("location")!, url);
        if (next.protocol !== "http:" && next.protocol !== "https:") {
          throw urlError(`The image URL redirects to an unsupported scheme ${JSON.stringify(next.protocol)}.`);
        }
        url = next;
        continue;
      }
      if (response.status >= 300) {
        throw urlError(`Fetching the image from ${url.origin} failed: HTTP ${response.status}.`);
      }
      return response.body;
    }
  } catch (error) {
    if (error instanceof InvalidRequestError) throw error;
    if (options.signal?.aborted) {
      throw urlError("The request was cancelled while its image was downloading.", error);
    }
    if (controller.signal.aborted) {
      throw urlError(`Fetching the image from ${start.origin} took longer than ${timeoutMs} ms.`, error);
    }
    if (error instanceof BodyTooLargeError) {
      const declared = error.declared === null ? "" : ` (${error.declared})`;
      throw urlError(`The image at ${url.origin} is larger than ${maxBytes} bytes${declared}.`, error);
    }
    throw urlError(`Fetching the image from ${url.origin} failed: ${(error as Error).message}`, error);
  } finally {
    clearTimeout(timer);
  }
}
