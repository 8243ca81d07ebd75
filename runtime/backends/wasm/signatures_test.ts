// The binary signature parser on both kernel builds, checked against the C prototypes of the EXPORT-ed functions in
// kernels/wasm/*.c: every export is found, the wasm32 build takes i32/f32 only, and the wasm64 build takes i64
// exactly where the C parameter is a pointer.

import { exportSignatures, parseModule, type ValType } from "./signatures.ts";
import { wrapExports } from "./module.ts";
import { assert } from "../../../tests/assert.ts";

const dir = new URL("../../../kernels/wasm/", import.meta.url);

/** name → C parameter kinds ("ptr" | "float" | "int") and whether it returns a value, from the EXPORT lines. */
async function cPrototypes(): Promise<Map<string, { params: string[]; returns: boolean }>> {
  const out = new Map<string, { params: string[]; returns: boolean }>();
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".c")) continue;
    const src = await Deno.readTextFile(new URL(e.name, dir));
    for (const m of src.matchAll(/EXPORT\((\w+)\)\s*\n\s*(\w+)\s+(\w+)\s*\(([^)]*)\)/g)) {
      const [, name, ret, fn, list] = m;
      assert(name === fn, `EXPORT(${name}) names function ${fn}`);
      const params = list.split(",").map((p) => p.includes("*") ? "ptr" : /\bfloat\b/.test(p) ? "float" : "int");
      out.set(name, { params, returns: ret !== "void" });
    }
  }
  return out;
}

Deno.test("exportSignatures: every export of both builds; i64 exactly at the C pointer parameters in wasm64", async () => {
  const protos = await cPrototypes();
  assert(protos.size >= 30, `C exports found: ${protos.size}`);
  for (const [file, m64] of [["kernels.wasm", false], ["kernels64.wasm", true]] as const) {
    const bytes = await Deno.readFile(new URL(file, dir));
    const sigs = exportSignatures(bytes);
    const fns = WebAssembly.Module.exports(new WebAssembly.Module(bytes)).filter((e) => e.kind === "function");
    assert(sigs.size === fns.length && fns.every((f) => sigs.has(f.name)), `${file}: every function export`);
    assert(sigs.size === protos.size, `${file}: ${sigs.size} exports, ${protos.size} in the C sources`);
    for (const [name, c] of protos) {
      const sig = sigs.get(name);
      assert(sig !== undefined, `${file}: ${name} missing`);
      const want: ValType[] = c.params.map((p) => p === "float" ? "f32" : p === "ptr" && m64 ? "i64" : "i32");
      assert(sig.params.join() === want.join(), `${file} ${name}: ${sig.params} vs C ${c.params}`);
      assert(sig.results.join() === (c.returns ? "i32" : ""), `${file} ${name}: results ${sig.results}`);
    }
    const mem = parseModule(bytes).memory;
    assert(mem !== undefined && mem.memory64 === m64 && mem.shared, `${file}: imported shared memory, memory64`);
    assert(mem.maxPages === (m64 ? 2 ** 18 : 2 ** 16), `${file}: max ${mem.maxPages} pages`);
  }
});

Deno.test("exportSignatures: a hand-made module (imported function shifts indices, i64 result); malformed input", () => {
  // (import "m" "f" (func (param i32))) (func (param i64 f64) (result i64) local.get 0) (export "g" (func 1))
  const bytes = Uint8Array.from(
    [
      "0061736d 01000000", // magic, version
      "010b 02 60017f00 60027e7c017e", // types: (i32) → (), (i64, f64) → i64
      "0207 01 016d 0166 0000", // import m.f: function of type 0
      "0302 01 01", // function 1: type 1
      "0705 01 0167 0001", // export "g" = function 1
      "0a06 01 04 00 2000 0b", // code: local.get 0
    ].join("").replace(/\s/g, "").match(/../g)!,
    (h) => parseInt(h, 16),
  );
  const sigs = exportSignatures(bytes);
  assert(sigs.size === 1 && sigs.get("g")!.params.join() === "i64,f64" && sigs.get("g")!.results.join() === "i64", "g");
  const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { f: () => {} } });
  const g = wrapExports(inst.exports as Record<string, unknown>, sigs).g as (a: number, b: number) => unknown;
  const r = g(2 ** 40 + 3, 0.5);
  assert(r === 2 ** 40 + 3, `i64 in as BigInt, out as a number: ${String(r)}`);
  for (const bad of [bytes.subarray(0, 20), new Uint8Array(8)]) {
    let threw = false;
    try {
      exportSignatures(bad);
    } catch {
      threw = true;
    }
    assert(threw, "malformed binaries throw");
  }
});
