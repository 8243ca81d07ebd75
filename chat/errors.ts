/**
 * Errors a client can cause with a chat request. The server maps them to HTTP 400 in OpenAI's error shape
 * `{ error: { message, type: "invalid_request_error", param, code } }`.
 *
 * @module
 */

/**
 * A request the engine cannot serve as sent: bad roles or message order, an unsupported option value, a
 * malformed tool call. The message says what is wrong and what to do instead.
 *
 * @example
 * ```ts
 * throw new InvalidRequestError('reasoning_effort must be "none" or "high", got "low"', {
 *   param: "reasoning_effort",
 *   code: "unsupported_value",
 * });
 * ```
 */
export class InvalidRequestError extends Error {
  /** The request field at fault, in OpenAI's dotted/indexed form (`messages[2].content`), if known. */
  param?: string;
  /** A short machine-readable reason (`unsupported_value`, `invalid_value`, …), if any. */
  code?: string;

  /**
   * Creates the error.
   *
   * @param message What is wrong and what to do instead.
   * @param options The request field at fault, a short code, and the underlying error if any.
   */
  constructor(message: string, options: { param?: string; code?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "InvalidRequestError";
    if (options.param !== undefined) this.param = options.param;
    if (options.code !== undefined) this.code = options.code;
  }

  /**
   * The OpenAI-shaped response body for this error.
   *
   * @example
   * ```ts
   * new InvalidRequestError("bad", { param: "messages" }).toJSON();
   * // { error: { message: "bad", type: "invalid_request_error", param: "messages", code: null } }
   * ```
   */
  toJSON(): { error: { message: string; type: "invalid_request_error"; param: string | null; code: string | null } } {
    return {
      error: {
        message: this.message,
        type: "invalid_request_error",
        param: this.param ?? null,
        code: this.code ?? null,
      },
    };
  }
}

/**
 * An {@link InvalidRequestError} for a bad request field, as the server answers it (a 400 naming `param`).
 *
 * @example
 * ```ts
 * throw badRequest("temperature must be at least 0 and at most 2, got 3.", "temperature", "invalid_value");
 * ```
 */
export function badRequest(
  message: string,
  param: string | null = null,
  code: string | null = null,
): InvalidRequestError {
  return new InvalidRequestError(message, { param: param ?? undefined, code: code ?? undefined });
}
