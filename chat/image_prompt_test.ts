import { assertEquals, assertThrows } from "../tests/assert.ts";
import { expandImagePlaceholders } from "./image_prompt.ts";

Deno.test("expandImagePlaceholders: two images, layouts and [IMG] rows", () => {
  // <s> [INST] [IMG] a [IMG] b
  const r = expandImagePlaceholders([1, 3, 10, 7, 10, 8], [{ index: 2 }, { index: 4 }], [
    { rows: 2, cols: 1 },
    { rows: 1, cols: 2 },
  ]);
  assertEquals(r.ids, [1, 3, 10, 12, 10, 13, 7, 10, 10, 13, 8]);
  assertEquals(r.imageRows, [[2, 4], [7, 8]]);
  assertEquals(expandImagePlaceholders([1, 2], [], []), { ids: [1, 2], imageRows: [] });
  assertThrows(() => expandImagePlaceholders([1, 3], [{ index: 1 }], [{ rows: 1, cols: 1 }]), Error, "placeholder");
});
