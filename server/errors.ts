/**
 * Errors in OpenAI's shape: every failure the server reports is
 * `{ "error": { "message", "type", "param", "code" } }` with a matching HTTP status, so clients written for OpenAI
 * (and the official SDKs, which read exactly these fields) show a useful message.
 *
 * @module
 */

import { InvalidRequestError } from "../chat/errors.ts";
import { DeviceLostError, OutOfMemoryError } from "../engine/types.ts";

/** OpenAI's error body. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/**
 * An error with the HTTP status and OpenAI fields to report. Route code throws it; the top-level handler turns
 * it into a response.
 *
 * @example
 * ```ts
 * throw new ApiError(400, "temperature must be between 0 and 2, got 3", { param: "temperature" });
 * ```
 */
export class ApiError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** OpenAI's `type`: `invalid_request_error` for 4xx, `server_error` for 5xx, unless given. */
  readonly type: string;
  /** The request field at fault, if any. */
  readonly param: string | null;
  /** A short machine-readable reason, if any. */
  readonly code: string | null;
  /** Extra response headers (`Allow` for 405, `WWW-Authenticate` for 401). */
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    message: string,
    options: { type?: string; param?: string | null; code?: string | null; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = options.type ?? (status >= 500 ? "server_error" : "invalid_request_error");
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  /** The OpenAI-shaped body. */
  toJSON(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 for a bad request field. */
export function badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, { param, code });
}

/** The 503 of a server that is shutting down (new requests, and uploads still running when its grace is over). */
export function shuttingDown(): ApiError {
  return new ApiError(503, "The server is shutting down; send the request to another instance or retry later.", {
    code: "shutting_down",
  });
}

/**
 * Maps anything thrown while serving a request to an {@link ApiError}: typed client errors keep their status and
 * fields; a lost device is a 503 `device_lost` and a device out of memory a 503 `out_of_memory` (both say which
 * backend, the latter which tensor); everything else is a 500 whose message does not leak internals (the caller
 * logs the original).
 */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof InvalidRequestError) return new ApiError(400, e.message, { param: e.param, code: e.code });
  // The device is gone: this server cannot answer until it is restarted (running requests end with this too).
  if (e instanceof DeviceLostError) {
    return new ApiError(503, `${e.message}. This server cannot generate until then; send the request elsewhere.`, {
      code: "device_lost",
    });
  }
  // Out of device memory mid-step (a batch or a bucket larger than what was planned for): the server lives on.
  if (e instanceof OutOfMemoryError) {
    return new ApiError(503, `${e.message}. Retry later, or with a shorter prompt.`, {
      code: "out_of_memory",
      headers: { "retry-after": "5" },
    });
  }
  return new ApiError(500, "The server hit an internal error while handling this request; see the server log.", {
    code: "internal_error",
  });
}

/** A JSON response with the given status. */
export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** The response for an {@link ApiError}. */
export function errorResponse(e: ApiError): Response {
  return jsonResponse(e.toJSON(), e.status, e.headers);
}
