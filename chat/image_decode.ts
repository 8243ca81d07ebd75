/**
 * Image decoding to 8-bit RGB with the semantics of mistral-common's `_convert_to_rgb` on Pillow 9.4: alpha is
 * composited onto white with Pillow's integer blend, grayscale and palette images expand to RGB, 16-bit samples
 * keep their high byte, and an RGB PNG's tRNS colour key is ignored (Pillow leaves RGB images untouched).
 *
 * JPEG and WebP go through the reference C decoders compiled to WebAssembly (`@jsquash/jpeg`: MozJPEG, i.e.
 * libjpeg-turbo's decoder; `@jsquash/webp`: libwebp), which give the same pixels as Pillow's libjpeg-turbo and
 * libwebp. PNG and GIF are decoded here: both are small container formats, and owning them lets every size be
 * checked before anything is allocated, caps decompression at the size the header promises, and reports truncation.
 *
 * Where Pillow 9.4 is itself inconsistent, the PNG specification is followed instead, on purpose:
 * - 16-bit grayscale PNG: Pillow clips the 16-bit values to 255 (nearly white images); here the high byte is kept,
 *   as Pillow does for every other 16-bit PNG type;
 * - 1/2/4-bit grayscale PNG with a tRNS key: Pillow compares the key with the rescaled 8-bit value (so it never
 *   matches); here the raw sample is compared, as the specification says.
 *
 * Every failure is an {@link InvalidRequestError} (HTTP 400) with `code: "invalid_image"` and `param: "messages"`, which
 * the server narrows to the image's place in the request (`messages[0].content[1].image_url`).
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- a full specifier, so the library imports without our deno.json
import decodeJpegWasm, { init as initJpegWasm } from "npm:@jsquash/jpeg@1.6.0/decode.js";
// deno-lint-ignore no-import-prefix -- a full specifier, so the library imports without our deno.json
import decodeWebpWasm, { init as initWebpWasm } from "npm:@jsquash/webp@1.5.0/decode.js";
import { InvalidRequestError } from "./errors.ts";

/** An image decoded to 8-bit RGB, row-major, 3 bytes per pixel. */
export interface DecodedImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `width × height × 3` bytes: R, G, B per pixel, rows top to bottom. */
  rgb: Uint8Array;
}

/** Size limits checked against the header before any pixel is decoded. */
export interface ImageLimits {
  /** Largest accepted width or height, in pixels. */
  maxSide?: number;
  /** Largest accepted `width × height`. */
  maxPixels?: number;
}

/** Default limits: 16384 pixels a side, 64 Mi pixels in all (a 256 MiB RGBA buffer at most). */
export const DEFAULT_IMAGE_LIMITS: Readonly<Required<ImageLimits>> = { maxSide: 16384, maxPixels: 64 * 1024 * 1024 };

/** The formats {@link decodeImage} reads. */
export type ImageFormat = "png" | "jpeg" | "gif" | "webp";

/** What the header says, read without decoding pixels. */
export interface ImageHeader {
  /** The container format. */
  format: ImageFormat;
  /** Width in pixels (for GIF, the canvas including the first frame). */
  width: number;
  /** Height in pixels (for GIF, the canvas including the first frame). */
  height: number;
}

/** Builds the 400 every image problem becomes. */
export function imageError(message: string, cause?: unknown): InvalidRequestError {
  return new InvalidRequestError(message, { param: "messages", code: "invalid_image", cause });
}

const SUPPORTED = "PNG, JPEG, WebP or GIF";

// ---------------------------------------------------------------------------------------------------------------
// Format detection and header probing

/** Magic numbers of formats we recognise but do not decode, to say which one was sent. */
const UNSUPPORTED_MAGIC: [string, number[]][] = [
  ["BMP", [0x42, 0x4d]],
  ["TIFF", [0x49, 0x49, 0x2a, 0x00]],
  ["TIFF", [0x4d, 0x4d, 0x00, 0x2a]],
  ["ICO", [0x00, 0x00, 0x01, 0x00]],
  ["PDF", [0x25, 0x50, 0x44, 0x46]],
  ["JPEG 2000", [0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50]],
  ["JPEG XL", [0xff, 0x0a]],
  ["Photoshop (PSD)", [0x38, 0x42, 0x50, 0x53]],
];

function startsWith(bytes: Uint8Array, magic: number[], at = 0): boolean {
  if (bytes.length < at + magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[at + i] !== magic[i]) return false;
  return true;
}

function ascii(bytes: Uint8Array, at: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(at, at + length));
}

/**
 * Recognises the container format from the first bytes.
 *
 * @throws {InvalidRequestError} for empty input, a known but unsupported format, or bytes that are not an image.
 */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat {
  if (bytes.length === 0) throw imageError("The image is empty (0 bytes).");
  if (startsWith(bytes, PNG_SIGNATURE)) return "png";
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(bytes, [0x47, 0x49, 0x46, 0x38]) && (bytes[4] === 0x37 || bytes[4] === 0x39) && bytes[5] === 0x61) {
    return "gif";
  }
  if (bytes.length >= 12 && ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 4) === "WEBP") return "webp";
  for (const [name, magic] of UNSUPPORTED_MAGIC) {
    if (startsWith(bytes, magic)) throw imageError(`Unsupported image format (${name}); send ${SUPPORTED}.`);
  }
  if (bytes.length >= 12 && ascii(bytes, 4, 4) === "ftyp") {
    const brand = ascii(bytes, 8, 4);
    const name = brand.startsWith("avi") ? "AVIF" : brand.startsWith("he") || brand === "mif1" ? "HEIF" : "ISO-BMFF";
    throw imageError(`Unsupported image format (${name}); send ${SUPPORTED}.`);
  }
  const head = new TextDecoder().decode(bytes.subarray(0, 256)).trimStart().toLowerCase();
  if (head.startsWith("<svg") || (head.startsWith("<?xml") && head.includes("<svg"))) {
    throw imageError(`Unsupported image format (SVG); send ${SUPPORTED}.`);
  }
  throw imageError(`The data is not an image: expected ${SUPPORTED} bytes.`);
}

/**
 * Reads format and dimensions from the header alone (for GIF: up to the first frame's descriptor).
 *
 * @throws {InvalidRequestError} when the header is missing, truncated or malformed.
 */
export function probeImage(bytes: Uint8Array): ImageHeader {
  const format = sniffImageFormat(bytes);
  switch (format) {
    case "png": {
      const h = readPngHeader(bytes);
      return { format, width: h.width, height: h.height };
    }
    case "jpeg": {
      const j = scanJpeg(bytes);
      return { format, width: j.width, height: j.height };
    }
    case "gif": {
      const g = scanGif(bytes);
      return { format, width: g.canvasWidth, height: g.canvasHeight };
    }
    case "webp":
      return { format, ...readWebpHeader(bytes) };
  }
}

/** Refuses zero-size and oversized images, from header dimensions. */
function checkSize(format: ImageFormat, width: number, height: number, limits: ImageLimits): void {
  const maxSide = limits.maxSide ?? DEFAULT_IMAGE_LIMITS.maxSide;
  const maxPixels = limits.maxPixels ?? DEFAULT_IMAGE_LIMITS.maxPixels;
  const name = format.toUpperCase();
  if (width < 1 || height < 1) throw imageError(`The ${name} image has zero size (${width}×${height}).`);
  if (width > maxSide || height > maxSide) {
    throw imageError(`The ${name} image is too large (${width}×${height}); at most ${maxSide} pixels a side.`);
  }
  if (width * height > maxPixels) {
    throw imageError(
      `The ${name} image is too large (${width}×${height} = ${width * height} pixels); at most ${maxPixels}.`,
    );
  }
}

/**
 * Decodes PNG, JPEG (baseline and progressive), WebP (lossy and lossless, not animated) or the first frame of a GIF
 * to RGB, compositing any transparency onto white. Dimensions are checked against `limits` from the header,
 * before any pixel buffer is allocated.
 *
 * @example
 * ```ts
 * const { width, height, rgb } = await decodeImage(await Deno.readFile("cat.png"));
 * ```
 * @throws {InvalidRequestError} for unsupported, corrupt, truncated, zero-size or oversized images.
 */
export async function decodeImage(bytes: Uint8Array, limits: ImageLimits = {}): Promise<DecodedImage> {
  const format = sniffImageFormat(bytes);
  switch (format) {
    case "png":
      return await decodePng(bytes, limits);
    case "jpeg":
      return await decodeJpeg(bytes, limits);
    case "gif":
      return decodeGif(bytes, limits);
    case "webp":
      return await decodeWebp(bytes, limits);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pixel helpers

/** Pillow's `MULDIV255`: `round(a·b / 255)` in integers. */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/** Pillow's `paste(im, mask=im)` onto an opaque white RGBA canvas, per channel: `c·α/255 + (255 − α)`. */
function overWhite(c: number, alpha: number): number {
  return mulDiv255(c, alpha) + 255 - alpha;
}

/** RGBA (any alpha) → RGB composited on white. */
function rgbaToRgb(rgba: Uint8Array | Uint8ClampedArray, pixels: number): Uint8Array {
  const rgb = new Uint8Array(pixels * 3);
  for (let i = 0, j = 0; i < pixels * 4; i += 4, j += 3) {
    const a = rgba[i + 3];
    if (a === 255) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    } else {
      rgb[j] = overWhite(rgba[i], a);
      rgb[j + 1] = overWhite(rgba[i + 1], a);
      rgb[j + 2] = overWhite(rgba[i + 2], a);
    }
  }
  return rgb;
}

/**
 * A 256-entry RGBA lookup table as Pillow builds one: a gray ramp `(i, i, i, 255)` overwritten by the palette, so
 * an index past the palette's end reads gray rather than failing.
 */
function paletteTable(rgbTriples: Uint8Array | undefined, alphas?: Uint8Array): Uint8Array {
  const table = new Uint8Array(256 * 4);
  for (let i = 0; i < 256; i++) table.set([i, i, i, 255], i * 4);
  if (rgbTriples) {
    for (let i = 0; i < Math.min(256, Math.floor(rgbTriples.length / 3)); i++) {
      table.set(rgbTriples.subarray(i * 3, i * 3 + 3), i * 4);
    }
  }
  if (alphas) { for (let i = 0; i < Math.min(256, alphas.length); i++) table[i * 4 + 3] = alphas[i]; }
  return table;
}

// ---------------------------------------------------------------------------------------------------------------
// PNG

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** Channels per colour type (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA). */
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const PNG_DEPTHS: Record<number, number[]> = {
  0: [1, 2, 4, 8, 16],
  2: [8, 16],
  3: [1, 2, 4, 8],
  4: [8, 16],
  6: [8, 16],
};
/** Adam7 passes: x0, y0, dx, dy. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

interface PngHeader {
  width: number;
  height: number;
  depth: number;
  colorType: number;
  interlaced: boolean;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function u32be(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/** Checks a chunk's CRC (type + data), as Pillow does for the chunks before the image data. */
function checkPngCrc(bytes: Uint8Array, at: number, length: number, type: string): void {
  if (crc32(bytes.subarray(at + 4, at + 8 + length)) !== u32be(bytes, at + 8 + length)) {
    throw imageError(`The PNG image is corrupt (bad ${type} checksum).`);
  }
}

function readPngHeader(bytes: Uint8Array): PngHeader {
  if (bytes.length < 33) throw imageError("The PNG image is truncated (no complete header).");
  if (u32be(bytes, 8) !== 13 || ascii(bytes, 12, 4) !== "IHDR") {
    throw imageError("The PNG image is corrupt (the first chunk is not a valid IHDR).");
  }
  checkPngCrc(bytes, 8, 13, "IHDR");
  const width = u32be(bytes, 16), height = u32be(bytes, 20);
  const depth = bytes[24], colorType = bytes[25], interlace = bytes[28];
  if (!(colorType in PNG_CHANNELS) || !PNG_DEPTHS[colorType].includes(depth)) {
    throw imageError(`The PNG image is corrupt (colour type ${colorType} with bit depth ${depth}).`);
  }
  if (bytes[26] !== 0 || bytes[27] !== 0 || interlace > 1) {
    throw imageError("The PNG image is corrupt (unknown compression, filter or interlace method).");
  }
  return { width, height, depth, colorType, interlaced: interlace === 1 };
}

/** Row length in bytes (without the filter byte) of a `width`-pixel row. */
function pngRowBytes(width: number, bitsPerPixel: number): number {
  return Math.ceil((width * bitsPerPixel) / 8);
}

/** Inflates a zlib stream, stopping at `expected` bytes; returns fewer only if the stream ends or breaks first. */
async function inflateAtMost(parts: Uint8Array[], expected: number): Promise<{ data: Uint8Array; error?: unknown }> {
  const data = new Uint8Array(expected);
  let filled = 0;
  const stream = new Blob(parts as BlobPart[]).stream().pipeThrough(new DecompressionStream("deflate"));
  const reader = stream.getReader();
  try {
    while (filled < expected) {
      const { value, done } = await reader.read();
      if (done) break;
      const n = Math.min(value.length, expected - filled);
      data.set(value.subarray(0, n), filled);
      filled += n;
    }
  } catch (error) {
    // A broken checksum or trailing junk after complete pixel data is tolerated, as zlib-based Pillow does.
    if (filled < expected) return { data: data.subarray(0, filled), error };
  } finally {
    await reader.cancel().catch(() => {});
  }
  return { data: data.subarray(0, filled) };
}

function unfilterRow(filter: number, row: Uint8Array, prev: Uint8Array | undefined, bpp: number): void {
  const n = row.length;
  switch (filter) {
    case 0:
      return;
    case 1:
      for (let i = bpp; i < n; i++) row[i] = row[i] + row[i - bpp];
      return;
    case 2:
      if (prev) { for (let i = 0; i < n; i++) row[i] = row[i] + prev[i]; }
      return;
    case 3:
      for (let i = 0; i < n; i++) row[i] = row[i] + (((i >= bpp ? row[i - bpp] : 0) + (prev ? prev[i] : 0)) >> 1);
      return;
    case 4:
      for (let i = 0; i < n; i++) {
        const a = i >= bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0, c = i >= bpp && prev ? prev[i - bpp] : 0;
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        row[i] = row[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
      }
      return;
    default:
      throw imageError(`The PNG image is corrupt (unknown row filter ${filter}).`);
  }
}

interface PngSamples {
  colorType: number;
  depth: number;
  /** Palette lookup (RGBA) for colour type 3. */
  table?: Uint8Array;
  /** Raw gray value made transparent by tRNS, or -1. */
  grayKey: number;
}

/**
 * One unfiltered row of `width` pixels to 8-bit RGBA, as Pillow reads it: sub-byte gray rescaled to 0–255, 16-bit
 * samples reduced to their high byte.
 */
function pngRowToRgba(
  row: Uint8Array,
  width: number,
  { colorType, depth, table, grayKey }: PngSamples,
  out: Uint8Array,
) {
  if (depth < 8) {
    const mask = (1 << depth) - 1, scale = 255 / mask;
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const v = (row[bit >> 3] >> (8 - depth - (bit & 7))) & mask;
      if (table) out.set(table.subarray(v * 4, v * 4 + 4), x * 4);
      else {out.set(
          [Math.round(v * scale), Math.round(v * scale), Math.round(v * scale), v === grayKey ? 0 : 255],
          x * 4,
        );}
    }
    return;
  }
  const step = depth >> 3; // bytes a sample; the first is the high byte
  switch (colorType) {
    case 0:
      for (let x = 0, i = 0; x < width; x++, i += step) {
        const raw = step === 2 ? (row[i] << 8) | row[i + 1] : row[i];
        out[x * 4] = out[x * 4 + 1] = out[x * 4 + 2] = row[i];
        out[x * 4 + 3] = raw === grayKey ? 0 : 255;
      }
      return;
    case 2:
      for (let x = 0, i = 0; x < width; x++, i += 3 * step) {
        out[x * 4] = row[i];
        out[x * 4 + 1] = row[i + step];
        out[x * 4 + 2] = row[i + 2 * step];
        out[x * 4 + 3] = 255;
      }
      return;
    case 3:
      for (let x = 0; x < width; x++) out.set(table!.subarray(row[x] * 4, row[x] * 4 + 4), x * 4);
      return;
    case 4:
      for (let x = 0, i = 0; x < width; x++, i += 2 * step) {
        out[x * 4] = out[x * 4 + 1] = out[x * 4 + 2] = row[i];
        out[x * 4 + 3] = row[i + step];
      }
      return;
    case 6:
      for (let x = 0, i = 0; x < width; x++, i += 4 * step) {
        out[x * 4] = row[i];
        out[x * 4 + 1] = row[i + step];
        out[x * 4 + 2] = row[i + 2 * step];
        out[x * 4 + 3] = row[i + 3 * step];
      }
      return;
  }
}

async function decodePng(bytes: Uint8Array, limits: ImageLimits): Promise<DecodedImage> {
  const header = readPngHeader(bytes);
  const { width, height, depth, colorType, interlaced } = header;
  checkSize("png", width, height, limits);

  let palette: Uint8Array | undefined, trns: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  let at = 33;
  let ended = false;
  while (at + 8 <= bytes.length) {
    const length = u32be(bytes, at);
    const type = ascii(bytes, at + 4, 4);
    if (length > 0x7fffffff) throw imageError(`The PNG image is corrupt (chunk ${type} of length ${length}).`);
    const dataEnd = at + 8 + length;
    if (type === "IDAT") {
      // A cut-off last IDAT still contributes what it has; whether the pixels are complete is decided by inflating.
      idat.push(bytes.subarray(at + 8, Math.min(dataEnd, bytes.length)));
    } else if (type === "IEND") {
      ended = true;
      break;
    } else if (idat.length === 0 && (type === "PLTE" || type === "tRNS")) {
      if (dataEnd + 4 > bytes.length) break;
      checkPngCrc(bytes, at, length, type);
      if (type === "PLTE") palette = bytes.subarray(at + 8, dataEnd);
      else trns = bytes.subarray(at + 8, dataEnd);
    }
    at = dataEnd + 4;
  }
  if (idat.length === 0) {
    throw imageError(ended ? "The PNG image has no image data." : "The PNG image is truncated (no image data).");
  }
  if (colorType === 3 && !palette) throw imageError("The PNG image is corrupt (palette image without PLTE).");

  const channels = PNG_CHANNELS[colorType];
  const bitsPerPixel = channels * depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const passes = interlaced ? ADAM7 : [[0, 0, 1, 1]];
  let expected = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((width - x0) / dx), ph = Math.ceil((height - y0) / dy);
    if (pw > 0 && ph > 0) expected += ph * (1 + pngRowBytes(pw, bitsPerPixel));
  }
  const { data, error } = await inflateAtMost(idat, expected);
  if (data.length < expected) {
    throw imageError(
      error ? "The PNG image is corrupt or truncated (its compressed data is broken)." : "The PNG image is truncated.",
      error,
    );
  }

  const rgb = new Uint8Array(width * height * 3);
  const samples: PngSamples = {
    colorType,
    depth,
    table: colorType === 3 ? paletteTable(palette, trns) : undefined,
    // The tRNS colour key of a grayscale image, compared with raw samples; RGB keys are ignored (see module doc).
    grayKey: colorType === 0 && trns && trns.length >= 2 ? (trns[0] << 8) | trns[1] : -1,
  };
  const rgba = new Uint8Array(width * 4);
  let offset = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((width - x0) / dx), ph = Math.ceil((height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const rowBytes = pngRowBytes(pw, bitsPerPixel);
    let prev: Uint8Array | undefined;
    for (let py = 0; py < ph; py++) {
      const filter = data[offset];
      const row = data.subarray(offset + 1, offset + 1 + rowBytes);
      offset += 1 + rowBytes;
      unfilterRow(filter, row, prev, bpp);
      prev = row;
      pngRowToRgba(row, pw, samples, rgba);
      const y = y0 + py * dy;
      for (let px = 0, o = (y * width + x0) * 3, step = dx * 3; px < pw; px++, o += step) {
        const i = px * 4, a = rgba[i + 3];
        rgb[o] = overWhite(rgba[i], a);
        rgb[o + 1] = overWhite(rgba[i + 1], a);
        rgb[o + 2] = overWhite(rgba[i + 2], a);
      }
    }
  }
  return { width, height, rgb };
}

// ---------------------------------------------------------------------------------------------------------------
// GIF (first frame)

interface GifScan {
  canvasWidth: number;
  canvasHeight: number;
  frame: { x: number; y: number; width: number; height: number; interlaced: boolean };
  palette?: Uint8Array;
  transparent: number;
  /** Offset of the LZW minimum code size byte. */
  dataAt: number;
}

function u16le(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

/** Walks the GIF blocks up to the first image descriptor, without decoding. */
function scanGif(bytes: Uint8Array): GifScan {
  const truncated = () => imageError("The GIF image is truncated.");
  if (bytes.length < 13) throw truncated();
  const screenWidth = u16le(bytes, 6), screenHeight = u16le(bytes, 8), flags = bytes[10];
  let at = 13;
  let globalPalette: Uint8Array | undefined;
  if (flags & 0x80) {
    const size = 3 << ((flags & 7) + 1);
    if (at + size > bytes.length) throw truncated();
    globalPalette = bytes.subarray(at, at + size);
    at += size;
  }
  let transparent = -1;
  const skipSubBlocks = () => {
    for (;;) {
      if (at >= bytes.length) throw truncated();
      const n = bytes[at++];
      if (n === 0) return;
      at += n;
    }
  };
  for (;;) {
    if (at >= bytes.length) throw truncated();
    const block = bytes[at++];
    if (block === 0x21) {
      if (at >= bytes.length) throw truncated();
      const label = bytes[at++];
      if (label === 0xf9 && bytes[at] === 4) {
        if (at + 6 > bytes.length) throw truncated();
        transparent = bytes[at + 1] & 1 ? bytes[at + 4] : -1;
        at += 5;
      }
      skipSubBlocks();
    } else if (block === 0x2c) {
      if (at + 9 > bytes.length) throw truncated();
      const x = u16le(bytes, at), y = u16le(bytes, at + 2);
      const width = u16le(bytes, at + 4), height = u16le(bytes, at + 6), f = bytes[at + 8];
      at += 9;
      let palette = globalPalette;
      if (f & 0x80) {
        const size = 3 << ((f & 7) + 1);
        if (at + size > bytes.length) throw truncated();
        palette = bytes.subarray(at, at + size);
        at += size;
      }
      // Pillow grows the canvas to hold a first frame that pokes out of the logical screen.
      return {
        canvasWidth: Math.max(screenWidth, x + width),
        canvasHeight: Math.max(screenHeight, y + height),
        frame: { x, y, width, height, interlaced: (f & 0x40) !== 0 },
        palette,
        transparent,
        dataAt: at,
      };
    } else if (block === 0x3b) {
      throw imageError("The GIF image has no frames.");
    } else {
      throw imageError(`The GIF image is corrupt (unknown block 0x${block.toString(16)}).`);
    }
  }
}

/**
 * Decodes the LZW-coded indices of one frame into `out`. Returns how many pixels were produced; throws only when
 * the file ends in the middle of the data (an early end code leaves the rest as it was, as Pillow does).
 */
function gifLzw(bytes: Uint8Array, at: number, out: Uint8Array): number {
  if (at >= bytes.length) throw imageError("The GIF image is truncated.");
  const minSize = bytes[at++];
  if (minSize < 2 || minSize > 11) throw imageError(`The GIF image is corrupt (LZW code size ${minSize}).`);
  const clear = 1 << minSize, end = clear + 1;
  const prefix = new Int16Array(4096), suffix = new Uint8Array(4096), lengths = new Uint16Array(4096);
  for (let i = 0; i < clear; i++) {
    suffix[i] = i;
    lengths[i] = 1;
  }
  let size = minSize + 1, next = end + 1, previous = -1;
  let bits = 0, buffer = 0, produced = 0, blockLeft = 0;
  for (;;) {
    while (bits < size) {
      if (blockLeft === 0) {
        if (at >= bytes.length) throw imageError("The GIF image is truncated.");
        blockLeft = bytes[at++];
        if (blockLeft === 0) return produced;
      }
      if (at >= bytes.length) throw imageError("The GIF image is truncated.");
      buffer |= bytes[at++] << bits;
      bits += 8;
      blockLeft--;
    }
    const code = buffer & ((1 << size) - 1);
    buffer >>>= size;
    bits -= size;
    if (code === clear) {
      size = minSize + 1;
      next = end + 1;
      previous = -1;
      continue;
    }
    if (code === end) return produced;
    if (previous === -1) {
      if (code >= clear) throw imageError("The GIF image is corrupt (bad LZW code).");
      if (produced < out.length) out[produced++] = code;
      previous = code;
      continue;
    }
    const known = code < next;
    if (!known && code !== next) throw imageError("The GIF image is corrupt (bad LZW code).");
    const entry = known ? code : previous;
    // Write the entry backwards from its end; `first` is its first index.
    const length = lengths[entry];
    let c = entry;
    for (let i = length - 1; i >= 0; i--) {
      if (produced + i < out.length) out[produced + i] = suffix[c];
      if (i > 0) c = prefix[c];
    }
    const first = suffix[c];
    produced += length;
    if (!known) {
      if (produced < out.length) out[produced] = first;
      produced++;
    }
    if (next < 4096) {
      prefix[next] = previous;
      suffix[next] = first;
      lengths[next] = lengths[previous] + 1;
      next++;
      if (next === 1 << size && size < 12) size++;
    }
    previous = code;
    if (produced >= out.length) return out.length;
  }
}

function decodeGif(bytes: Uint8Array, limits: ImageLimits): DecodedImage {
  const scan = scanGif(bytes);
  const { canvasWidth: width, canvasHeight: height, frame, transparent } = scan;
  checkSize("gif", width, height, limits);
  const indices = new Uint8Array(frame.width * frame.height);
  gifLzw(bytes, scan.dataAt, indices);
  // Pillow starts frame 0 from a canvas of the transparent index if there is one, else index 0.
  const canvas = new Uint8Array(width * height).fill(transparent >= 0 ? transparent : 0);
  const rows: number[] = [];
  if (frame.interlaced) {
    for (const [start, step] of [[0, 8], [4, 8], [2, 4], [1, 2]]) {
      for (let r = start; r < frame.height; r += step) rows.push(r);
    }
  } else {
    for (let r = 0; r < frame.height; r++) rows.push(r);
  }
  rows.forEach((r, i) => {
    canvas.set(indices.subarray(i * frame.width, (i + 1) * frame.width), (frame.y + r) * width + frame.x);
  });
  // Without any palette Pillow opens the GIF as grayscale: the ramp table gives index i → (i, i, i).
  const table = paletteTable(scan.palette);
  if (transparent >= 0) table[transparent * 4 + 3] = 0;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < canvas.length; i++) {
    const t = canvas[i] * 4, a = table[t + 3];
    rgb[i * 3] = overWhite(table[t], a);
    rgb[i * 3 + 1] = overWhite(table[t + 1], a);
    rgb[i * 3 + 2] = overWhite(table[t + 2], a);
  }
  return { width, height, rgb };
}

// ---------------------------------------------------------------------------------------------------------------
// JPEG (via MozJPEG in WebAssembly)

interface JpegScan {
  width: number;
  height: number;
  components: number;
  /** SOF marker (0xc0 baseline, 0xc2 progressive, ...). */
  sof: number;
}

/**
 * Walks the JPEG marker segments to the end of image: finds the frame header (size, components) and proves the file
 * is complete (libjpeg itself would pad a truncated file with gray and only warn).
 */
function scanJpeg(bytes: Uint8Array, requireEnd = false): JpegScan {
  const truncated = () => imageError("The JPEG image is truncated.");
  let frame: JpegScan | undefined;
  let at = 2;
  for (;;) {
    if (at >= bytes.length) throw truncated();
    if (bytes[at] !== 0xff) throw imageError("The JPEG image is corrupt (marker expected).");
    while (at < bytes.length && bytes[at] === 0xff) at++;
    if (at >= bytes.length) throw truncated();
    const marker = bytes[at++];
    if (marker === 0xd9) {
      if (!frame) throw imageError("The JPEG image has no frame header.");
      return frame;
    }
    if ((marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) continue;
    if (at + 2 > bytes.length) throw truncated();
    const length = (bytes[at] << 8) | bytes[at + 1];
    if (length < 2) throw imageError("The JPEG image is corrupt (bad segment length).");
    if (at + length > bytes.length) throw truncated();
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof && !frame) {
      if (length < 8) throw imageError("The JPEG image is corrupt (short frame header).");
      frame = {
        height: (bytes[at + 3] << 8) | bytes[at + 4],
        width: (bytes[at + 5] << 8) | bytes[at + 6],
        components: bytes[at + 7],
        sof: marker,
      };
      if (!requireEnd) return frame;
    }
    at += length;
    if (marker === 0xda) {
      // Entropy-coded data runs to the next marker that is neither a stuffed 0xff00 nor a restart marker.
      while (at + 1 < bytes.length && !(bytes[at] === 0xff && bytes[at + 1] !== 0 && (bytes[at + 1] & 0xf8) !== 0xd0)) {
        at++;
      }
      if (at + 1 >= bytes.length) throw truncated();
    }
  }
}

/** The last message the WebAssembly codecs printed, used to explain their failures. */
let codecMessage = "";
let codecsReady: Promise<void> | undefined;

/** Routes the codecs' stderr into {@link codecMessage} instead of the server's console. */
function initCodecs(): Promise<void> {
  const options = {
    print: () => {},
    printErr: (message: string) => {
      codecMessage = message;
    },
  };
  return codecsReady ??= Promise.all([initJpegWasm(options), initWebpWasm(options)]).then(() => {});
}

/** The codecs hand back 8-bit RGBA `ImageData`. */
function fromImageData(data: ImageData): DecodedImage {
  const rgba = data.data as Uint8ClampedArray;
  return { width: data.width, height: data.height, rgb: rgbaToRgb(rgba, data.width * data.height) };
}

async function decodeJpeg(bytes: Uint8Array, limits: ImageLimits): Promise<DecodedImage> {
  const header = scanJpeg(bytes);
  checkSize("jpeg", header.width, header.height, limits);
  const scan = scanJpeg(bytes, true);
  if (scan.components !== 1 && scan.components !== 3) {
    throw imageError(`${scan.components}-channel (CMYK/YCCK) JPEG images are not supported; send an RGB image.`);
  }
  if (scan.sof === 0xc3 || scan.sof === 0xc7 || scan.sof === 0xcb || scan.sof === 0xcf) {
    throw imageError("Lossless JPEG images are not supported; send a baseline or progressive JPEG.");
  }
  await initCodecs();
  codecMessage = "";
  let data: ImageData;
  try {
    data = await decodeJpegWasm(bytes.slice().buffer);
  } catch (cause) {
    throw imageError(`The JPEG image could not be decoded${codecMessage ? ` (${codecMessage})` : ""}.`, cause);
  }
  return fromImageData(data);
}

// ---------------------------------------------------------------------------------------------------------------
// WebP (via libwebp in WebAssembly)

function readWebpHeader(bytes: Uint8Array): { width: number; height: number; animated: boolean } {
  const truncated = () => imageError("The WebP image is truncated.");
  if (bytes.length < 30) throw truncated();
  const chunk = ascii(bytes, 12, 4);
  const d = 20;
  if (chunk === "VP8X") {
    const width = 1 + (bytes[d + 4] | (bytes[d + 5] << 8) | (bytes[d + 6] << 16));
    const height = 1 + (bytes[d + 7] | (bytes[d + 8] << 8) | (bytes[d + 9] << 16));
    return { width, height, animated: (bytes[d] & 0x02) !== 0 };
  }
  if (chunk === "VP8 ") {
    if (bytes[d + 3] !== 0x9d || bytes[d + 4] !== 0x01 || bytes[d + 5] !== 0x2a) {
      throw imageError("The WebP image is corrupt (bad VP8 frame header).");
    }
    return { width: u16le(bytes, d + 6) & 0x3fff, height: u16le(bytes, d + 8) & 0x3fff, animated: false };
  }
  if (chunk === "VP8L") {
    if (bytes[d] !== 0x2f) throw imageError("The WebP image is corrupt (bad VP8L signature).");
    const bits = bytes[d + 1] | (bytes[d + 2] << 8) | (bytes[d + 3] << 16) | (bytes[d + 4] << 24);
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, animated: false };
  }
  throw imageError(`The WebP image is corrupt (unknown first chunk "${chunk}").`);
}

async function decodeWebp(bytes: Uint8Array, limits: ImageLimits): Promise<DecodedImage> {
  const header = readWebpHeader(bytes);
  checkSize("webp", header.width, header.height, limits);
  if (header.animated) throw imageError("Animated WebP images are not supported; send a still image.");
  const riffEnd = 8 + (bytes[4] | (bytes[5] << 8) | (bytes[6] << 16) | (bytes[7] << 24));
  if (riffEnd > bytes.length) throw imageError("The WebP image is truncated.");
  await initCodecs();
  codecMessage = "";
  let data: ImageData;
  try {
    data = await decodeWebpWasm(bytes.slice().buffer);
  } catch (cause) {
    throw imageError(`The WebP image could not be decoded${codecMessage ? ` (${codecMessage})` : ""}.`, cause);
  }
  return fromImageData(data);
}
