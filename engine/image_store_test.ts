import { assertEquals } from "../tests/assert.ts";
import { ImageStoreRows } from "./image_store.ts";

Deno.test("image store rows: first fit, merged when given back, −1 when no range is long enough", () => {
  const rows = new ImageStoreRows(10);
  const a = rows.take(4), b = rows.take(3), c = rows.take(3);
  assertEquals([a, b, c, rows.free], [0, 4, 7, 0]);
  assertEquals(rows.take(1), -1);
  rows.give(b, 3);
  assertEquals(rows.take(4), -1); // 3 free, in one range
  rows.give(a, 4); // merges with b's range: [0, 7)
  assertEquals(rows.take(6), 0);
  rows.give(0, 6);
  rows.give(c, 3);
  assertEquals([rows.free, rows.take(10)], [10, 0]);
});
