/**
 * The chat page: `GET /` (the page) and `GET /web/{file}` (its script, style and the in-page engine's worker), served
 * from the committed bundle in `web/dist/` (`deno task build:web`). No API key is needed for these files; the page
 * asks for one when `/v1/*` answers 401.
 *
 * Every file carries a strict Content-Security-Policy (scripts and styles only from this origin, nothing inline,
 * connections only back here) and the cross-origin isolation headers the in-page engine's `SharedArrayBuffer` needs.
 *
 * @module
 */

import { ApiError } from "./errors.ts";

/**
 * The page's policy: its own script and style only; images also as the data: and blob: URLs of attachments;
 * `wasm-unsafe-eval` for the in-page engine's kernels; workers from this origin (or blob: ones it makes).
 */
export const WEB_UI_CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "img-src 'self' data: blob:",
  "style-src 'self'",
  "connect-src 'self'",
  "worker-src 'self' blob:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers on every page file. */
export const WEB_UI_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": WEB_UI_CSP,
  "x-content-type-options": "nosniff",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
  "referrer-policy": "no-referrer",
  // The files change with the server's version: revalidate rather than run an old page against a new API.
  "cache-control": "no-cache",
};

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  wasm: "application/wasm",
  json: "application/json",
  map: "application/json",
};

/** Names a request may ask for under `/web/`: one path segment, a known extension (no `..`, no hidden files). */
const FILE_NAME = /^[a-z0-9][a-z0-9_-]*(\.[a-z0-9]+)*\.(html|js|css|wasm|json|map)$/i;

const DIST = new URL("../web/dist/", import.meta.url);

/** Reads a bundle file from disk, or fetches it when the server was imported over http(s). Null when absent. */
async function readDist(name: string): Promise<Uint8Array | null> {
  const url = new URL(name, DIST);
  if (url.protocol === "file:") {
    try {
      return await Deno.readFile(url);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }
  const res = await fetch(url);
  if (res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  if (!res.ok) throw new Error(`cannot load ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Serves the bundle's files; each is read once and kept (they are small and never change while serving). */
export class WebUi {
  readonly #cache = new Map<string, Promise<Uint8Array | null>>();

  /** `GET /`: the page. */
  page(): Promise<Response> {
    return this.file("index.html");
  }

  /** `GET /web/{name}`: a file of the bundle, or 404. */
  async file(name: string): Promise<Response> {
    if (!FILE_NAME.test(name)) throw notFound(name);
    let read = this.#cache.get(name);
    if (read === undefined) {
      read = readDist(name);
      this.#cache.set(name, read);
      read.catch(() => this.#cache.delete(name)); // a failed read is tried again next time
    }
    const bytes = await read;
    if (bytes === null) throw notFound(name);
    const ext = name.slice(name.lastIndexOf(".") + 1).toLowerCase();
    return new Response(bytes as BodyInit, {
      headers: { ...WEB_UI_HEADERS, "content-type": TYPES[ext] ?? "application/octet-stream" },
    });
  }
}

function notFound(name: string): ApiError {
  return new ApiError(404, `The page has no file '${name}'.`, { code: "not_found" });
}
