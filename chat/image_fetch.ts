/**
 * A minimal HTTP/1.1 GET to an address the caller has already resolved and checked. `fetch` resolves the host name
 * again on its own, so a DNS answer that changes between the check and the connection (rebinding) would reach an
 * address nobody checked, and `fetch` has no documented way to pin the address. Here the TCP connection goes to
 * the checked address itself; for https, TLS then runs over it with the URL's host name for SNI and certificate
 * checks. One request per connection (`Connection: close`); bodies framed by Content-Length, chunked encoding or
 * the connection's end; no content codings (we ask for `identity`).
 *
 * @module
 */

/** Options of {@link pinnedGet}. */
export interface PinnedGetOptions {
  /** Addresses of the URL's host, resolved and checked by the caller; tried in order until one connects. */
  addresses: readonly string[];
  /** Aborts the request wherever it is (connecting, waiting for the head, reading the body): the connection closes. */
  signal: AbortSignal;
  /** Largest body accepted, in bytes: {@link BodyTooLargeError} beyond it, before reading more. */
  maxBytes: number;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Root certificates (PEM) trusted for https besides the system's: a private CA, or a test's. */
  caCerts?: string[];
}

/** What came back. */
export interface PinnedResponse {
  /** The final status (interim 1xx responses are skipped). */
  status: number;
  headers: Headers;
  /** The body of a 2xx response; empty for others, whose bodies are not read. */
  body: Uint8Array;
}

/** The body is, or says it is, larger than the limit. */
export class BodyTooLargeError extends Error {
  /** The size the response declared (Content-Length), or null when it was found while reading. */
  readonly declared: number | null;

  /** An error for a body over `maxBytes`. */
  constructor(maxBytes: number, declared: number | null) {
    super(`the body is larger than ${maxBytes} bytes${declared === null ? "" : ` (${declared})`}`);
    this.name = "BodyTooLargeError";
    this.declared = declared;
  }
}

/** Longest response head accepted (status line and headers). */
const MAX_HEAD_BYTES = 64 * 1024;

/**
 * GETs `url` over a connection to one of `options.addresses`.
 *
 * @example
 * ```ts
 * const r = await pinnedGet(new URL("https://example.com/cat.png"), {
 *   addresses: ["93.184.215.14"],
 *   signal: AbortSignal.timeout(10_000),
 *   maxBytes: 20_000_000,
 * });
 * ```
 * @throws {BodyTooLargeError} over the limit; the signal's reason when it aborts; an Error saying what failed.
 */
export async function pinnedGet(url: URL, options: PinnedGetOptions): Promise<PinnedResponse> {
  const { signal } = options;
  const conn = await connect(url, options);
  const close = () => {
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  // Closing the connection ends a pending read at once; the socket is gone when the signal fires.
  signal.addEventListener("abort", close, { once: true });
  try {
    await writeAll(conn, requestHead(url, options.headers ?? {}));
    const reader = new ConnReader(conn);
    let head = await readHead(reader);
    while (head.status < 200) head = await readHead(reader);
    if (head.status >= 300) return { ...head, body: new Uint8Array(0) };
    return { ...head, body: await readBody(reader, head.headers, options.maxBytes) };
  } catch (e) {
    if (signal.aborted) throw signal.reason;
    throw e;
  } finally {
    signal.removeEventListener("abort", close);
    close();
  }
}

async function connect(url: URL, options: PinnedGetOptions): Promise<Deno.Conn> {
  const https = url.protocol === "https:";
  const port = Number(url.port) || (https ? 443 : 80);
  let failure: unknown = new Error("no address to connect to");
  for (const address of options.addresses) {
    options.signal.throwIfAborted();
    let tcp: Deno.TcpConn;
    try {
      tcp = await Deno.connect({ hostname: address, port, signal: options.signal });
    } catch (e) {
      if (options.signal.aborted) throw options.signal.reason;
      failure = e;
      continue;
    }
    if (!https) return tcp;
    // SNI and the certificate check use the URL's name, whatever address the connection went to.
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    return await Deno.startTls(tcp, { hostname, caCerts: options.caCerts });
  }
  throw failure;
}

function requestHead(url: URL, headers: Record<string, string>): Uint8Array {
  const lines = [
    `GET ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    "User-Agent: tramontane",
    "Accept-Encoding: identity",
    "Connection: close",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  return new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

function malformed(what: string): Error {
  return new Error(`the server's response is not valid HTTP/1.1 (${what})`);
}

/** Buffered reads from a connection: lines for the head and chunk sizes, byte runs for the body. */
class ConnReader {
  #conn: Deno.Conn;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Reads more into the buffer; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      // Compact, or grow for a long line (lines are capped by the callers).
      const live = this.#buf.subarray(this.#start, this.#end);
      const next = this.#start > 0 ? this.#buf : new Uint8Array(this.#buf.length * 2);
      next.set(live);
      this.#buf = next;
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /** One line without its CRLF (a bare LF is accepted, as most clients do); null at the end of the stream. */
  async line(limit: number): Promise<string | null> {
    for (let scanned = this.#start;;) {
      const lf = this.#buf.subarray(scanned, this.#end).indexOf(0x0a);
      if (lf >= 0) {
        let stop = scanned + lf;
        const next = stop + 1;
        if (stop > this.#start && this.#buf[stop - 1] === 0x0d) stop--;
        const text = new TextDecoder("latin1").decode(this.#buf.subarray(this.#start, stop));
        this.#start = next;
        return text;
      }
      scanned = this.#end;
      if (this.#end - this.#start > limit) throw malformed("a line is too long");
      const offset = scanned - this.#start;
      if (!await this.#fill()) return null;
      scanned = this.#start + offset;
    }
  }

  /** Up to `max` bytes (at least one), or null at the end of the stream. */
  async some(max: number): Promise<Uint8Array | null> {
    if (this.#start === this.#end && !await this.#fill()) return null;
    const n = Math.min(max, this.#end - this.#start);
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** Exactly `n` bytes, appended to `into`; throws when the stream ends first. */
  async exactly(n: number, into: Uint8Array[]): Promise<void> {
    while (n > 0) {
      const part = await this.some(n);
      if (part === null) throw new Error("the connection closed before the body ended");
      into.push(part);
      n -= part.length;
    }
  }
}

async function readHead(reader: ConnReader): Promise<{ status: number; headers: Headers }> {
  const statusLine = await reader.line(MAX_HEAD_BYTES);
  if (statusLine === null) throw new Error("the connection closed before a response");
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine);
  if (!m) throw malformed(`status line ${JSON.stringify(statusLine.slice(0, 80))}`);
  const headers = new Headers();
  let size = statusLine.length;
  for (;;) {
    const line = await reader.line(MAX_HEAD_BYTES);
    if (line === null) throw new Error("the connection closed inside the response head");
    if (line === "") break;
    size += line.length + 2;
    if (size > MAX_HEAD_BYTES) throw malformed(`a head over ${MAX_HEAD_BYTES} bytes`);
    const colon = line.indexOf(":");
    if (colon <= 0 || line[0] === " " || line[0] === "\t") throw malformed(`header ${JSON.stringify(line)}`);
    try {
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    } catch {
      throw malformed(`header ${JSON.stringify(line)}`);
    }
  }
  return { status: Number(m[1]), headers };
}

async function readBody(reader: ConnReader, headers: Headers, maxBytes: number): Promise<Uint8Array> {
  const coding = headers.get("content-encoding");
  if (coding !== null && coding.toLowerCase() !== "identity") {
    throw new Error(`the server sent a ${JSON.stringify(coding)} body though identity was asked for`);
  }
  const parts: Uint8Array[] = [];
  const transfer = headers.get("transfer-encoding");
  if (transfer !== null) {
    if (transfer.toLowerCase().trim() !== "chunked") throw new Error(`unsupported transfer-encoding ${transfer}`);
    await readChunked(reader, maxBytes, parts);
  } else if (headers.has("content-length")) {
    const text = headers.get("content-length")!;
    if (!/^\d+$/.test(text)) throw malformed(`content-length ${JSON.stringify(text)}`);
    const length = Number(text);
    if (length > maxBytes) throw new BodyTooLargeError(maxBytes, length);
    await reader.exactly(length, parts);
  } else {
    // Delimited by the connection's end: the limit holds while reading.
    let total = 0;
    for (let part = await reader.some(1 << 20); part !== null; part = await reader.some(1 << 20)) {
      total += part.length;
      if (total > maxBytes) throw new BodyTooLargeError(maxBytes, null);
      parts.push(part);
    }
  }
  return concat(parts);
}

async function readChunked(reader: ConnReader, maxBytes: number, parts: Uint8Array[]): Promise<void> {
  let total = 0;
  for (;;) {
    const line = await reader.line(1024);
    if (line === null) throw new Error("the connection closed before the body ended");
    const size = line.split(";")[0].trim();
    if (!/^[0-9a-fA-F]{1,8}$/.test(size)) throw malformed(`chunk size ${JSON.stringify(line.slice(0, 40))}`);
    const n = parseInt(size, 16);
    if (n === 0) break;
    total += n;
    if (total > maxBytes) throw new BodyTooLargeError(maxBytes, null);
    await reader.exactly(n, parts);
    if (await reader.line(0) !== "") throw malformed("no line end after a chunk");
  }
  // Trailer fields, then the empty line.
  for (let line = await reader.line(MAX_HEAD_BYTES); line !== ""; line = await reader.line(MAX_HEAD_BYTES)) {
    if (line === null) throw new Error("the connection closed inside the trailer");
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}
