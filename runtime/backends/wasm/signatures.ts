/**
 * Function signatures of a WebAssembly module's exports, read from the binary (type, import, function and export
 * sections). The JS API does not expose them, and the memory64 build of the kernels takes pointers as i64, which JS
 * must pass as BigInt: module.ts and the worker use {@linkcode exportSignatures} to convert exactly those arguments.
 *
 * @example
 * ```ts
 * import { exportSignatures } from "./signatures.ts";
 * const sigs = exportSignatures(await Deno.readFile("kernels/wasm/kernels64.wasm"));
 * sigs.get("add"); // { params: ["i64", "i64", "i64", "i32", "i32"], results: [] }
 * ```
 *
 * @module
 */

/** A value type of a function parameter or result. */
export type ValType = "i32" | "i64" | "f32" | "f64" | "v128" | "funcref" | "externref";

/** Parameter and result types of one function. */
export interface FuncSig {
  params: ValType[];
  results: ValType[];
}

const VALTYPES: Record<number, ValType> = {
  0x7f: "i32",
  0x7e: "i64",
  0x7d: "f32",
  0x7c: "f64",
  0x7b: "v128",
  0x70: "funcref",
  0x6f: "externref",
};

/** The memory a module imports: address type (memory64 or not), sharing, and its limits in 64 KiB pages. */
export interface ImportedMemory {
  memory64: boolean;
  shared: boolean;
  minPages: number;
  maxPages?: number;
}

/** What {@linkcode parseModule} reads from a binary. */
export interface ModuleInfo {
  /** Signatures of the exported functions, by export name. */
  exports: Map<string, FuncSig>;
  /** The first imported memory, if any. */
  memory?: ImportedMemory;
}

/** Signatures of the exported functions, by export name. Throws on a malformed binary or an unsupported type. */
export function exportSignatures(bytes: Uint8Array): Map<string, FuncSig> {
  return parseModule(bytes).exports;
}

/** Reads the exported functions' signatures and the imported memory. Throws on a malformed binary. */
export function parseModule(bytes: Uint8Array): ModuleInfo {
  let pos = 0;
  const fail = (what: string): never => {
    throw new Error(`wasm binary: ${what} at byte ${pos}`);
  };
  const byte = () => (pos < bytes.length ? bytes[pos++] : fail("unexpected end"));
  const uleb = () => {
    // u32 values (counts, indices, lengths): at most 5 bytes.
    let v = 0, shift = 0, b;
    do {
      b = byte();
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80 && shift < 35);
    if (b & 0x80) fail("LEB128 too long");
    return v;
  };
  const u64 = () => {
    // Memory limits: u64 for memory64 (exact as a number up to 2^53, far above any page count).
    let v = 0, scale = 1, b;
    do {
      b = byte();
      v += (b & 0x7f) * scale;
      scale *= 128;
    } while (b & 0x80);
    return v;
  };
  const name = () => {
    const n = uleb();
    if (pos + n > bytes.length) fail("name past the end");
    pos += n;
    return new TextDecoder().decode(bytes.subarray(pos - n, pos));
  };
  const valType = () => VALTYPES[byte()] ?? fail(`unsupported value type 0x${bytes[pos - 1].toString(16)}`);
  const vec = <T>(item: () => T): T[] => Array.from({ length: uleb() }, item);
  const limits = (): ImportedMemory => {
    const flags = byte(); // bit 0: has max; bit 1: shared; bit 2: 64-bit addresses
    const minPages = u64(), maxPages = flags & 1 ? u64() : undefined;
    return { memory64: (flags & 4) !== 0, shared: (flags & 2) !== 0, minPages, maxPages };
  };

  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    fail("no wasm magic");
  }
  pos = 8;
  const types: FuncSig[] = [], funcTypes: number[] = []; // funcTypes: type index per function index
  const exports: [string, number][] = [];
  let memory: ImportedMemory | undefined;
  while (pos < bytes.length) {
    const id = byte(), size = uleb(), end = pos + size;
    if (end > bytes.length) fail(`section ${id} past the end`);
    if (id === 1) {
      vec(() => {
        if (byte() !== 0x60) fail("only plain function types are supported");
        types.push({ params: vec(valType), results: vec(valType) });
      });
    } else if (id === 2) {
      vec(() => {
        name();
        name();
        const kind = byte();
        if (kind === 0) funcTypes.push(uleb());
        else if (kind === 1) valType(), limits();
        else if (kind === 2) memory ??= limits();
        else if (kind === 3) valType(), byte();
        else if (kind === 4) byte(), uleb();
        else fail(`unknown import kind ${kind}`);
      });
    } else if (id === 3) {
      funcTypes.push(...vec(uleb));
    } else if (id === 7) {
      vec(() => {
        const n = name(), kind = byte(), index = uleb();
        if (kind === 0) exports.push([n, index]);
      });
    }
    if ((id === 1 || id === 2 || id === 3 || id === 7) && pos !== end) fail(`section ${id} size mismatch`);
    pos = end;
  }
  const out = new Map<string, FuncSig>();
  for (const [n, f] of exports) {
    const t = types[funcTypes[f] ?? fail(`export ${n}: no function ${f}`)] ?? fail(`export ${n}: no type`);
    out.set(n, t);
  }
  return { exports: out, memory };
}
