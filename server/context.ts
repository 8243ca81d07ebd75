/**
 * What every route gets: the server's fixed parts ({@link ServerContext}) and the record of the request being
 * served ({@link RequestRecord}), which becomes its log line and its metrics.
 *
 * @module
 */

import type { RequestContext } from "../engine/request_context.ts";
import type { Metrics } from "./metrics.ts";

export type { Logger } from "../engine/request_context.ts";
export { newId } from "../engine/request_context.ts";

/** The server's fixed parts, shared by all requests: what a request is checked against, and the server's own. */
export interface ServerContext extends RequestContext {
  metrics: Metrics;
  /** Unix seconds when the server started (the `created` of `/v1/models`). */
  startedAt: number;
}

/** One request as it is served; filled in by the route, written out as one log line at its end. */
export interface RequestRecord {
  /** The response id (`chatcmpl-…`, `cmpl-…`) or a request id for other routes. */
  id: string;
  method: string;
  path: string;
  /** The route label for metrics (unknown paths share one label so the series stay bounded). */
  route: string;
  status: number;
  promptTokens: number;
  completionTokens: number;
  /** `performance.now()` at arrival. */
  start: number;
  /** Milliseconds from arrival to the first generated token, once there is one. */
  ttftMs?: number;
  /** Set by streaming routes: resolves when the stream ends, so the log line waits for it. */
  done?: Promise<void>;
}
