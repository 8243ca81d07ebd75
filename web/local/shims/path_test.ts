/** The browser shim of `node:path` agrees with node's POSIX functions on the paths the library joins. */
import * as node from "node:path";
import { assertEquals } from "../../../tests/assert.ts";
import { basename, dirname, join } from "./path.ts";

Deno.test("path shim: join, dirname and basename as node:path (POSIX)", () => {
  const joins: string[][] = [
    ["/web/models/tiny", "config.json"],
    ["/web/models/tiny/", "config.json"],
    ["models/tiny", "model.safetensors.index.json"],
    ["/a/b", "../c", "./d"],
    ["a", "..", "..", "b"],
    ["/", "..", "x"],
    ["", "x"],
    ["a/", ""],
    ["/a//b/", "c/"],
    [".", "."],
  ];
  for (const parts of joins) assertEquals(join(...parts), node.posix.join(...parts), JSON.stringify(parts));
  for (const p of ["/web/models/tiny/model.safetensors.index.json", "/a", "a", "/", "a/b/", "./x/y"]) {
    assertEquals(dirname(p), node.posix.dirname(p), `dirname ${p}`);
    assertEquals(basename(p), node.posix.basename(p), `basename ${p}`);
  }
});
