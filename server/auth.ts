/**
 * API-key check for `/v1/*`: `Authorization: Bearer <key>`, as the OpenAI SDKs send it. `/health` and `/metrics`
 * stay open so that load balancers and scrapers need no secret.
 *
 * @module
 */

import { ApiError } from "./errors.ts";

const encoder = new TextEncoder();

/** Compares in time independent of where the strings first differ, so the key cannot be guessed byte by byte. */
function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ (y[i % (y.length || 1)] ?? 0);
  return diff === 0;
}

/**
 * Throws a 401 unless `req` carries `apiKey`. No key configured → every request passes.
 *
 * @example
 * ```ts
 * checkApiKey(new Request("http://x/v1/models", { headers: { authorization: "Bearer k" } }), "k"); // passes
 * ```
 */
export function checkApiKey(req: Request, apiKey: string | undefined): void {
  if (apiKey === undefined || apiKey === "") return;
  const header = req.headers.get("authorization") ?? "";
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (match === null) {
    throw new ApiError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.", {
      code: "invalid_api_key",
      headers: { "www-authenticate": "Bearer" },
    });
  }
  if (!constantTimeEqual(match[1], apiKey)) {
    throw new ApiError(401, "Incorrect API key provided.", {
      code: "invalid_api_key",
      headers: { "www-authenticate": "Bearer" },
    });
  }
}
