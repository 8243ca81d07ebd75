/**
 * Reading a JSON request body under a size limit. The limit is checked against `Content-Length` first and then
 * against the bytes actually read, so a chunked upload cannot get around it.
 *
 * @module
 */

import { ApiError, badRequest, shuttingDown } from "./errors.ts";

function tooLarge(limit: number): ApiError {
  return new ApiError(413, `The request body is larger than the server's limit of ${limit} bytes.`, {
    code: "request_too_large",
  });
}

/**
 * Reads at most `limit` bytes of `req`'s body; throws a 413 beyond it. `signal` (the client gone, or the server
 * shutting down) stops an upload in progress: a 499 when the client left, a 503 when the server is stopping.
 */
export async function readBody(req: Request, limit: number, signal?: AbortSignal): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    await req.body?.cancel();
    throw tooLarge(limit);
  }
  if (req.body === null) return new Uint8Array(0);
  const reader = req.body.getReader();
  const stop = () => void reader.cancel().catch(() => {});
  signal?.addEventListener("abort", stop, { once: true });
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw stopped(req, signal) ?? e;
      }
      // A cancelled read ends like a finished one: check why it ended.
      const interrupted = stopped(req, signal);
      if (interrupted) throw interrupted;
      const { done, value } = chunk;
      if (done) break;
      size += value.length;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge(limit);
      }
      parts.push(value);
    }
  } finally {
    signal?.removeEventListener("abort", stop);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Why an upload was stopped, if it was: the client left (nginx's 499: not a server fault), or the server stops. */
function stopped(req: Request, signal: AbortSignal | undefined): ApiError | null {
  if (req.signal.aborted) return new ApiError(499, "The client closed the request.", { code: "client_closed" });
  return signal?.aborted ? shuttingDown() : null;
}

/**
 * Reads and parses a JSON object body.
 *
 * @example
 * ```ts
 * const body = await readJsonObject(req, 1 << 20); // Record<string, unknown>, or a thrown 400/413 ApiError
 * ```
 */
export async function readJsonObject(
  req: Request,
  limit: number,
  signal?: AbortSignal,
): Promise<Record<string, unknown>> {
  const bytes = await readBody(req, limit, signal);
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
