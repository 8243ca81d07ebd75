/**
 * Reading a JSON request body under a size limit. The limit is checked against `Content-Length` first and then
 * against the bytes actually read, so a chunked upload cannot get around it.
 *
 * @module
 */

import { ApiError, badRequest } from "./errors.ts";

function tooLarge(limit: number): ApiError {
  return new ApiError(413, `The request body is larger than the server's limit of ${limit} bytes.`, {
    code: "request_too_large",
  });
}

/** Reads at most `limit` bytes of `req`'s body; throws a 413 beyond it. */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    await req.body?.cancel();
    throw tooLarge(limit);
  }
  if (req.body === null) return new Uint8Array(0);
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (e) {
      // The client went away mid-upload: nobody to answer, and not a server fault (nginx's 499).
      if (req.signal.aborted) throw new ApiError(499, "The client closed the request.", { code: "client_closed" });
      throw e;
    }
    const { done, value } = chunk;
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      throw tooLarge(limit);
    }
    parts.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Reads and parses a JSON object body.
 *
 * @example
 * ```ts
 * const body = await readJsonObject(req, 1 << 20); // Record<string, unknown>, or a thrown 400/413 ApiError
 * ```
 */
export async function readJsonObject(req: Request, limit: number): Promise<Record<string, unknown>> {
  const bytes = await readBody(req, limit);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw badRequest(`The request body is not valid JSON: ${(e as Error).message}`, null, "invalid_json");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest("The request body must be a JSON object.", null, "invalid_json");
  }
  return value as Record<string, unknown>;
}
