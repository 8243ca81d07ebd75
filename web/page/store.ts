/// <reference lib="dom" />
/**
 * Conversations kept in `localStorage` (one JSON list), so a reload keeps them. Images are kept as their data URLs;
 * when the browser's quota is full the oldest conversations are dropped rather than the newest turn lost.
 *
 * @module
 */

/** A tool call as the page shows it. */
export interface StoredToolCall {
  name: string;
  arguments: string;
}

/** One turn of a conversation. */
export interface StoredMessage {
  role: "user" | "assistant";
  content: string;
  /** User turns: attached images, as data URLs. */
  images?: string[];
  /** Assistant turns: the reasoning, when there was some. */
  reasoning?: string;
  /** Assistant turns: the tool calls made. */
  toolCalls?: StoredToolCall[];
  /** Assistant turns: the timing line shown under the answer. */
  stats?: string;
}

/** A conversation and the settings it was held with. */
export interface Conversation {
  id: string;
  title: string;
  system: string;
  messages: StoredMessage[];
  /** Unix milliseconds of the last change. */
  updated: number;
}

const KEY = "tramontane.conversations";
const CURRENT = "tramontane.current";

/** Every stored conversation, newest first. */
export function loadConversations(): Conversation[] {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    return Array.isArray(list) ? list.filter((c) => typeof c?.id === "string" && Array.isArray(c.messages)) : [];
  } catch {
    return [];
  }
}

/** Writes `list` (newest first), dropping the oldest while the quota refuses it. */
export function saveConversations(list: Conversation[]): void {
  const kept = [...list].sort((a, b) => b.updated - a.updated);
  while (true) {
    try {
      localStorage.setItem(KEY, JSON.stringify(kept));
      return;
    } catch {
      if (kept.length <= 1) return; // one conversation beyond the quota: kept in memory only
      kept.pop();
    }
  }
}

/** The id of the conversation shown last, if any. */
export function currentId(): string | null {
  return localStorage.getItem(CURRENT);
}

/** Remembers which conversation is shown. */
export function setCurrentId(id: string): void {
  localStorage.setItem(CURRENT, id);
}

/** A new empty conversation. */
export function newConversation(system = ""): Conversation {
  return { id: crypto.randomUUID(), title: "New chat", system, messages: [], updated: Date.now() };
}
