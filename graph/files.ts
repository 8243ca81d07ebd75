/**
 * Reading a checkpoint's files wherever the library runs: from disk under Deno, and over HTTP in a browser, where
 * a checkpoint directory is a URL path the server exposes (`deno task serve --web-ui-models DIR`:
 * `GET /web/models/NAME/` lists its files as JSON, `GET /web/models/NAME/FILE` serves one with range requests).
 * The readers of configs (graph/models/mod.ts, weights/generation_config.ts, weights/checkpoint.ts) and of
 * safetensors (weights/safetensors.ts) go through here, so the page streams a checkpoint with the very code that
 * reads one from disk: one tensor per range request, never the whole file.
 *
 * @module
 */

/** Whether Deno's file APIs exist here (false in a browser, where paths are URLs of this origin). */
export function hasFileSystem(): boolean {
  return typeof Deno !== "undefined" && typeof Deno.open === "function";
}

/** A file (or URL) that does not exist: `Deno.errors.NotFound` under Deno, an HTTP 404 in a browser. */
export class FileNotFoundError extends Error {
  /** `message` names the path. */
  constructor(message: string) {
    super(message);
    this.name = "NotFound";
  }
}

/** Whether `e` says the file does not exist (under Deno or over HTTP). */
export function isNotFound(e: unknown): boolean {
  return e instanceof FileNotFoundError || (hasFileSystem() && e instanceof Deno.errors.NotFound);
}

/** A whole text file. Missing: `Deno.errors.NotFound` or {@link FileNotFoundError} (test with {@link isNotFound}). */
export async function readTextFile(path: string): Promise<string> {
  if (hasFileSystem()) return await Deno.readTextFile(path);
  const res = await fetch(path);
  await checkOk(res, path);
  return await res.text();
}

/** Throws unless `res` is a 2xx, after dropping its body: {@link FileNotFoundError} for a 404. */
async function checkOk(res: Response, url: string): Promise<void> {
  if (res.ok) return;
  await res.body?.cancel();
  if (res.status === 404) throw new FileNotFoundError(`${url}: not found (HTTP 404)`);
  throw new Error(`${url}: HTTP ${res.status}`);
}

/**
 * The names of the files in a directory (symlinks included, folders not). Over HTTP, `GET DIR/` answers
 * `{"files": [names]}` (server/web_models.ts).
 */
export async function listFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  if (hasFileSystem()) {
    for await (const e of Deno.readDir(dir)) if (e.isFile || e.isSymlink) names.push(e.name);
    return names;
  }
  const url = dir.endsWith("/") ? dir : `${dir}/`;
  const res = await fetch(url);
  await checkOk(res, url);
  const body = await res.json().catch(() => null) as { files?: unknown } | null;
  if (!Array.isArray(body?.files) || !body.files.every((n) => typeof n === "string")) {
    throw new Error(`${url}: not a directory listing (expected {"files": [names]})`);
  }
  return body.files as string[];
}

/** A file read at arbitrary offsets: a `Deno.FsFile`, or a URL read by HTTP range requests. */
export interface RandomAccessFile extends Disposable {
  /** Its size in bytes. */
  size(): Promise<number>;
  /** Reads up to `dst.length` bytes at `offset` into `dst`: the count read, or null at the end of the file. */
  read(offset: number, dst: Uint8Array): Promise<number | null>;
}

/**
 * Opens a file for reading at offsets. Missing: as {@link readTextFile}, from this call under Deno; over HTTP, from
 * the first `size` or `read` (opening costs no request, so reading a tensor is one range request).
 */
export async function openRandomAccess(path: string): Promise<RandomAccessFile> {
  if (hasFileSystem()) {
    const f = await Deno.open(path, { read: true });
    return {
      size: async () => (await f.stat()).size,
      read: async (offset, dst) => {
        await f.seek(offset, Deno.SeekMode.Start);
        return await f.read(dst);
      },
      [Symbol.dispose]: () => f.close(),
    };
  }
  return { size: () => httpSize(path), read: (offset, dst) => readRange(path, offset, dst), [Symbol.dispose]() {} };
}

/** A URL's size, from a HEAD request's Content-Length. */
async function httpSize(path: string): Promise<number> {
  const res = await fetch(path, { method: "HEAD" });
  await checkOk(res, path);
  const length = Number(res.headers.get("content-length"));
  if (!Number.isSafeInteger(length)) throw new Error(`${path}: HTTP ${res.status} without a Content-Length`);
  return length;
}

/** One range request for `dst.length` bytes at `offset` (206 expected; 416 past the end). */
async function readRange(path: string, offset: number, dst: Uint8Array): Promise<number | null> {
  if (dst.length === 0) return 0;
  const res = await fetch(path, { headers: { range: `bytes=${offset}-${offset + dst.length - 1}` } });
  if (res.status === 416 || res.status === 404) {
    await res.body?.cancel();
    if (res.status === 404) throw new FileNotFoundError(`${path}: not found (HTTP 404)`);
    return null;
  }
  const start = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "");
  if (res.status !== 206 || Number(start?.[1]) !== offset || !res.body) {
    await res.body?.cancel();
    throw new Error(`${path}: the server did not answer a range request (HTTP ${res.status}); it must send 206`);
  }
  let done = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    if (done + value.length > dst.length) {
      await reader.cancel();
      throw new Error(`${path}: a range response is longer than asked (${dst.length} bytes at ${offset})`);
    }
    dst.set(value, done);
    done += value.length;
  }
  return done;
}
