/**
 * `node:path` for the browser bundle: the POSIX `join`, `dirname` and `basename` the library uses on checkpoint
 * paths, which in the page are URL paths on the server (`/web/models/NAME/config.json`).
 *
 * @module
 */

/** Joins and normalises POSIX path segments (`a/./b/../c` → `a/c`), as node's `path.join`. */
export function join(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  if (joined === "") return ".";
  const absolute = joined.startsWith("/");
  const out: string[] = [];
  for (const seg of joined.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === ".." && out.length > 0 && out.at(-1) !== "..") out.pop();
    else if (seg !== ".." || !absolute) out.push(seg);
  }
  const body = out.join("/");
  const trailing = joined.endsWith("/") && body !== "" ? "/" : "";
  return (absolute ? "/" : "") + (body || (absolute ? "" : ".")) + trailing;
}

/** Everything before the last segment, as node's `path.dirname`. */
export function dirname(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  if (trimmed === "" && path.startsWith("/")) return "/";
  const at = trimmed.lastIndexOf("/");
  if (at < 0) return ".";
  return at === 0 ? "/" : trimmed.slice(0, at);
}

/** The last segment, as node's `path.basename` (without its `ext` argument). */
export function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}
