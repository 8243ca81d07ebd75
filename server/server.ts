/**
 * The OpenAI-compatible HTTP server: a `fetch`-style handler over an {@link Engine}, and a `Deno.serve` wrapper.
 *
 * Routes: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`, `POST /v1/completions`,
 * `GET /health` (503 until the engine is ready, again once the server is shutting down, and for good once a device
 * is lost: `device_lost`, as every generation then is), `GET /metrics` (Prometheus text), and the chat page: `GET /`
 * and `GET /web/{file}` (`server/web_ui.ts`; off with {@link ServerOptions.webUi} false). Every error is
 * OpenAI-shaped; nothing a request does can take the server down. A shutdown
 * ({@link TramontaneServer.shutdown}, {@link ServeHandle.shutdown}) refuses new requests and gives running ones a
 * grace period before it cancels them.
 *
 * @module
 */

import type { Tokenizer } from "../chat/tokenizer.ts";
import { DEFAULT_SAMPLING } from "../engine/params.ts";
import { DEFAULT_IMAGE_OPTIONS, type ImageOptions } from "../engine/images.ts";
import type { Engine, SamplingParams } from "../engine/types.ts";
import { checkApiKey } from "./auth.ts";
import { readJsonObject } from "./body.ts";
import { handleChat } from "./chat.ts";
import { handleCompletions } from "./completions.ts";
import { type Logger, newId, type RequestRecord, type ServerContext } from "./context.ts";
import { ApiError, badRequest, errorResponse, jsonResponse, shuttingDown, toApiError } from "./errors.ts";
import { Metrics } from "./metrics.ts";
import { CANCEL_FLUSH_MS, DEFAULT_SHUTDOWN_GRACE_MS, Drain } from "./drain.ts";
import { WebUi } from "./web_ui.ts";
import { WEB_MODELS_PREFIX, WebModels } from "./web_models.ts";

export type { Logger } from "./context.ts";
export { Metrics } from "./metrics.ts";
export { DEFAULT_SAMPLING } from "../engine/params.ts";
export { DEFAULT_SHUTDOWN_GRACE_MS } from "./drain.ts";

/** Options for {@link createServer}. */
export interface ServerOptions {
  /** Generates tokens; the server only needs the {@link Engine} interface. */
  engine: Engine;
  /** The model's tokenizer (v15 for the built-in prompt encoder). */
  tokenizer: Tokenizer;
  /** The name clients must use as `model` (and that `/v1/models` lists). */
  modelName: string;
  /** When set, `/v1/*` needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Largest accepted request body (default 32 MiB: room for a few inline images). */
  maxBodyBytes?: number;
  /** A Jinja chat template to build prompts with instead of the built-in v15 encoder. */
  chatTemplate?: string;
  /** Where log lines go (default `console`). */
  logger?: Logger;
  /** Sampling values for fields a request leaves out; see {@link DEFAULT_SAMPLING}. */
  defaults?: Partial<SamplingParams>;
  /** Limits on image inputs; see {@link DEFAULT_IMAGE_OPTIONS}. */
  images?: Partial<ImageOptions>;
  /**
   * Tokens generated when a request sets no `max_tokens` / `max_completion_tokens` (llama-server's `--n-predict`);
   * a request stopped by it logs one line. Default: up to the context, as OpenAI does. `/v1/completions` keeps
   * OpenAI's default of 16, or this when smaller.
   */
  maxTokensDefault?: number;
  /** Serve the chat page at `/` and its files at `/web/*` (default true; `--no-web-ui` turns it off). */
  webUi?: boolean;
  /** Checkpoint directories the in-page engine may load, read-only at `/web/models/NAME/` (`--web-ui-models`). */
  webModels?: readonly string[];
}

/** Where a {@link TramontaneServer} listens. */
export interface ServeHandle {
  /** The bound address. */
  hostname: string;
  /** The bound port (the real one when 0 was asked for). */
  port: number;
  /** `http://hostname:port`. */
  url: string;
  /**
   * Stops accepting connections and shuts the server down ({@link TramontaneServer.shutdown}): running requests get
   * `graceMs` (default {@link DEFAULT_SHUTDOWN_GRACE_MS}) to finish, then are cancelled. Resolves once every
   * connection has closed, or a moment after the cancel if one stays open (a client that does not read its
   * response: it ends with the process). Later calls return the same promise.
   */
  shutdown(graceMs?: number): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

/** The server: a handler and a way to listen with it. */
export interface TramontaneServer {
  /** Handles one request; never rejects. */
  fetch(req: Request): Promise<Response>;
  /** Listens with `Deno.serve`; port 0 picks a free port. */
  serve(options: { hostname?: string; port?: number }): ServeHandle;
  /**
   * Shuts the handler down (for a server embedded in another `Deno.serve`; {@link ServeHandle.shutdown} also closes
   * the listener): from now on `/health` answers 503 and every route but `/metrics` refuses new requests with 503
   * `shutting_down`; running requests get `graceMs` (default {@link DEFAULT_SHUTDOWN_GRACE_MS}) to finish, then
   * are cancelled (generations end with finish reason `abort`, streams with their last chunk and `[DONE]`).
   * Resolves once they have ended, or shortly after the cancel if some have not. Later calls return the same promise.
   */
  shutdown(graceMs?: number): Promise<void>;
  /** True once {@link TramontaneServer.shutdown} has been called. */
  readonly shuttingDown: boolean;
  /** Requests being served: received, and not yet answered in full (a stream counts until it ends). */
  readonly inFlight: number;
  /** The metrics registry (for tests and embedding). */
  readonly metrics: Metrics;
}

/** What the router found besides the route: the `{id}` of `/v1/models/{id}`, and when to stop. */
interface RouteArgs {
  modelId?: string;
  /** The `{file}` of `/web/{file}`. */
  file?: string;
  /** Fires when the client goes away or the server's shutdown grace runs out. */
  signal: AbortSignal;
  /** Fires when the client goes away or the server starts shutting down: stops reading the request body. */
  upload: AbortSignal;
}

type Handler = (
  ctx: ServerContext,
  record: RequestRecord,
  req: Request,
  args: RouteArgs,
) => Promise<Response> | Response;

interface Route {
  /** Metrics label. */
  label: string;
  methods: Record<string, Handler>;
  /** Needs the engine to be ready. */
  generates?: boolean;
  /** Under `/v1`: behind the API key. */
  authed?: boolean;
}

const MIB = 1 << 20;

/** A generation endpoint: gets the parsed body and the signal that stops it (client gone, shutdown grace over). */
type GenerationHandler = (
  ctx: ServerContext,
  record: RequestRecord,
  body: Record<string, unknown>,
  signal: AbortSignal,
) => Promise<Response>;

function generationRoute(handle: GenerationHandler, maxBodyBytes: number): Handler {
  return async (ctx, record, req, { signal, upload }) => {
    const body = await readJsonObject(req, maxBodyBytes, upload);
    checkModel(ctx, body.model);
    return await handle(ctx, record, body, signal);
  };
}

/** Throws a 404 unless `model` is absent or names the served model. */
function checkModel(ctx: ServerContext, model: unknown): void {
  if (model === undefined || model === null) return;
  if (typeof model !== "string") throw badRequest("model must be a string.", "model");
  if (model !== ctx.modelName) {
    throw new ApiError(404, `The model '${model}' does not exist; this server serves '${ctx.modelName}'.`, {
      param: "model",
      code: "model_not_found",
    });
  }
}

function listModels(ctx: ServerContext): Record<string, unknown> {
  return {
    id: ctx.modelName,
    object: "model",
    created: ctx.startedAt,
    owned_by: "tramontane",
    max_model_len: ctx.engine.maxModelLen,
  };
}

/** Finds the route for a path; `/v1/models/{id}` is the one pattern. */
function matchRoute(
  routes: Map<string, Route>,
  path: string,
): { route: Route; modelId?: string; file?: string } | undefined {
  const exact = routes.get(path);
  if (exact) return { route: exact };
  if (path.startsWith("/v1/models/")) {
    return { route: routes.get("/v1/models/{id}")!, modelId: decodeURIComponent(path.slice(11)) };
  }
  const models = routes.get(WEB_MODELS_PREFIX);
  if (models && path.startsWith(WEB_MODELS_PREFIX)) return { route: models };
  const web = routes.get("/web/{file}");
  if (web && path.startsWith("/web/")) return { route: web, file: path.slice(5) };
  return undefined;
}

/**
 * Creates the server around an engine.
 *
 * @example
 * ```ts
 * const server = createServer({ engine, tokenizer, modelName: "mistral-small-4" });
 * const handle = server.serve({ hostname: "127.0.0.1", port: 0 });
 * console.log(`listening on ${handle.url}`);
 * ```
 */
export function createServer(options: ServerOptions): TramontaneServer {
  const metrics = new Metrics(options.modelName);
  const ctx: ServerContext = {
    engine: options.engine,
    tokenizer: options.tokenizer,
    modelName: options.modelName,
    chatTemplate: options.chatTemplate,
    defaults: { ...DEFAULT_SAMPLING, ...options.defaults },
    // Unset fields (a CLI flag not given) keep their defaults.
    images: { ...DEFAULT_IMAGE_OPTIONS, ...definedFields(options.images ?? {}) },
    maxTokensDefault: options.maxTokensDefault ?? null,
    metrics,
    logger: options.logger ?? console,
    startedAt: Math.floor(Date.now() / 1000),
  };
  const maxBody = options.maxBodyBytes ?? 32 * MIB;
  const drain = new Drain();
  const routes = new Map<string, Route>([
    ["/health", {
      label: "/health",
      methods: {
        GET: () => {
          if (drain.draining) throw shuttingDown();
          if (ctx.engine.failure) throw toApiError(ctx.engine.failure);
          if (!ctx.engine.ready) throw new ApiError(503, "The engine is still loading.", { code: "engine_not_ready" });
          return jsonResponse({ status: "ok" });
        },
      },
    }],
    ["/metrics", {
      label: "/metrics",
      methods: {
        GET: () =>
          new Response(metrics.render(ctx.engine.stats()), {
            headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
          }),
      },
    }],
    ["/v1/models", {
      label: "/v1/models",
      authed: true,
      methods: { GET: () => jsonResponse({ object: "list", data: [listModels(ctx)] }) },
    }],
    ["/v1/models/{id}", {
      label: "/v1/models/{id}",
      authed: true,
      methods: {
        GET: (_ctx, _record, _req, { modelId }) => {
          if (modelId === ctx.modelName) return jsonResponse(listModels(ctx));
          throw new ApiError(404, `The model '${modelId}' does not exist; this server serves '${ctx.modelName}'.`, {
            param: "model",
            code: "model_not_found",
          });
        },
      },
    }],
    ["/v1/chat/completions", {
      label: "/v1/chat/completions",
      authed: true,
      generates: true,
      methods: { POST: generationRoute(handleChat, maxBody) },
    }],
    ["/v1/completions", {
      label: "/v1/completions",
      authed: true,
      generates: true,
      methods: { POST: generationRoute(handleCompletions, maxBody) },
    }],
  ]);
  if (options.webUi ?? true) {
    // The page's files need no key (the page asks for one when /v1 answers 401).
    const web = new WebUi();
    const page = () => web.page();
    routes.set("/", { label: "/", methods: { GET: page, HEAD: page } });
    const file: Handler = (_ctx, _record, _req, args) => web.file(args.file ?? "");
    routes.set("/web/{file}", { label: "/web/{file}", methods: { GET: file, HEAD: file } });
  }
  if (options.webModels?.length) {
    const models = new WebModels(options.webModels);
    const serve: Handler = (_ctx, _record, req) => models.handle(req);
    routes.set(WEB_MODELS_PREFIX, { label: "/web/models/*", methods: { GET: serve, HEAD: serve } });
  }

  async function dispatch(record: RequestRecord, req: Request, signal: AbortSignal): Promise<Response> {
    const found = matchRoute(routes, record.path);
    if (found === undefined) {
      if (record.path.startsWith("/v1/")) checkApiKey(req, options.apiKey);
      throw new ApiError(404, `There is no route ${record.method} ${record.path}.`, { code: "not_found" });
    }
    const { route } = found;
    record.route = route.label;
    // While shutting down only /metrics still answers (/health says why it is 503).
    if (drain.draining && route.label !== "/metrics" && route.label !== "/health") throw shuttingDown();
    if (route.authed) checkApiKey(req, options.apiKey);
    const handler = route.methods[record.method];
    if (handler === undefined) {
      const allow = Object.keys(route.methods).join(", ");
      throw new ApiError(405, `${record.path} does not support ${record.method}; use ${allow}.`, {
        code: "method_not_allowed",
        headers: { allow },
      });
    }
    // A lost device: 503 saying so (not "still loading"), whatever the engine's failure is mapped to.
    if (route.generates && ctx.engine.failure) throw toApiError(ctx.engine.failure);
    if (route.generates && !ctx.engine.ready) {
      throw new ApiError(503, "The engine is still loading; retry shortly.", {
        code: "engine_not_ready",
        headers: { "retry-after": "5" },
      });
    }
    if (route.generates) record.id = newId(route.label === "/v1/completions" ? "cmpl-" : "chatcmpl-");
    const upload = AbortSignal.any([req.signal, drain.stopping]);
    return await handler(ctx, record, req, { modelId: found.modelId, file: found.file, signal, upload });
  }

  function finish(record: RequestRecord, flight: AbortController): void {
    drain.end(flight);
    metrics.request(record.route, record.status);
    const ms = (v: number | undefined) => v === undefined ? "-" : `${Math.round(v)}ms`;
    const generated = record.promptTokens > 0 ? ` in=${record.promptTokens} out=${record.completionTokens}` : "";
    ctx.logger.info(
      `${record.id} ${record.method} ${record.path} ${record.status}${generated} ttft=${ms(record.ttftMs)} ` +
        `total=${ms(performance.now() - record.start)}`,
    );
  }

  async function fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const record: RequestRecord = {
      id: newId("req-"),
      method: req.method,
      path: url.pathname,
      route: "other",
      status: 0,
      promptTokens: 0,
      completionTokens: 0,
      start: performance.now(),
    };
    // Stops the request when its client leaves or the shutdown grace runs out. Deno.serve's request.signal fires
    // only when the client leaves because deno.json opts out of Deno's legacy abort (which also fires it after every
    // successful response, and warns). The handler's `info.completed` cannot stand in: it settles only once the
    // response is handed over, too late for a generation in progress (and Deno 2.9.6 resolves it even for a client
    // that had left).
    const flight = drain.begin();
    const signal = AbortSignal.any([req.signal, flight.signal]);
    let response: Response;
    try {
      response = await dispatch(record, req, signal);
    } catch (e) {
      const err = toApiError(e);
      if (err.status >= 500 && !(e instanceof ApiError)) ctx.logger.error(`request ${record.id} failed`, e);
      response = errorResponse(err);
    }
    record.status ||= response.status;
    if (record.done) record.done.then(() => finish(record, flight));
    else finish(record, flight);
    return response;
  }

  function shutdown(graceMs: number = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> {
    return drain.shutdown(graceMs, {
      onStart: (running) =>
        ctx.logger.info(
          `shutting down: new requests are refused; ${running} running, given up to ${graceMs / 1000} s to finish`,
        ),
      onCancel: (running) =>
        ctx.logger.warn(`shutdown grace of ${graceMs / 1000} s is over: cancelling ${running} running requests`),
    });
  }

  function serve(serveOptions: { hostname?: string; port?: number }): ServeHandle {
    const server = Deno.serve({
      hostname: serveOptions.hostname ?? "127.0.0.1",
      port: serveOptions.port ?? 8000,
      onListen: () => {},
    }, fetch);
    const addr = server.addr as Deno.NetAddr;
    let stopping: Promise<void> | undefined;
    const stop = async (graceMs?: number) => {
      // Ours first, so the uploads Deno's graceful shutdown ends are answered 503 (shutting down), not 500.
      const drained = shutdown(graceMs);
      // Deno's graceful shutdown closes the listener now and resolves once every open response has been sent.
      const closed = server.shutdown();
      await drained;
      // Deno.serve has no hard stop once a graceful one has begun (its abort signal then throws), so a connection
      // that outlives the cancel is left to the process's exit.
      if (!await settlesWithin(closed, CANCEL_FLUSH_MS)) {
        ctx.logger.warn("shutdown: a connection is still open after the cancel (a client not reading?); not waiting");
      }
    };
    return {
      hostname: addr.hostname,
      port: addr.port,
      url: `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`,
      shutdown: (graceMs) => stopping ??= stop(graceMs),
      finished: server.finished,
    };
  }

  return {
    fetch,
    serve,
    metrics,
    shutdown,
    get shuttingDown() {
      return drain.draining;
    },
    get inFlight() {
      return drain.running;
    },
  };
}

/** True if `p` settles within `ms` (resolved or rejected), false otherwise. */
function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout>;
  const late = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms));
  const settled = p.then(() => true, () => true);
  return Promise.race([settled, late]).finally(() => clearTimeout(timer));
}

function definedFields<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
