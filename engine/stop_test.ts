import { assertEquals } from "../tests/assert.ts";
import { mulberry32 } from "../tests/fixtures.ts";
import { StopMatcher } from "./stop.ts";

type Piece = { kind: string; text: string };
const io = { text: (p: Piece) => p.text, withText: (p: Piece, text: string) => ({ ...p, text }) };
const s = (text: string, kind = "c"): Piece => ({ kind, text });

/** Feeds pieces one push at a time; returns everything emitted and the matched stop. */
function run(stops: string[], pushes: Piece[][]): { out: Piece[]; stopped: string | null } {
  const m = new StopMatcher(stops, io);
  const out: Piece[] = [];
  for (const p of pushes) out.push(...m.push(p));
  if (m.stopped === null) out.push(...m.finish());
  return { out, stopped: m.stopped };
}

Deno.test("stop: a stop string split over pieces cuts before it", () => {
  const { out, stopped } = run(["\n\n"], [[s("Hello\n")], [s("\nWorld")]]);
  assertEquals(out, [s("Hello")]);
  assertEquals(stopped, "\n\n");
});

Deno.test("stop: held text is released when it turns out not to be a stop", () => {
  const m = new StopMatcher(["END"], io);
  assertEquals(m.push([s("abc E")]), [s("abc ")]);
  assertEquals(m.push([s("N")]), []);
  assertEquals(m.push([s("d")]), [s("E"), s("N"), s("d")]);
  assertEquals(m.stopped, null);
  assertEquals(m.push([s("EN")]), []);
  assertEquals(m.finish(), [s("EN")]);
});

Deno.test("stop: the earliest of several stops wins; pieces without text keep their place", () => {
  const { out, stopped } = run(["yz", "x"], [[s("ab"), s("", "marker"), s("cxyz", "r")]]);
  assertEquals(out, [s("ab"), s("", "marker"), s("c", "r")]);
  assertEquals(stopped, "x");
  // A marker after held text waits behind it.
  const m = new StopMatcher(["abc"], io);
  assertEquals(m.push([s("xa"), s("", "marker")]), [s("x")]);
  assertEquals(m.push([s("q")]), [s("a"), s("", "marker"), s("q")]);
});

Deno.test("stop: no stops passes everything through", () => {
  assertEquals(run([], [[s("a"), s("")], [s("b")]]).out, [s("a"), s(""), s("b")]);
});

Deno.test("stop: any split into pieces gives the same text as cutting the whole", () => {
  const random = mulberry32(7);
  const alphabet = "ab\n ";
  for (let trial = 0; trial < 500; trial++) {
    const text = Array.from({ length: 30 }, () => alphabet[Math.floor(random() * alphabet.length)]).join("");
    const stops = Array.from(
      { length: 1 + Math.floor(random() * 3) },
      () => Array.from({ length: 1 + Math.floor(random() * 4) }, () => alphabet[Math.floor(random() * 4)]).join(""),
    );
    const cuts = stops.map((st) => text.indexOf(st)).filter((i) => i >= 0);
    const expected = cuts.length > 0 ? text.slice(0, Math.min(...cuts)) : text;
    const pushes: Piece[][] = [];
    for (let i = 0; i < text.length;) {
      const n = 1 + Math.floor(random() * 4);
      pushes.push([s(text.slice(i, i + n))]);
      i += n;
    }
    const { out } = run(stops, pushes);
    assertEquals(out.map((p) => p.text).join(""), expected, `${JSON.stringify(text)} ${JSON.stringify(stops)}`);
  }
});
