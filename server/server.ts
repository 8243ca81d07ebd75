/**
 * The OpenAI-compatible HTTP server: a `fetch`-style handler over an {@link Engine}, and a `Deno.serve` wrapper.
 *
 * Routes: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`, `POST /v1/completions`,
 * `GET /health` (503 until the engine is ready), `GET /metrics` (Prometheus text). Every error is OpenAI-shaped;
 * nothing a request does can take the server down.
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
import { ApiError, badRequest, errorResponse, jsonResponse, toApiError } from "./errors.ts";
import { Metrics } from "./metrics.ts";

export type { Logger } from "./context.ts";
export { Metrics } from "./metrics.ts";
export { DEFAULT_SAMPLING } from "../engine/params.ts";

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
}

/** Where a {@link TramontaneServer} listens. */
export interface ServeHandle {
  /** The bound address. */
  hostname: string;
  /** The bound port (the real one when 0 was asked for). */
  port: number;
  /** `http://hostname:port`. */
  url: string;
  /** Stops accepting connections and waits for open requests to finish. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

/** The server: a handler and a way to listen with it. */
export interface TramontaneServer {
  /** Handles one request; never rejects. */
  fetch(req: Request): Promise<Response>;
  /** Listens with `Deno.serve`; port 0 picks a free port. */
  serve(options: { hostname?: string; port?: number }): ServeHandle;
  /** The metrics registry (for tests and embedding). */
  readonly metrics: Metrics;
}

/** `modelId` is the `{id}` of `/v1/models/{id}`. */
type Handler = (
  ctx: ServerContext,
  record: RequestRecord,
  req: Request,
  modelId?: string,
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

/** A generation endpoint: gets the parsed body and the signal that fires when the client goes away. */
type GenerationHandler = (
  ctx: ServerContext,
  record: RequestRecord,
  body: Record<string, unknown>,
  clientSignal: AbortSignal,
) => Promise<Response>;

function generationRoute(handle: GenerationHandler, maxBodyBytes: number): Handler {
  return async (ctx, record, req) => {
    const body = await readJsonObject(req, maxBodyBytes);
    checkModel(ctx, body.model);
    return await handle(ctx, record, body, req.signal);
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
function matchRoute(routes: Map<string, Route>, path: string): { route: Route; modelId?: string } | undefined {
  const exact = routes.get(path);
  if (exact) return { route: exact };
  if (path.startsWith("/v1/models/")) {
    return { route: routes.get("/v1/models/{id}")!, modelId: decodeURIComponent(path.slice(11)) };
  }
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
  const routes = new Map<string, Route>([
    ["/health", {
      label: "/health",
      methods: {
        GET: () =>
          ctx.engine.ready ? jsonResponse({ status: "ok" }) : errorResponse(
            new ApiError(503, "The engine is still loading.", { code: "engine_not_ready" }),
          ),
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
        GET: (_ctx, _record, _req, modelId) => {
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

  async function dispatch(record: RequestRecord, req: Request): Promise<Response> {
    const found = matchRoute(routes, record.path);
    if (found === undefined) {
      if (record.path.startsWith("/v1/")) checkApiKey(req, options.apiKey);
      throw new ApiError(404, `There is no route ${record.method} ${record.path}.`, { code: "not_found" });
    }
    const { route } = found;
    record.route = route.label;
    if (route.authed) checkApiKey(req, options.apiKey);
    const handler = route.methods[record.method];
    if (handler === undefined) {
      const allow = Object.keys(route.methods).join(", ");
      throw new ApiError(405, `${record.path} does not support ${record.method}; use ${allow}.`, {
        code: "method_not_allowed",
        headers: { allow },
      });
    }
    if (route.generates && !ctx.engine.ready) {
      throw new ApiError(503, "The engine is still loading; retry shortly.", {
        code: "engine_not_ready",
        headers: { "retry-after": "5" },
      });
    }
    if (route.generates) record.id = newId(route.label === "/v1/completions" ? "cmpl-" : "chatcmpl-");
    return await handler(ctx, record, req, found.modelId);
  }

  function finish(record: RequestRecord): void {
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
    let response: Response;
    try {
      response = await dispatch(record, req);
    } catch (e) {
      const err = toApiError(e);
      if (err.status >= 500 && !(e instanceof ApiError)) ctx.logger.error(`request ${record.id} failed`, e);
      response = errorResponse(err);
    }
    record.status ||= response.status;
    if (record.done) record.done.then(() => finish(record));
    else finish(record);
    return response;
  }

  function serve(serveOptions: { hostname?: string; port?: number }): ServeHandle {
    const server = Deno.serve({
      hostname: serveOptions.hostname ?? "127.0.0.1",
      port: serveOptions.port ?? 8000,
      onListen: () => {},
    }, fetch);
    const addr = server.addr as Deno.NetAddr;
    return {
      hostname: addr.hostname,
      port: addr.port,
      url: `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`,
      shutdown: () => server.shutdown(),
      finished: server.finished,
    };
  }

  return { fetch, serve, metrics };
}

function definedFields<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
