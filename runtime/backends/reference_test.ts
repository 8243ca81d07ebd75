import { assertEquals, assertRejects, assertThrows } from "../../tests/assert.ts";
import { GraphBuilder } from "../../graph/builder.ts";
import { sym } from "../../graph/ir.ts";
import { add } from "../../ops/add.ts";
import { mul } from "../../ops/mul.ts";
import { makeSegment } from "../backend.ts";
import { referenceBackend } from "./reference.ts";

Deno.test("reference backend: memory round-trips and bounds are checked", async () => {
  assertEquals(await referenceBackend.probe(), 1);
  const be = await referenceBackend.create();
  const buf = be.alloc(16);
  be.write({ buffer: buf, offset: 4 }, new Float32Array([1.5, -2]));
  assertEquals(Array.from(new Float32Array((await be.read({ buffer: buf, offset: 0 }, 16)).buffer)), [0, 1.5, -2, 0]);
  assertThrows(() => be.write({ buffer: buf, offset: 12 }, new Float32Array(2)), RangeError);
  await assertRejects(() => be.read({ buffer: buf, offset: 8 }, 16), RangeError);
  be.free(buf);
  assertThrows(() => be.write({ buffer: buf, offset: 0 }, new Uint8Array(1)), Error, "not a live");
  be.dispose();
});

Deno.test("reference backend: runs a segment at offsets in a shared buffer; intermediates stay internal", async () => {
  const g = new GraphBuilder();
  const T = sym("T", 4);
  const a = g.input("a", [T, 2], "f32"), b = g.input("b", [T, 2], "f32");
  const s = add(g, a, b); // 2: not bound → scratch
  g.output("p", mul(g, s, b)); // 3
  const graph = g.build();
  const be = await referenceBackend.create();
  const arena = be.alloc(256);
  be.write({ buffer: arena, offset: 0 }, new Float32Array([1, 2, 3, 4]));
  be.write({ buffer: arena, offset: 64 }, new Float32Array([10, 20, 30, 40]));
  const prepared = await be.prepare(makeSegment(graph, [2, 3]));
  const bind = new Map([[0, { buffer: arena, offset: 0 }], [1, { buffer: arena, offset: 64 }], [3, {
    buffer: arena,
    offset: 128,
  }]]);
  be.run(prepared, bind, { T: 2 }, new Map());
  await be.sync();
  assertEquals(Array.from(new Float32Array((await be.read({ buffer: arena, offset: 128 }, 16)).buffer)), [
    110,
    440,
    990,
    1760,
  ]);
  assertThrows(() => be.run(prepared, bind, { T: 5 }, new Map()), Error, "outside 0..4");
  assertThrows(() => be.run(prepared, new Map([[0, bind.get(0)!]]), { T: 2 }, new Map()), Error, "not bound");
  be.dispose();
});
