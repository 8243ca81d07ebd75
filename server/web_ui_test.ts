/**
 * The chat page's routes without a browser: `/` and `/web/{file}` from the committed bundle, their security headers,
 * no key needed for them (the API keeps its key), nothing outside `web/dist/`, and `webUi: false`.
 */
import { assert, assertEquals } from "../tests/assert.ts";
import { startServer } from "../tests/server_helpers.ts";
import { WEB_UI_CSP } from "./web_ui.ts";

async function get(url: string, init?: RequestInit): Promise<Response> {
  const res = await fetch(url, init);
  await res.body?.cancel();
  return res;
}

Deno.test("web ui: the page and its files carry the CSP, nosniff and the isolation headers, without a key", async () => {
  await using h = await startServer({ server: { apiKey: "k" } });
  const expected: Record<string, RegExp> = {
    "/": /^text\/html/,
    "/web/index.html": /^text\/html/,
    "/web/page.js": /^text\/javascript/,
    "/web/page.css": /^text\/css/,
  };
  for (const [path, type] of Object.entries(expected)) {
    const res = await get(h.url + path);
    assertEquals(res.status, 200, path);
    assert(type.test(res.headers.get("content-type") ?? ""), `${path}: ${res.headers.get("content-type")}`);
    assertEquals(res.headers.get("content-security-policy"), WEB_UI_CSP, path);
    assertEquals(res.headers.get("x-content-type-options"), "nosniff", path);
    assertEquals(res.headers.get("cross-origin-opener-policy"), "same-origin", path);
    assertEquals(res.headers.get("cross-origin-embedder-policy"), "require-corp", path);
    assertEquals(res.headers.get("cross-origin-resource-policy"), "same-origin", path);
  }
  for (
    const d of ["default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "object-src 'none'", "base-uri 'none'"]
  ) {
    assert(WEB_UI_CSP.includes(d), `the CSP lacks ${d}`);
  }
  assert(!WEB_UI_CSP.includes("'unsafe-inline'") && !WEB_UI_CSP.includes("'unsafe-eval'"), WEB_UI_CSP);
  // The page is the committed bundle's, byte for byte.
  const page = await (await fetch(`${h.url}/`)).text();
  assertEquals(page, await Deno.readTextFile(new URL("../web/dist/index.html", import.meta.url)));
  assert(page.includes('src="/web/page.js"'));
  // HEAD answers too (the page probes for the in-page engine's bundle that way).
  assertEquals((await get(`${h.url}/web/page.js`, { method: "HEAD" })).status, 200);
  // The API keeps its key.
  assertEquals((await get(`${h.url}/v1/models`)).status, 401);
});

Deno.test("web ui: only files of web/dist, by plain names", async () => {
  await using h = await startServer();
  for (
    const path of ["/web/../deno.json", "/web/%2e%2e/deno.json", "/web/..%2fdeno.json", "/web/nope.js", "/web/.x.js"]
  ) {
    assertEquals((await get(h.url + path)).status, 404, path);
  }
  assertEquals((await get(`${h.url}/web/page.js`, { method: "POST" })).status, 405);
  assertEquals((await get(`${h.url}/index.html`)).status, 404);
});

Deno.test("web ui: webUi false (--no-web-ui) serves no page", async () => {
  await using h = await startServer({ server: { webUi: false } });
  for (const path of ["/", "/web/page.js", "/web/index.html"]) {
    assertEquals((await get(h.url + path)).status, 404, path);
  }
  assertEquals((await get(`${h.url}/health`)).status, 200);
});
