/// <reference lib="dom" />
/**
 * The chat page: settings, conversations, the composer (text and images) and the stream loop. Both modes feed the
 * same {@link AnswerView}: server mode from `/v1/chat/completions`'s SSE, local mode from the in-page worker.
 *
 * @module
 */

import type { ChatCompletionChunk, PageChatRequest, PageMessage } from "../protocol.ts";
import { AnswerTimer, AnswerView, el } from "./answer.ts";
import { LocalEngine } from "./local.ts";
import {
  type Conversation,
  currentId,
  loadConversations,
  newConversation,
  saveConversations,
  setCurrentId,
  type StoredMessage,
} from "./store.ts";
import { authHeaders, serverChunks } from "./stream.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  mode: $<HTMLSelectElement>("mode"),
  effort: $<HTMLSelectElement>("reasoning-effort"),
  temperature: $<HTMLInputElement>("temperature"),
  maxTokens: $<HTMLInputElement>("max-tokens"),
  keyRow: $<HTMLElement>("api-key-row"),
  key: $<HTMLInputElement>("api-key"),
  system: $<HTMLTextAreaElement>("system"),
  tools: $<HTMLTextAreaElement>("tools"),
  status: $<HTMLElement>("status"),
  settings: $<HTMLDetailsElement>("settings"),
  messages: $<HTMLElement>("messages"),
  composer: $<HTMLFormElement>("composer"),
  attachments: $<HTMLElement>("attachments"),
  attach: $<HTMLButtonElement>("attach"),
  file: $<HTMLInputElement>("file"),
  input: $<HTMLTextAreaElement>("input"),
  send: $<HTMLButtonElement>("send"),
  stop: $<HTMLButtonElement>("stop"),
  newChat: $<HTMLButtonElement>("new-chat"),
  list: $<HTMLUListElement>("conversations"),
};

// The key lives in sessionStorage (gone with the tab), never in the URL or localStorage.
const KEY_STORAGE = "tramontane.apiKey";
const params = new URLSearchParams(location.search);
let serverModel: string | undefined;
let local: LocalEngine | null = null;
let conversations = loadConversations();
let conversation: Conversation = conversations.find((c) => c.id === currentId()) ?? newConversation();
let pendingImages: string[] = [];
let running: AbortController | null = null;

function status(text: string): void {
  ui.status.textContent = text;
}

// ---- server probe and API key ------------------------------------------------------------------------------------

/** Asks `/v1/models` which model the server serves; a 401 means it wants a key, so the key field appears. */
async function probeServer(): Promise<void> {
  const res = await fetch("/v1/models", { headers: authHeaders(ui.key.value) }).catch(() => null);
  if (res === null) return status("server unreachable");
  if (res.status === 401) {
    ui.keyRow.hidden = false;
    ui.settings.open = true;
    return status(ui.key.value === "" ? "this server needs an API key" : "the API key was refused");
  }
  if (!res.ok) return status(`/v1/models: HTTP ${res.status}`);
  const body = await res.json();
  serverModel = body?.data?.[0]?.id;
  status(`server · ${serverModel ?? "?"}`);
}

// ---- mode ---------------------------------------------------------------------------------------------------------

function localModel(): string {
  return params.get("model") ?? "demo";
}

/** The in-page engine, made on first use (its loading lines go to the status bar). */
function localEngine(): LocalEngine {
  return local ??= new LocalEngine(localModel(), (text) => status(`local · ${text}`));
}

async function setMode(mode: string): Promise<void> {
  ui.mode.value = mode;
  // Only the mode and model go in the URL (a reload keeps them); the key never does.
  const url = new URL(location.href);
  if (mode === "local") {
    url.searchParams.set("mode", "local");
    url.searchParams.set("model", localModel());
  } else {
    url.searchParams.delete("mode");
  }
  history.replaceState(null, "", url);
  if (mode === "server") return await probeServer();
  status(`local · loading ${localModel()}…`);
  try {
    const backend = await localEngine().load();
    status(`local · ${localModel()} on ${backend}`);
  } catch (e) {
    local = null;
    status("local mode unavailable");
    showError((e as Error).message);
  }
}

function showError(message: string): void {
  const box = el("div", "message error", message);
  box.setAttribute("role", "alert");
  ui.messages.append(box);
}

// ---- conversations ------------------------------------------------------------------------------------------------

function save(): void {
  conversation.updated = Date.now();
  conversation.system = ui.system.value;
  if (conversation.messages.length > 0) {
    conversations = [conversation, ...conversations.filter((c) => c.id !== conversation.id)];
    saveConversations(conversations);
  }
  setCurrentId(conversation.id);
  renderList();
}

function renderList(): void {
  ui.list.replaceChildren(...conversations.map((c) => {
    const item = el("li", c.id === conversation.id ? "active" : "");
    const title = el("span", "title", c.title);
    title.title = c.title;
    const remove = el("button", "delete", "×");
    remove.type = "button";
    remove.title = remove.ariaLabel = "Delete this conversation";
    remove.addEventListener("click", (e) => {
      e.stopPropagation();
      forget(c);
    });
    item.append(title, remove);
    item.addEventListener("click", () => show(c));
    return item;
  }));
}

function forget(c: Conversation): void {
  if (running && c.id === conversation.id) return;
  conversations = conversations.filter((x) => x.id !== c.id);
  saveConversations(conversations);
  if (c.id === conversation.id) show(newConversation(ui.system.value));
  else renderList();
}

function show(c: Conversation): void {
  if (running) return;
  conversation = c;
  ui.system.value = c.system;
  ui.messages.replaceChildren();
  for (const m of c.messages) {
    if (m.role === "user") userView(m);
    else AnswerView.restore(ui.messages, m);
  }
  setCurrentId(c.id);
  renderList();
}

function userView(m: StoredMessage): void {
  const box = el("div", "message user", m.content);
  box.dataset.testid = "message-user";
  for (const src of m.images ?? []) {
    const img = el("img", "thumb");
    img.src = src;
    img.alt = "attached image";
    box.append(img);
  }
  ui.messages.append(box);
}

// ---- images -------------------------------------------------------------------------------------------------------

function readDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result as string);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function addImages(files: Iterable<File>): Promise<void> {
  for (const f of files) {
    if (!f.type.startsWith("image/")) continue;
    pendingImages.push(await readDataUrl(f));
  }
  renderAttachments();
}

function renderAttachments(): void {
  ui.attachments.replaceChildren(...pendingImages.map((src, i) => {
    const img = el("img");
    img.src = src;
    img.alt = "attached image (click to remove)";
    img.title = "click to remove";
    img.addEventListener("click", () => {
      pendingImages.splice(i, 1);
      renderAttachments();
    });
    return img;
  }));
}

// ---- sending ------------------------------------------------------------------------------------------------------

function requestMessages(): PageMessage[] {
  const out: PageMessage[] = [];
  if (ui.system.value.trim() !== "") out.push({ role: "system", content: ui.system.value });
  for (const m of conversation.messages) {
    if (m.role === "assistant") {
      out.push({ role: "assistant", content: m.content });
    } else if (m.images?.length) {
      out.push({
        role: "user",
        content: [
          ...m.images.map((url) => ({ type: "image_url" as const, image_url: { url } })),
          { type: "text" as const, text: m.content },
        ],
      });
    } else {
      out.push({ role: "user", content: m.content });
    }
  }
  return out;
}

function buildRequest(): PageChatRequest {
  const temperature = Number(ui.temperature.value);
  const maxTokens = Number(ui.maxTokens.value);
  const req: PageChatRequest = {
    messages: requestMessages(),
    stream: true,
    stream_options: { include_usage: true },
    reasoning_effort: ui.effort.value === "high" ? "high" : "none",
  };
  if (ui.mode.value === "server" && serverModel) req.model = serverModel;
  if (ui.temperature.value !== "" && temperature >= 0) req.temperature = temperature;
  if (ui.maxTokens.value !== "" && maxTokens >= 1) req.max_tokens = Math.floor(maxTokens);
  if (ui.tools.value.trim() !== "") {
    let tools: unknown;
    try {
      tools = JSON.parse(ui.tools.value);
    } catch (e) {
      throw new Error(`Tools is not valid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(tools)) throw new Error("Tools must be a JSON array of OpenAI function tools.");
    req.tools = tools;
  }
  return req;
}

function chunks(req: PageChatRequest, signal: AbortSignal): AsyncIterable<ChatCompletionChunk> {
  if (ui.mode.value === "local") return localEngine().chat(req, signal);
  return serverChunks(req, ui.key.value, signal);
}

async function send(): Promise<void> {
  const text = ui.input.value;
  if (running || (text.trim() === "" && pendingImages.length === 0)) return;
  const user: StoredMessage = { role: "user", content: text };
  if (pendingImages.length > 0) user.images = pendingImages;
  if (conversation.messages.length === 0) conversation.title = text.trim().slice(0, 60) || "Image";
  conversation.messages.push(user);
  userView(user);
  ui.input.value = "";
  pendingImages = [];
  renderAttachments();

  const view = new AnswerView(ui.messages);
  const timer = new AnswerTimer();
  running = new AbortController();
  ui.send.disabled = true;
  ui.stop.disabled = false;
  let note: string | undefined;
  try {
    for await (const chunk of chunks(buildRequest(), running.signal)) {
      timer.see(chunk);
      view.apply(chunk);
      if (chunk.choices[0]?.finish_reason === "length") note = "stopped at max tokens";
      ui.messages.scrollTop = ui.messages.scrollHeight;
    }
    // The in-page engine ends an aborted stream itself (finish_reason "abort") rather than throwing as fetch does.
    if (running.signal.aborted) note = "stopped";
  } catch (e) {
    if (running.signal.aborted) note = "stopped";
    else view.fail((e as Error).message);
    if ((e as { status?: number }).status === 401) await probeServer();
  } finally {
    view.finish(timer.summary(), note);
    conversation.messages.push(view.message);
    running = null;
    ui.send.disabled = false;
    ui.stop.disabled = true;
    save();
  }
}

// ---- wiring -------------------------------------------------------------------------------------------------------

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
ui.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener("click", () => running?.abort());
ui.attach.addEventListener("click", () => ui.file.click());
ui.file.addEventListener("change", () => {
  addImages(ui.file.files ?? []);
  ui.file.value = "";
});
ui.input.addEventListener("paste", (e) => {
  const files = [...e.clipboardData?.files ?? []].filter((f) => f.type.startsWith("image/"));
  if (files.length > 0) {
    e.preventDefault();
    addImages(files);
  }
});
document.addEventListener("dragover", (e) => {
  e.preventDefault();
  ui.composer.classList.add("dragging");
});
document.addEventListener("dragleave", () => ui.composer.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  ui.composer.classList.remove("dragging");
  addImages(e.dataTransfer?.files ?? []);
});
ui.key.value = sessionStorage.getItem(KEY_STORAGE) ?? "";
ui.key.addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORAGE, ui.key.value);
  probeServer();
});
ui.mode.addEventListener("change", () => setMode(ui.mode.value));
ui.newChat.addEventListener("click", () => {
  if (running) return;
  show(newConversation(ui.system.value));
});
ui.system.addEventListener("change", save);

show(conversation);
setMode(params.get("mode") === "local" ? "local" : "server");
