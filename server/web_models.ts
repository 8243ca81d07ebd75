/**
 * Checkpoint directories for the in-page engine (`deno task serve --web-ui-models DIR…`): each directory is exposed
 * read-only under `/web/models/NAME/`, NAME being its last path component, so the page's worker loads it with the
 * library's own checkpoint reader (graph/files.ts over HTTP): `GET /web/models/` lists the names,
 * `GET /web/models/NAME/` lists the directory's files (`{"files": [...]}`), and `GET /web/models/NAME/FILE` serves
 * one file with range requests (`Range: bytes=a-b` → 206 with `Content-Range`; outside the file → 416), one tensor
 * per request, never the whole shard in memory.
 *
 * Only plain names directly inside an exposed directory are served (no `/`, no `..`, no hidden files); symlinks
 * inside it are followed, as a Hugging Face cache snapshot is made of them.
 *
 * @module
 */

import { basename, join, resolve } from "node:path";
import { ApiError } from "./errors.ts";

/** The URL prefix of the exposed directories. */
export const WEB_MODELS_PREFIX = "/web/models/";

/** A file name a request may ask for: one path segment, not hidden. */
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/;

/** Most bytes one read of a range response holds in memory. */
const CHUNK = 1 << 20;

/** Headers on every response: the page is cross-origin isolated, so its worker's fetches need same-origin CORP. */
const HEADERS: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-cache",
};

/** A `Range: bytes=…` header against a file of `size` bytes: [start, end] inclusive, "unsatisfiable", or null. */
export function parseRange(header: string | null, size: number): [number, number] | "unsatisfiable" | null {
  if (header === null) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Several ranges or another unit: serve the whole file, as RFC 9110 allows a server to.
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return [start, end];
}

/** The exposed directories by name. */
export class WebModels {
  readonly #dirs = new Map<string, string>();

  /** `dirs`: checkpoint directories; two with the same last component are refused (their URLs would clash). */
  constructor(dirs: readonly string[]) {
    for (const dir of dirs) {
      const name = basename(resolve(dir));
      if (!FILE_NAME.test(name)) throw new Error(`--web-ui-models: ${dir} has no usable name (${name})`);
      const other = this.#dirs.get(name);
      if (other !== undefined) {
        throw new Error(`--web-ui-models: ${other} and ${dir} would both be /web/models/${name}/; rename one`);
      }
      this.#dirs.set(name, resolve(dir));
    }
  }

  /** The names, as the page offers them (`/web/models/NAME`). */
  get names(): string[] {
    return [...this.#dirs.keys()].sort();
  }

  /** Answers a GET or HEAD under {@link WEB_MODELS_PREFIX}; a path it does not serve is a 404 `ApiError`. */
  async handle(req: Request): Promise<Response> {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (!path.startsWith(WEB_MODELS_PREFIX)) throw notFound(path);
    const rest = path.slice(WEB_MODELS_PREFIX.length);
    if (rest === "") return json(req, { models: this.names });
    const slash = rest.indexOf("/");
    const name = slash < 0 ? rest : rest.slice(0, slash);
    const dir = this.#dirs.get(name);
    if (dir === undefined || slash < 0) throw notFound(path);
    const file = rest.slice(slash + 1);
    if (file === "") return json(req, { files: await listDir(dir) });
    if (!FILE_NAME.test(file)) throw notFound(path);
    return await serveFile(req, join(dir, file), path);
  }
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if ((e.isFile || e.isSymlink) && FILE_NAME.test(e.name)) names.push(e.name);
  return names.sort();
}

function json(req: Request, body: unknown): Response {
  const text = JSON.stringify(body);
  return new Response(req.method === "HEAD" ? null : text, {
    headers: { ...HEADERS, "content-type": "application/json" },
  });
}

async function serveFile(req: Request, path: string, urlPath: string): Promise<Response> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw notFound(urlPath);
    throw e;
  }
  try {
    const stat = await file.stat();
    if (!stat.isFile) throw notFound(urlPath);
    const size = stat.size;
    const range = parseRange(req.headers.get("range"), size);
    const headers: Record<string, string> = {
      ...HEADERS,
      "content-type": "application/octet-stream",
      "accept-ranges": "bytes",
    };
    if (range === "unsatisfiable") {
      file.close();
      return new Response(null, { status: 416, headers: { ...headers, "content-range": `bytes */${size}` } });
    }
    const [start, end] = range ?? [0, size - 1];
    const length = Math.max(0, end - start + 1);
    headers["content-length"] = String(length);
    if (range) headers["content-range"] = `bytes ${start}-${end}/${size}`;
    const status = range ? 206 : 200;
    if (req.method === "HEAD" || length === 0) {
      file.close();
      return new Response(null, { status, headers });
    }
    await file.seek(start, Deno.SeekMode.Start);
    return new Response(rangeStream(file, length), { status, headers });
  } catch (e) {
    file.close();
    throw e;
  }
}

/** `length` bytes of `file` from where it stands, read a chunk at a time; closes the file at the end or on cancel. */
function rangeStream(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let left = length;
  return new ReadableStream({
    async pull(controller) {
      const buf = new Uint8Array(Math.min(CHUNK, left));
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        controller.error(new Error("the file got shorter while it was served"));
        return;
      }
      controller.enqueue(buf.subarray(0, n));
      left -= n;
      if (left === 0) {
        file.close();
        controller.close();
      }
    },
    cancel() {
      file.close();
    },
  }, { highWaterMark: 0 });
}

function notFound(path: string): ApiError {
  return new ApiError(404, `There is no model file ${path} (see --web-ui-models).`, { code: "not_found" });
}
