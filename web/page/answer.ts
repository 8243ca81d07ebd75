/// <reference lib="dom" />
/**
 * One assistant answer as it streams: consumes chunk objects (from the server's SSE or from the in-page worker, the
 * same shape) into the reasoning panel, the answer's Markdown, tool-call cards and the timing line.
 *
 * @module
 */

import type { ChatCompletionChunk } from "../protocol.ts";
import { renderMarkdown } from "./render.ts";
import type { StoredMessage, StoredToolCall } from "./store.ts";

/** Creates an element with a class and optional text (text only: never HTML). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = "",
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className !== "") node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The DOM of one assistant message, filled as deltas arrive or from a stored turn. */
export class AnswerView {
  readonly root: HTMLElement;
  readonly #body: HTMLElement;
  readonly #stats: HTMLElement;
  #reasoning: { panel: HTMLDetailsElement; text: HTMLElement } | null = null;
  readonly #cards: { card: HTMLElement; name: HTMLElement; args: HTMLElement }[] = [];
  readonly message: StoredMessage = { role: "assistant", content: "" };
  #renderQueued = false;

  constructor(parent: HTMLElement) {
    this.root = el("div", "message assistant");
    this.root.dataset.testid = "message-assistant";
    this.#body = el("div", "markdown");
    this.#stats = el("div", "stats");
    this.root.append(this.#body, this.#stats);
    parent.append(this.root);
  }

  /** Shows a stored answer. */
  static restore(parent: HTMLElement, m: StoredMessage): AnswerView {
    const v = new AnswerView(parent);
    if (m.reasoning) v.#addReasoning(m.reasoning, false);
    (m.toolCalls ?? []).forEach((call, i) => {
      const card = v.#card(i);
      card.name.textContent = call.name;
      card.args.textContent = prettyJson(call.arguments);
    });
    v.message.toolCalls = m.toolCalls;
    v.message.content = m.content;
    v.message.stats = m.stats;
    v.#body.innerHTML = renderMarkdown(m.content);
    v.#stats.textContent = m.stats ?? "";
    return v;
  }

  /** Adds one chunk's delta (choice 0). */
  apply(chunk: ChatCompletionChunk): void {
    const delta = chunk.choices[0]?.delta;
    if (delta === undefined) return;
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (reasoning) this.#addReasoning(reasoning, true);
    for (const call of delta.tool_calls ?? []) {
      const view = this.#card(call.index);
      const stored = (this.message.toolCalls ??= [])[call.index] ??= { name: "", arguments: "" };
      if (call.function.name) stored.name += call.function.name;
      stored.arguments += call.function.arguments ?? "";
      view.name.textContent = stored.name;
      view.args.textContent = stored.arguments;
    }
    if (delta.content) {
      this.message.content += delta.content;
      this.#queueRender();
    }
  }

  /** The stream is over: close the reasoning panel, tidy the cards, show the stats line (and why it ended early). */
  finish(stats: string, note?: string): void {
    if (this.#reasoning) this.#reasoning.panel.open = false;
    this.#reasoning?.panel.classList.remove("streaming");
    (this.message.toolCalls ?? []).forEach((c: StoredToolCall, i) =>
      this.#cards[i].args.textContent = prettyJson(c.arguments)
    );
    this.#body.innerHTML = renderMarkdown(this.message.content);
    this.message.stats = note ? `${note} · ${stats}` : stats;
    this.#stats.textContent = this.message.stats;
  }

  /** Shows a failure under the answer. */
  fail(message: string): void {
    const err = el("div", "error", message);
    err.setAttribute("role", "alert");
    this.root.append(err);
  }

  #addReasoning(text: string, streaming: boolean): void {
    if (this.#reasoning === null) {
      const panel = el("details", "reasoning");
      panel.dataset.testid = "reasoning";
      panel.open = streaming;
      if (streaming) panel.classList.add("streaming");
      const summary = el("summary", "", "Reasoning");
      const body = el("div", "reasoning-text");
      panel.append(summary, body);
      this.root.insertBefore(panel, this.#body);
      this.#reasoning = { panel, text: body };
    }
    this.message.reasoning = (this.message.reasoning ?? "") + text;
    this.#reasoning.text.textContent = this.message.reasoning;
  }

  #card(index: number): { card: HTMLElement; name: HTMLElement; args: HTMLElement } {
    while (this.#cards.length <= index) {
      const card = el("div", "tool-call");
      card.dataset.testid = "tool-call";
      const name = el("div", "tool-name");
      const args = el("pre", "tool-args");
      card.append(el("div", "tool-label", "Tool call"), name, args);
      this.root.insertBefore(card, this.#stats);
      this.#cards.push({ card, name, args });
    }
    return this.#cards[index];
  }

  // Re-rendering the whole Markdown on every token is quadratic; once per frame keeps long answers smooth.
  #queueRender(): void {
    if (this.#renderQueued) return;
    this.#renderQueued = true;
    requestAnimationFrame(() => {
      this.#renderQueued = false;
      this.#body.innerHTML = renderMarkdown(this.message.content);
    });
  }
}

/** Arguments indented when they are JSON, else as the model wrote them. */
function prettyJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Times one answer: time to first token, decode rate, token counts. */
export class AnswerTimer {
  readonly #start = performance.now();
  #first: number | null = null;
  #last = 0;
  #pieces = 0;
  #usage: { prompt_tokens: number; completion_tokens: number } | null = null;

  /** Notes a chunk's arrival. */
  see(chunk: ChatCompletionChunk): void {
    if (chunk.usage) this.#usage = chunk.usage;
    const d = chunk.choices[0]?.delta;
    if (!d || !(d.content || d.reasoning_content || d.reasoning || d.tool_calls)) return;
    const now = performance.now();
    this.#first ??= now;
    this.#last = now;
    this.#pieces++;
  }

  /** `TTFT 120 ms · 35.2 tok/s · 40 prompt + 16 completion tokens`. */
  summary(): string {
    if (this.#first === null) return "no tokens";
    const parts = [`TTFT ${Math.round(this.#first - this.#start)} ms`];
    const tokens = this.#usage?.completion_tokens ?? this.#pieces;
    const seconds = (this.#last - this.#first) / 1000;
    // The first token's time is TTFT; the rate is over the tokens after it.
    if (tokens > 1 && seconds > 0) parts.push(`${((tokens - 1) / seconds).toFixed(1)} tok/s`);
    if (this.#usage) {
      parts.push(`${this.#usage.prompt_tokens} prompt + ${this.#usage.completion_tokens} completion tokens`);
    }
    return parts.join(" · ");
  }
}
