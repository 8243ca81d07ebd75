/**
 * `node:dns/promises` for the browser bundle. The library resolves an image URL's host itself only to refuse private
 * addresses (a server-side fetch guard); in the page, images arrive as `data:` URLs, which need no lookup.
 *
 * @module
 */

/** Always refuses: a page has no DNS API. */
export function lookup(hostname: string): Promise<never> {
  return Promise.reject(
    new Error(`cannot resolve ${hostname} in the page: attach the image (a data: URL) instead of linking it`),
  );
}
