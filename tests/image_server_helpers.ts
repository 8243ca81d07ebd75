/**
 * Test helpers for image downloads: a raw HTTP/1.1 server on 127.0.0.1 whose handler writes bytes as it likes
 * (chunked, lying, trickling), and sees when the client closes the connection; and a test CA with a certificate for
 * `images.test`, for https.
 *
 * @module
 */

/** One connection of a {@link rawHttpServer}, after its request head arrived. */
export interface RawExchange {
  /** The request head (request line and headers, CRLF-separated, without the blank line). */
  head: string;
  /** Writes to the client (a string as Latin-1 bytes); rejects once the client is gone. */
  write(data: string | Uint8Array): Promise<void>;
  /** Resolves when the client closes its side (a read returns end of stream) or the connection breaks. */
  closed: Promise<void>;
}

/** A running {@link rawHttpServer}. */
export interface RawHttpServer {
  port: number;
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  /** Every request head so far. */
  heads: string[];
  /** Resolves with each exchange as its request arrives (the next one not yet taken). */
  nextExchange(): Promise<RawExchange>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function latin1(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/**
 * A server that reads each request head and hands the connection to `handler`; the connection closes when the
 * handler returns (so a handler that awaits `closed` keeps it open until the client leaves).
 *
 * @example
 * ```ts
 * await using s = rawHttpServer(async (x) => await x.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"));
 * ```
 */
export function rawHttpServer(handler: (x: RawExchange) => Promise<void>): RawHttpServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const heads: string[] = [];
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const arrived: RawExchange[] = [];
  const waiting: ((x: RawExchange) => void)[] = [];
  const serveOne = async (conn: Deno.Conn) => {
    conns.add(conn);
    try {
      let text = "";
      const buf = new Uint8Array(4096);
      while (!text.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) return;
        text += String.fromCharCode(...buf.subarray(0, n));
      }
      const head = text.slice(0, text.indexOf("\r\n\r\n"));
      heads.push(head);
      const closed = (async () => {
        try {
          while (await conn.read(buf) !== null) { /* a GET has no body: read only to see the end */ }
        } catch { /* reset or closed by us */ }
      })();
      const exchange: RawExchange = {
        head,
        closed,
        async write(data) {
          const bytes = typeof data === "string" ? latin1(data) : data;
          for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
        },
      };
      const w = waiting.shift();
      if (w) w(exchange);
      else arrived.push(exchange);
      await handler(exchange).catch(() => {});
    } catch {
      /* the client went away */
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) tasks.push(serveOne(conn));
    } catch { /* listener closed */ }
  })();
  const close = async () => {
    try {
      listener.close();
    } catch { /* closed */ }
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await accepting;
    await Promise.allSettled(tasks);
  };
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    heads,
    nextExchange: () => {
      const x = arrived.shift();
      return x ? Promise.resolve(x) : new Promise((resolve) => waiting.push(resolve));
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Resolves `p`, or fails the test after `ms` (a guard against a hang, not a timing check). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, guard]).finally(() => clearTimeout(timer));
}

// A test CA and a certificate for DNS name `images.test` it signed (P-256, valid 2000–2100), made with openssl:
// `req -new` + `ca -selfsign` for the CA (basicConstraints CA:TRUE), `ca` for the leaf (CA:FALSE, serverAuth,
// subjectAltName DNS:images.test). Test data only: nothing trusts this CA outside the tests that pass it.

/** The test CA's certificate (PEM), to pass as `caCerts`. */
export const TEST_CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBbDCCAROgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJUcmFtb250
YW5lIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMElRyYW1vbnRhbmUgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABDhgR0P1Ekzt+b0T9oxdE97GE24gIHM19Qiug7lMXvTcR9jKfGw13kTm
+EV9Yth5btZYtCi+5fmOneUUB466JbqjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYD
VR0PAQH/BAQDAgIEMB0GA1UdDgQWBBSBHS6q+tyMqOb/ldynnAsJswFrBjAKBggq
hkjOPQQDAgNHADBEAiA/rj5vPKRjUXxALFaG2oh3dKL46IscTY+I5XGGyeoy6gIg
NXLXDiORPM614IhRlDFD6Itajy34nkYdKE3u3hK3QJ8=
-----END CERTIFICATE-----
`;

/** The certificate of `images.test` (PEM), for `Deno.serve({ cert })`. */
export const TEST_CERT_PEM = `-----BEGIN CERTIFICATE-----
MIIBrTCCAVOgAwIBAgIBAjAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJUcmFtb250
YW5lIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBYx
FDASBgNVBAMMC2ltYWdlcy50ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
dX3YLlVFWGuUJvnWSPu303MUii/bgqyX/+3UPR5tcLpwaRNCwEV2miEeO46JEtQi
OI6xiL3ktGcjspwNtDzQAaOBiDCBhTAWBgNVHREEDzANggtpbWFnZXMudGVzdDAJ
BgNVHRMEAjAAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMAsGA1UdDwQEAwIHgDAfBgNV
HSMEGDAWgBSBHS6q+tyMqOb/ldynnAsJswFrBjAdBgNVHQ4EFgQUmodEnWnPm650
u0oDZ4JbSFe5l9swCgYIKoZIzj0EAwIDSAAwRQIgdxbqS7TFRMxXDNl5XOu9EQY6
dIQ6x/aRozosOWySAFECIQCuGJlNsrnvGdwY0EBFHmr7VLT0KB67i0I2vn6heUqE
Pg==
-----END CERTIFICATE-----
`;

/** Its private key (PEM), for `Deno.serve({ key })`. */
export const TEST_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0ZNn1pFQ6g3Ry179
lh/z/Kq0jJNQqXcn25nOoy/3kaKhRANCAAR1fdguVUVYa5Qm+dZI+7fTcxSKL9uC
rJf/7dQ9Hm1wunBpE0LARXaaIR47jokS1CI4jrGIveS0ZyOynA20PNAB
-----END PRIVATE KEY-----
`;
