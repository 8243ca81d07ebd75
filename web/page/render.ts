/// <reference lib="dom" />
/**
 * Model output → sanitised HTML: Markdown by `marked` (GitHub flavour), then `DOMPurify`, which removes scripts,
 * event-handler attributes and `javascript:` URLs. Model output is untrusted text: nothing reaches `innerHTML`
 * without passing through here.
 *
 * @module
 */

import { Marked } from "marked";
import DOMPurify from "dompurify";

const md = new Marked({ gfm: true, breaks: true, async: false });

// Links open in a new tab without handing the page to the target.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Renders Markdown to HTML that is safe to assign to `innerHTML` (no script, no handlers, no `javascript:`). */
export function renderMarkdown(text: string): string {
  const html = md.parse(text) as string;
  return DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    // No images either: a model-written image URL is the usual way a prompt injection sends data out (the CSP also
    // blocks other origins, but a same-origin URL would still reach the server's log).
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
    FORBID_ATTR: ["style"],
  });
}
