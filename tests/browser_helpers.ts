/// <reference lib="dom" />
/**
 * Browser tests: Debian's `chromium` driven by `playwright-core`. Without the binary the tests are skipped with one
 * line, except under `CI=true`, where that is a failure (CI installs chromium).
 *
 * @module
 */

import { type Browser, chromium, type Page } from "playwright-core";

export type { Browser, Page };

/** Where Debian's package puts the browser. */
export const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";

/** Screenshots of the browser tests (not committed: bench/screenshots/web_page.png is the committed one). */
export const SCREENSHOTS = new URL("../bench/screenshots/test/", import.meta.url);

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** True when the browser tests can run; prints why not once, and throws under CI=true. */
export function browserAvailable(): boolean {
  if (exists(CHROMIUM)) return true;
  if (Deno.env.get("CI") === "true") throw new Error(`${CHROMIUM} is missing: apt-get install chromium (CI needs it)`);
  console.log(`skipping the browser tests: no ${CHROMIUM} (apt-get install chromium)`);
  return false;
}

/** Starts headless chromium. */
export async function launchBrowser(): Promise<Browser> {
  return await chromium.launch({
    executablePath: CHROMIUM,
    // Containers here run as root, where chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
}

/** A page plus what went wrong in it: console errors, uncaught exceptions, Content-Security-Policy violations. */
export interface WatchedPage {
  page: Page;
  /** Console errors and uncaught exceptions. */
  errors: string[];
  /** CSP violations the page reported (`securitypolicyviolation` events), as `directive blocked-uri`. */
  cspViolations(): Promise<string[]>;
  close(): Promise<void>;
}

/** Opens a fresh context (own storage) and page on `url`, watching for errors. */
export async function openPage(browser: Browser, url: string): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`exception: ${e.message}`));
  // Registered before any page script runs, so violations of the first load are caught too.
  await page.addInitScript(() => {
    const w = globalThis as unknown as { __csp: string[] };
    w.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      w.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  await page.goto(url);
  return {
    page,
    errors,
    cspViolations: () => page.evaluate(() => (globalThis as unknown as { __csp: string[] }).__csp),
    close: () => context.close(),
  };
}

/** Saves a full-page screenshot as `bench/screenshots/test/<name>.png`. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: new URL(`${name}.png`, SCREENSHOTS).pathname, fullPage: true });
}

/** Types `text` into the composer and sends it. */
export async function sendMessage(page: Page, text: string): Promise<void> {
  await page.getByTestId("input").fill(text);
  await page.getByTestId("send").click();
}

/** Waits until the last answer has finished (its stats line is written when the stream ends). */
export async function waitForAnswer(page: Page, timeout = 15_000): Promise<void> {
  await page.locator('[data-testid="message-assistant"]').last().locator(".stats:not(:empty)").waitFor({ timeout });
}
