/// <reference lib="dom" />
/**
 * The chat page at `/`, server mode, in a real browser (Debian chromium via playwright-core) against the real server
 * with a scripted fake engine (and once the real `tiny` preset): streaming, stop, images, reasoning and tool-call
 * rendering, the sanitiser, the API-key field, local mode (the page's own engine against the server's answer; server/web_ui_test.ts checks the routes
 * and headers without a browser). Each step saves a screenshot under bench/screenshots/test/.
 */
import { assert, assertEquals } from "./assert.ts";
import {
  type Browser,
  browserAvailable,
  launchBrowser,
  openPage,
  screenshot,
  sendMessage,
  waitForAnswer,
  type WatchedPage,
} from "./browser_helpers.ts";
import { fixture } from "./fixtures.ts";
import { startE2eServer } from "./grammar_e2e_helpers.ts";
import { callTools, type Harness, say, startServer, thinkThenSay } from "./server_helpers.ts";

const VISION = { patchSize: 14, mergeSize: 2, maxImageSize: 1540 };
const PNG = fixture("images/chelsea.png").pathname;

function assertMatch(actual: string, re: RegExp): void {
  assert(re.test(actual), `${JSON.stringify(actual)} does not match ${re}`);
}

/** No console errors, no exceptions, no CSP violations. */
async function assertClean(w: WatchedPage): Promise<void> {
  assertEquals(w.errors, [], "errors in the page");
  assertEquals(await w.cspViolations(), [], "Content-Security-Policy violations");
}

function btoaBytes(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function metric(h: Harness, line: RegExp): Promise<string | undefined> {
  const text = await (await fetch(`${h.url}/metrics`)).text();
  return text.split("\n").find((l) => line.test(l));
}

Deno.test({
  name: "web page: server mode in chromium",
  ignore: !browserAvailable(),
  // playwright keeps its browser connection across steps; the last step closes it.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const browser: Browser = await launchBrowser();
    try {
      await t.step(
        "a message streams into message-assistant as Markdown; the conversation survives a reload",
        async () => {
          await using h = await startServer({ engine: { script: [], delayMs: 5 } });
          h.engine.script = say(h.tok, "Hello **world**, here is `code`:\n\n```\nlet x = 1;\n```\n");
          const w = await openPage(browser, h.url);
          const { page } = w;
          await page.getByTestId("input").waitFor();
          // COOP + COEP took effect: SharedArrayBuffer (the in-page engine's wasm threads) is available.
          assertEquals(await page.evaluate(() => crossOriginIsolated && typeof SharedArrayBuffer === "function"), true);
          await sendMessage(page, "Say hello");
          await waitForAnswer(page);
          const answer = page.getByTestId("message-assistant").last();
          assertEquals(await answer.locator("strong").textContent(), "world");
          assertEquals(await answer.locator("pre code").textContent(), "let x = 1;\n");
          assertMatch(
            await answer.locator(".stats").textContent() ?? "",
            /TTFT \d+ ms · [\d.]+ tok\/s · \d+ prompt \+ \d+ completion tokens/,
          );
          assertEquals(await page.getByTestId("message-user").textContent(), "Say hello");
          assertEquals(await page.locator("#api-key").isVisible(), false, "no key field when the server needs none");
          // The request was the page's: streamed, with its settings.
          assertEquals(h.engine.requests.length, 1);
          assertEquals(h.engine.requests[0].maxTokens, 256);
          await screenshot(page, "web_page_answer");
          await assertClean(w);
          await page.reload();
          await page.getByTestId("message-assistant").waitFor();
          assertEquals(await page.getByTestId("message-assistant").locator("strong").textContent(), "world");
          assertEquals(await page.locator("#conversations li").count(), 1);
          await page.locator("#conversations li .delete").click();
          assertEquals(await page.locator("#conversations li").count(), 0);
          assertEquals(await page.getByTestId("message-assistant").count(), 0);
          assertEquals(await page.evaluate(() => localStorage.getItem("tramontane.conversations")), "[]");
          await assertClean(w);
          await w.close();
        },
      );

      await t.step("stop ends the stream; the server cancels and /metrics counts it", async () => {
        await using h = await startServer({ engine: { delayMs: 40 } });
        h.engine.script = say(h.tok, "word ".repeat(400));
        const w = await openPage(browser, h.url);
        const { page } = w;
        await sendMessage(page, "Talk for a long time");
        const answer = page.getByTestId("message-assistant").last();
        await answer.locator(".markdown:not(:empty)").waitFor();
        await page.getByTestId("stop").click();
        await waitForAnswer(page);
        assertMatch(await answer.locator(".stats").textContent() ?? "", /^stopped · TTFT/);
        let cancelled: string | undefined;
        for (let i = 0; i < 50 && cancelled === undefined; i++) {
          cancelled = await metric(
            h,
            /^tramontane_requests_total\{.*route="\/v1\/chat\/completions",status="499"\} 1$/,
          );
          if (cancelled === undefined) await new Promise((r) => setTimeout(r, 50));
        }
        assert(cancelled, "/metrics has no cancelled (499) chat request");
        assertEquals(h.engine.stats().running, 0, "the sequence was freed");
        assert(await page.getByTestId("send").isEnabled());
        await screenshot(page, "web_page_stopped");
        await assertClean(w);
        await w.close();
      });

      await t.step("an image attached by the picker reaches the server; paste and drop attach too", async () => {
        await using h = await startServer({ engine: { vision: VISION } });
        h.engine.script = say(h.tok, "A cat.");
        const w = await openPage(browser, h.url);
        const { page } = w;
        const chooser = page.waitForEvent("filechooser");
        await page.getByTestId("attach").click();
        await (await chooser).setFiles(PNG);
        await page.locator("#attachments img").waitFor();
        await sendMessage(page, "What is this?");
        await waitForAnswer(page);
        const req = h.engine.requests[0];
        assertEquals(req.images?.length, 1, "one image reached the engine");
        // chelsea.png is 451 × 300: 17 × 11 tokens of 28-pixel merged patches.
        assertEquals(req.images![0].grid, { rows: 11, cols: 17 });
        const stats = await page.getByTestId("message-assistant").last().locator(".stats").textContent() ?? "";
        const prompt = Number(/(\d+) prompt/.exec(stats)?.[1]);
        assertEquals(prompt, req.promptIds.length, "the usage the page shows is the engine's prompt");
        assert(prompt > 11 * 17, `the usage (${prompt} prompt tokens) counts the image's 187`);
        assertEquals(await page.getByTestId("message-user").locator("img").count(), 1);
        await screenshot(page, "web_page_image");
        // Paste and drag-and-drop, with the same PNG as a File.
        const png = Array.from(await Deno.readFile(PNG));
        const attached = await page.evaluate(async (data) => {
          const bytes = Uint8Array.from(data);
          const file = () => {
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "cat.png", { type: "image/png" }));
            return dt;
          };
          const input = document.querySelector('[data-testid="input"]')!;
          input.dispatchEvent(new ClipboardEvent("paste", { clipboardData: file(), bubbles: true, cancelable: true }));
          document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: file(), bubbles: true, cancelable: true }));
          for (let i = 0; i < 100 && document.querySelectorAll("#attachments img").length < 2; i++) {
            await new Promise((r) => setTimeout(r, 20));
          }
          return document.querySelectorAll("#attachments img").length;
        }, png);
        assertEquals(attached, 2, "paste and drop each attached the image");
        await assertClean(w);
        await w.close();
      });

      await t.step(
        "the real tiny model (wasm): an image and a question stream an answer; usage counts the image",
        async () => {
          const e2e = await startE2eServer({ model: "tiny", backend: "wasm" });
          try {
            const w = await openPage(browser, e2e.handle.url);
            const { page } = w;
            await page.locator("#settings summary").click();
            await page.locator("#max-tokens").fill("8");
            await page.locator("#temperature").fill("0");
            const chooser = page.waitForEvent("filechooser");
            await page.getByTestId("attach").click();
            await (await chooser).setFiles(PNG);
            await page.locator("#attachments img").waitFor();
            await sendMessage(page, "Describe the picture.");
            await waitForAnswer(page, 30_000);
            const answer = page.getByTestId("message-assistant").last();
            const stats = await answer.locator(".stats").textContent() ?? "";
            assertMatch(stats, /TTFT \d+ ms · [\d.]+ tok\/s · \d+ prompt \+ 8 completion tokens/);
            assert((await answer.locator(".markdown").textContent() ?? "").length > 0, "an answer was rendered");
            // The same request from the client: the page's prompt was the same tokens, the image's included.
            const url = `data:image/png;base64,${btoaBytes(await Deno.readFile(PNG))}`;
            const direct = await e2e.client.chat.completions.create({
              model: e2e.model,
              messages: [{
                role: "user",
                content: [{ type: "image_url", image_url: { url } }, { type: "text", text: "Describe the picture." }],
              }],
              max_tokens: 1,
              temperature: 0,
            });
            const prompt = Number(/(\d+) prompt/.exec(stats)?.[1]);
            assertEquals(prompt, direct.usage!.prompt_tokens);
            assert(prompt > 11 * 17, `${prompt} prompt tokens include the image's 187`);
            await screenshot(page, "web_page_tiny_image");
            await assertClean(w);
            await w.close();
          } finally {
            await e2e.close();
          }
        },
      );

      await t.step("reasoning streams into a collapsible panel; tool calls become cards", async () => {
        await using h = await startServer({ engine: { delayMs: 2 } });
        h.engine.script = [
          ...thinkThenSay(h.tok, "The user wants the weather.", "Let me check."),
          ...callTools(h.tok, [["get_weather", '{"city": "Paris"}'], ["get_time", '{"zone": "CET"}']]),
        ];
        const w = await openPage(browser, h.url);
        const { page } = w;
        await page.locator("#settings summary").click();
        await page.locator("#reasoning-effort").selectOption("high");
        await page.locator("#tools").fill(JSON.stringify([
          { type: "function", function: { name: "get_weather", parameters: { type: "object" } } },
          { type: "function", function: { name: "get_time", parameters: { type: "object" } } },
        ]));
        await sendMessage(page, "Weather in Paris?");
        await waitForAnswer(page);
        const answer = page.getByTestId("message-assistant").last();
        const reasoning = answer.getByTestId("reasoning");
        assertEquals(await reasoning.locator(".reasoning-text").textContent(), "The user wants the weather.");
        assertEquals(await reasoning.evaluate((d) => (d as HTMLDetailsElement).open), false, "collapsed once done");
        await reasoning.locator("summary").click();
        assertEquals(await reasoning.evaluate((d) => (d as HTMLDetailsElement).open), true, "opens on click");
        assertEquals(await answer.locator(".markdown").textContent(), "Let me check.\n");
        const cards = answer.getByTestId("tool-call");
        assertEquals(await cards.count(), 2);
        assertEquals(await cards.nth(0).locator(".tool-name").textContent(), "get_weather");
        assertEquals(JSON.parse(await cards.nth(0).locator(".tool-args").textContent() ?? ""), { city: "Paris" });
        assertEquals(await cards.nth(1).locator(".tool-name").textContent(), "get_time");
        // The page's settings reached the prompt: reasoning on, tools listed.
        const prompt = h.tok.decode(h.engine.requests[0].promptIds, { specials: "keep" });
        assert(prompt.includes("[AVAILABLE_TOOLS]"), prompt);
        assert(prompt.includes("get_time"), prompt);
        await screenshot(page, "web_page_reasoning_tools");
        await assertClean(w);
        await w.close();
      });

      await t.step("the sanitiser: <script>, onerror and javascript: links in model output do nothing", async () => {
        await using h = await startServer();
        h.engine.script = say(
          h.tok,
          'Hi <script>window.__pwned = 1</script>\n\n<img src=x onerror="window.__pwned = 2">\n\n' +
            '[click me](javascript:window.__pwned=3) <a href="javascript:window.__pwned=4">or me</a> ' +
            '<b onmouseover="window.__pwned=5">bold</b> [fine](https://example.org/)',
        );
        const w = await openPage(browser, h.url);
        const { page } = w;
        await sendMessage(page, "Be evil");
        await waitForAnswer(page);
        const answer = page.getByTestId("message-assistant").last();
        await answer.locator("b").hover();
        for (const link of await answer.locator("a").all()) await link.click({ modifiers: ["Shift"] }).catch(() => {});
        const found = await page.evaluate(() => {
          const root = document.querySelector('[data-testid="message-assistant"]')!;
          const attrs = [...root.querySelectorAll("*")].flatMap((e) => [...e.attributes].map((a) => a.name));
          return {
            pwned: (globalThis as unknown as { __pwned?: number }).__pwned ?? null,
            scripts: root.querySelectorAll("script").length,
            handlers: attrs.filter((a) => a.startsWith("on")),
            jsHrefs: [...document.querySelectorAll("[href]")].map((e) => e.getAttribute("href")!)
              .filter((href) => /^\s*javascript:/i.test(href)),
            hrefs: [...root.querySelectorAll("a[href]")].map((e) => e.getAttribute("href")),
            bold: root.querySelector("b")?.textContent,
          };
        });
        assertEquals(found.pwned, null, "model output ran script");
        assertEquals(found.scripts, 0);
        assertEquals(found.handlers, []);
        assertEquals(found.jsHrefs, []);
        assertEquals(found.hrefs, ["https://example.org/"], "the safe link stays");
        assertEquals(found.bold, "bold", "harmless HTML stays");
        await screenshot(page, "web_page_sanitiser");
        // Chromium reports (and blocks) the inline handlers once when the sanitiser parses the HTML with DOMParser:
        // a CSP report of a handler that never ran, the policy's second line of defence. Nothing else may appear.
        const inline = /Executing inline event handler violates/;
        assert(w.errors.some((e) => inline.test(e)), "the CSP saw the handlers (else this test tests nothing)");
        w.errors.splice(0, w.errors.length, ...w.errors.filter((e) => !inline.test(e)));
        assertEquals(w.errors, []);
        assertEquals((await w.cspViolations()).filter((v) => !/^script-src-attr inline$/.test(v)), []);
        await w.close();
      });

      await t.step(
        "a server with --api-key: the page asks for the key, keeps it out of the URL, and then works",
        async () => {
          await using h = await startServer({ server: { apiKey: "s3cret" } });
          h.engine.script = say(h.tok, "Authorised.");
          const w = await openPage(browser, h.url);
          const { page } = w;
          await page.locator("#api-key").waitFor({ state: "visible" });
          await page.locator("#api-key").fill("s3cret");
          await page.locator("#api-key").press("Tab");
          await page.locator("#status", { hasText: "server · " }).waitFor();
          await sendMessage(page, "Hi");
          await waitForAnswer(page);
          assertEquals(
            await page.getByTestId("message-assistant").last().locator(".markdown").textContent(),
            "Authorised.\n",
          );
          assert(!page.url().includes("s3cret"));
          assertEquals(await page.evaluate(() => JSON.stringify(localStorage).includes("s3cret")), false);
          await screenshot(page, "web_page_api_key");
          // The probe's 401 is the one expected console error (Chromium logs failed fetches).
          w.errors.splice(0, w.errors.length, ...w.errors.filter((e) => !/401/.test(e)));
          await assertClean(w);
          await w.close();
        },
      );

      await t.step(
        "local mode (/?mode=local&model=demo): the page's own engine answers as the server does; stop stops it",
        async () => {
          // The real server over demo (wasm); the page loads demo itself in a worker (wasm: this browser has no
          // GPU) and sends nothing to the server's engine.
          const e2e = await startE2eServer({ model: "demo", backend: "wasm" });
          try {
            const prompt = "Write a haiku about the north wind.";
            const direct = await e2e.client.chat.completions.create({
              model: e2e.model,
              messages: [{ role: "user", content: prompt }],
              max_tokens: 16,
              temperature: 0,
            });
            const w = await openPage(browser, `${e2e.handle.url}/?mode=local&model=demo`);
            const { page } = w;
            assertEquals(await page.getByTestId("mode").inputValue(), "local");
            await page.locator("#settings summary").click();
            await page.locator("#max-tokens").fill("16");
            await page.locator("#temperature").fill("0");
            await sendMessage(page, prompt);
            await waitForAnswer(page, 60_000);
            const stored = await page.evaluate(() =>
              JSON.parse(localStorage.getItem("tramontane.conversations") ?? "[]")
            ) as { messages: { role: string; content: string }[] }[];
            const answer = stored.flatMap((c) => c.messages).findLast((m) => m.role === "assistant");
            assertEquals(
              answer?.content,
              direct.choices[0].message.content,
              "the page's greedy answer is the server's",
            );
            assertEquals(e2e.engine.stats().running, 0);
            await screenshot(page, "web_page_local");
            // Stop: a long answer ends early and says so.
            await page.locator("#max-tokens").fill("400");
            await sendMessage(page, "And another, longer.");
            await page.getByTestId("message-assistant").last().locator(".markdown:not(:empty)").waitFor();
            await page.getByTestId("stop").click();
            await waitForAnswer(page, 30_000);
            const stats = await page.getByTestId("message-assistant").last().locator(".stats").textContent() ?? "";
            assertMatch(stats, /stopped/);
            const completion = Number(/(\d+) completion tokens/.exec(stats)?.[1]);
            assert(completion > 0 && completion < 400, `stopped early: ${stats}`);
            await assertClean(w);
            await w.close();
          } finally {
            await e2e.close();
          }
        },
      );
    } finally {
      await browser.close();
    }
  },
});
