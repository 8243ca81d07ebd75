/**
 * Low-level access to the WASM SIMD CPU kernels (`kernels/wasm/kernels.wasm`, built from `kernels/wasm/*.c`, and
 * its memory64 build `kernels/wasm/kernels64.wasm`).
 *
 * This is the layer the `wasm` backend plugin wraps; it knows nothing about graphs. Pieces:
 *
 * - {@linkcode WasmKernels.load} instantiates the module on a shared `WebAssembly.Memory` (wasm32: max 4 GiB; with
 *   `memory64: true` the wasm64 build, max 16 GiB, V8's limit for one memory) and owns a 64-byte-aligned arena
 *   (`alloc` / `free`) above the module's static data. Pointers are byte offsets (numbers, exact to 2^53, for both
 *   builds: the wasm64 build's i64 pointer arguments are converted to BigInt by wrappers that read each export's
 *   signature from the binary, signatures.ts); `f32(ptr, n)` and friends give typed views (recreated on demand,
 *   since growing the memory replaces its buffer).
 * - `k.exports.<kernel>(…args, r0, r1)` runs a kernel on the calling thread; `ThreadPool.parallelFor`
 *   (threads.ts) splits the last two arguments, a row range, across workers sharing the memory.
 * - {@linkcode warmup} gets the kernels onto V8's optimising tier before timing-sensitive work.
 *
 * Kernel ABI (C signatures in kernels/wasm/*.c; `r0, r1` is always the row range a call works on):
 *
 * | kernel | arguments before r0, r1 | rows |
 * |---|---|---|
 * | `matmul` | x, w, wdt, wscale, wqs, y, M, N, K | N (output features) |
 * | `dequant_rows` | w, wdt, wscale, wqs, ids (0: identity), out, K | output rows (embedding gather) |
 * | `quantize_q8` | src f32 [N,K], q i8 [N,K], qs f32 [N, ceil(K/32)], K | N |
 * | `q8_prefill_int8` (no rows; returns 1 when on) | want: 1 = int8 q8 prefill where the host allows, 0 = f32 | — |
 * | `q8_decode_u8` (no rows; returns 1 when on) | want: 1 = q8 decode products with u8 weights where allowed, 0 = off | — |
 * | `nvfp4_prefill_int8` (no rows) | mode: 1 = NVFP4 prefill on int8 products, 0 = f32 panels, −1 = auto (≤ 64 rows or VNNI) | — |
 * | `q4_int8` (no rows; returns the mode) | want: 1 = q4 matmuls on int8 activations (default), 0 = f32 activations | — |
 * | `q4_act_bytes` (no rows) | K — bytes of one activation row quantised for the q4 decode | — |
 * | `q4_quantize` | x, ldx, K, out (`q4_act_bytes(K)` a row) — int8 activations for `matmul_q4_act`, MoE `qx`/`qact` | rows |
 * | `matmul_q4_act` | xq (from `q4_quantize`), w, wqs, y, M (≤ 8), N, K — `matmul` for q4 on quantised rows | N |
 * | `nvfp4_act_bytes`, `nvfp4_quantize`, `matmul_nvfp4_act` | the same for NVFP4 (wqs: per-row global scales) | — / rows / N |
 * | `q8_act_bytes`, `q8_quantize`, `matmul_q8_act` | the same for q8 (wqs: its block scales) | — / rows / N |
 * | `f32_to_bf16_n`, `bf16_to_f32_n` | src, dst | elements |
 * | `rms_norm` | x, ldx, w (0: none), y, ldy, D, eps | rows |
 * | `softmax` | x, ldx, y, ldy, D, scale | rows |
 * | `add`, `mul` | a, b, y | elements |
 * | `scale_add` | a, s, b (0: none), y — y = a·s (+ b) | elements |
 * | `swiglu` | g, ldg, u, ldu, y, ldy, F — y = silu(g)·u | rows |
 * | `gelu` | x, y (erf form) | elements |
 * | `copy_rows` | src, lds, idx (0: identity), dst, ldd, bytes — strides in bytes | rows |
 * | `rope` | x, ldx, nh, ldh, off, dr, theta, pos, posStride, split, mag, beta, orig | tokens |
 * | `mla_cache_write` | kv, ldkv, cache, cdt, blockTables, maxBlocks, bs, tokSeq, tokPos, width | tokens |
 * | `mla_attention` | params ({@linkcode MLA_PARAMS}) | ceil(T / tb) · ceil(H / hg); split decode: T · splits |
 * | `mla_merge` (split decode) | params | T · H |
 * | `mla_gather`, `mla_prefill` (naive prefill) | params ({@linkcode MLA_PREFILL_PARAMS}) | tile rows; ceil(n / tb) · H |
 * | `moe_route` | logits, E, k, renorm, scale, idx, w (0: ids only) | tokens |
 * | `moe_gate` | logits, E, k, idx, w — renormalised softmax weights of the experts in idx | tokens |
 * | `moe_plan` (no rows; returns nActive) | idx, T, k, E, offsets, order, inv, active | — |
 * | `moe_gate_up`, `moe_down`, `moe_combine` | params ({@linkcode MOE_PARAMS}) | see {@linkcode moeRows} |
 * | `argmax` | logits, V, out | rows |
 * | `sample` | logits, V, temps, topk, topp, u, maskRow (0: none), masks, out, scratch (8·V bytes per row) | rows |
 * | `seg_attention` | q, k, v, out, H, d, dv, scale, items ({q0, q1, k0, k1, h, cost0} each), nItems | cost units |
 * | `patch_merge` | x, C, index, K, out | merged tokens |
 *
 * Weight dtypes ({@linkcode DT}): f32; bf16; f8e4m3 with one f32 scale per tensor (`W = f8 · wscale`) or, when
 * `wqs` is non-zero, one f32 scale per row (`W[n] = f8 · wqs[n]`; MoE: `qg/qu/qd` with strides `qsg/qsu/qsd`);
 * q8 = int8 values `[N, K]` plus f32 scales `[N, ceil(K/32)]` (`W = q · scale` per 32-block along K, `wqs` points
 * at the scales; {@linkcode q8Bytes} gives the sizes); q4 = 16 bytes of split nibbles per 32-block along K
 * (`[N, ceil(K/32), 16]`, weights/codecs.ts `q4RowBytes`) plus f16 scales `[N, ceil(K/32)]` at `wqs` (`W = (u − 8) · scale`,
 * kernels/wasm/gemm_q4.c). Activations are always f32 in memory, accumulation is f32.
 *
 * Numerics: f32/bf16/f8 weights are decoded exactly, so results differ from an f64 reference only by f32
 * accumulation order and FMA (normalised max error ≲ 3e-6 at K ≤ 16k). `matmul` with M ≤ 8 (and K ≤ 16384) is the
 * decode path, which for q8 also quantises each activation row to int8 per 32-block (q = round(x·127/amax)) and
 * multiplies in int8: per output, |Δy| ≤ Σ_blocks (max|x_b| / 254) · Σ_{k∈b} |w_k|. With M > 8 q8 matmuls take
 * the same int8 products where the host's relaxed dot multiplies its second operand as u8 without saturating
 * (x86 with AVX-VNNI; probed on first use, `q8_prefill_int8` reports or turns it off), else they dequantise the
 * weights exactly and multiply f32 activations. q4 matmuls quantise activations the same way at every M (on every
 * host: the 4-bit codes are the 7-bit operand, which every lowering multiplies exactly) unless `q4_int8(0)` turns
 * them to f32 activations (the decode path widens codes to f32; M > 8 dequantises rows). Each output element is computed by one thread with the same code whatever the
 * split, so results are bit-identical for any thread count. For `matmul`, pass `{ align: 8 }` to `parallelFor`.
 *
 * @example
 * ```ts
 * import { DT, WasmKernels } from "./module.ts";
 * const k = await WasmKernels.load();
 * const x = k.alloc(4 * 4), w = k.alloc(4 * 4 * 2), y = k.alloc(4 * 2);
 * k.f32(x, 4).set([1, 2, 3, 4]);
 * k.f32(w, 8).set([1, 0, 0, 0, 0, 1, 0, 0]);
 * k.exports.matmul(x, w, DT.f32, 1, 0, y, 1, 2, 4, 0, 2); // y = [1, 2]
 * ```
 *
 * @module
 */

import { type FuncSig, type ModuleInfo, parseModule } from "./signatures.ts";

/** Weight dtype codes passed to kernels (`wdt`, `cdt`); must match `DT_*` in kernels/wasm/common.h. */
export const DT = { f32: 0, bf16: 1, f8e4m3: 2, q8: 3, nvfp4: 4, q4: 5 } as const;
/** A dtype the WASM kernels take as a weight. */
export type WasmWeightDType = keyof typeof DT;

/** Elements per q8 scale block along K. */
export const Q8_BLOCK = 32;

/** Byte sizes of a q8 matrix [N, K]: int8 values, then f32 scales (offset 64-byte aligned when packed together). */
export function q8Bytes(n: number, k: number): { values: number; scales: number; scalesOffset: number } {
  const values = n * k;
  return { values, scales: n * Math.ceil(k / Q8_BLOCK) * 4, scalesOffset: Math.ceil(values / 64) * 64 };
}

type Fn = (...args: number[]) => number | void;

/** The kernel exports; every argument is a number (pointers are byte offsets, also in the wasm64 build). */
export interface KernelExports {
  matmul: Fn;
  dequant_rows: Fn;
  quantize_q8: Fn;
  q8_prefill_int8: (want: number) => number;
  q8_decode_u8: (want: number) => number;
  nvfp4_prefill_int8: (mode: number) => number;
  q4_int8: (want: number) => number;
  q8_act_bytes: (K: number) => number;
  q8_quantize: Fn;
  matmul_q8_act: Fn;
  q4_act_bytes: (K: number) => number;
  q4_quantize: Fn;
  matmul_q4_act: Fn;
  nvfp4_act_bytes: (K: number) => number;
  nvfp4_quantize: Fn;
  matmul_nvfp4_act: Fn;
  f32_to_bf16_n: Fn;
  bf16_to_f32_n: Fn;
  rms_norm: Fn;
  softmax: Fn;
  add: Fn;
  mul: Fn;
  scale_add: Fn;
  swiglu: Fn;
  gelu: Fn;
  copy_rows: Fn;
  rope: Fn;
  mla_cache_write: Fn;
  mla_attention: Fn;
  mla_merge: Fn;
  mla_gather: Fn;
  mla_prefill: Fn;
  moe_route: Fn;
  moe_gate: Fn;
  moe_plan: (...args: number[]) => number;
  moe_gate_up: Fn;
  moe_down: Fn;
  moe_combine: Fn;
  argmax: Fn;
  sample: Fn;
  seg_attention: Fn;
  patch_merge: Fn;
}

/** Names of the kernels callable through `ThreadPool.parallelFor`. */
export type KernelName = keyof KernelExports;

/**
 * Field order of the `MlaParams` struct (attention.c): `:f` marks f32 fields, `:p` pointers, the rest are i32. The
 * struct has C's natural layout: 4 bytes a field in the wasm32 build (one 4-byte slot each, pointers included),
 * pointers 8 bytes and 8-aligned in the wasm64 build ({@linkcode paramLayout}). Write it with
 * {@linkcode writeParams}, size it with {@linkcode paramsBytes}.
 */
export const MLA_PARAMS = [
  "q:p",
  "wkvb:p",
  "wdt",
  "wscale:f",
  "wqs:p",
  "cache:p",
  "cdt",
  "blockTables:p",
  "maxBlocks",
  "bs",
  "tokSeq:p",
  "tokPos:p",
  "out:p",
  "T",
  "H",
  "dn",
  "dr",
  "dv",
  "kvr",
  "scale:f",
  "hg",
  "tb",
  "splits",
  "part:p",
] as const;

/** Field order of the `MlaPrefillParams` struct (attention_prefill.c); see {@linkcode MLA_PARAMS}. */
export const MLA_PREFILL_PARAMS = [
  "q:p",
  "cache:p",
  "cdt",
  "table:p",
  "bs",
  "ckv:p",
  "kr:p",
  "kv:p",
  "state:p",
  "out:p",
  "n",
  "p0",
  "c0",
  "cl",
  "last",
  "H",
  "dn",
  "dr",
  "dv",
  "kvr",
  "scale:f",
  "tb",
] as const;

/** Field order of the `MoeParams` struct (moe.c); see {@linkcode MLA_PARAMS}. Unused pointers are 0. */
export const MOE_PARAMS = [
  "x:p",
  "offsets:p",
  "order:p",
  "inv:p",
  "active:p",
  "nActive",
  "wg:p",
  "wu:p",
  "wd:p",
  "wdt",
  "sg",
  "su",
  "sd",
  "fsg:p",
  "fsu:p",
  "fsd:p",
  "qg:p",
  "qu:p",
  "qd:p",
  "qsg",
  "qsu",
  "qsd",
  "act:p",
  "up:p",
  "ys:p",
  "w:p",
  "addend:p",
  "out:p",
  "T",
  "D",
  "F",
  "k",
  "chunk",
  "qx:p",
  "qact:p",
] as const;

/** Row counts of the three MoE phases for `ThreadPool.parallelFor`. */
export function moeRows(
  p: { nActive: number; F: number; D: number; T: number; chunk: number },
): { gateUp: number; down: number; combine: number } {
  return {
    gateUp: p.nActive * Math.ceil(p.F / p.chunk),
    down: p.nActive * Math.ceil(p.D / p.chunk),
    combine: p.T,
  };
}

const PAGE = 65536;
/** The most a wasm32 memory holds: 4 GiB. */
export const MAX_BYTES_32 = 2 ** 32;
/** The most V8 lets one memory64 `WebAssembly.Memory` hold: 16 GiB (a larger maximum is refused). */
export const MAX_BYTES_64 = 2 ** 34;

/** Options for {@linkcode WasmKernels.load}. */
export interface LoadOptions {
  /** Bytes to reserve up front for the arena (the memory grows on demand anyway). */
  initialBytes?: number;
  /**
   * Upper bound of the memory in bytes. wasm32: default and maximum 4 GiB (larger values are clamped); memory64:
   * default and maximum 16 GiB ({@linkcode MAX_BYTES_64}; larger values throw).
   */
  maxBytes?: number;
  /** Load the wasm64 build (`kernels64.wasm`, 64-bit addresses: up to 16 GiB in one memory). Default false. */
  memory64?: boolean;
  /**
   * The arena starts at this byte offset (or above the static data, whichever is higher), leaving the memory below
   * unused: tests place every buffer above 4 GiB this way. Pages never touched cost no RSS.
   */
  reserveBelow?: number;
  /** Module bytes to use instead of reading the committed kernels.wasm / kernels64.wasm (its build must match). */
  wasm?: Uint8Array;
}

/** The kernels module instantiated on a shared memory, with an arena allocator and typed views. */
export class WasmKernels {
  /** The compiled module (workers instantiate the same one). */
  readonly module: WebAssembly.Module;
  /** The shared linear memory every thread works in. */
  readonly memory: WebAssembly.Memory;
  /** Kernel functions of the main-thread instance (numbers in, numbers out, for both builds). */
  readonly exports: KernelExports;
  /** Whether this is the wasm64 build (i64 addresses, memory64). */
  readonly memory64: boolean;
  /** Bytes of a pointer in the kernels' structs: 4 (wasm32) or 8 (wasm64). */
  readonly pointerBytes: 4 | 8;
  /** Signatures of the module's exported functions (from the binary). */
  readonly signatures: ReadonlyMap<string, FuncSig>;
  /** First byte above the module's static data and main stack. */
  readonly heapBase: number;
  /** The arena's first byte: `heapBase`, or `reserveBelow` when that is higher (64-aligned). */
  readonly arenaBase: number;
  #maxPages: number;
  #top: number;
  #free: { ptr: number; size: number }[] = [];
  #sizes = new Map<number, number>();

  private constructor(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    instance: WebAssembly.Instance,
    info: ModuleInfo,
    maxPages: number,
    reserveBelow: number,
  ) {
    this.module = module;
    this.memory = memory;
    this.memory64 = info.memory?.memory64 ?? false;
    this.pointerBytes = this.memory64 ? 8 : 4;
    this.signatures = info.exports;
    const ex = instance.exports as Record<string, unknown>;
    this.exports = wrapExports(ex, info.exports) as unknown as KernelExports;
    this.heapBase = Number((ex.__heap_base as WebAssembly.Global).value);
    this.arenaBase = align(Math.max(this.heapBase, reserveBelow), 64);
    this.#top = this.arenaBase;
    this.#maxPages = maxPages;
  }

  /** Compiles and instantiates the kernels on a fresh shared memory. */
  static async load(opts: LoadOptions = {}): Promise<WasmKernels> {
    const file = opts.memory64 ? "kernels64.wasm" : "kernels.wasm";
    const bytes = opts.wasm ?? await readWasm(wasmAssetUrl(file));
    const info = parseModule(bytes);
    const m64 = info.memory?.memory64 ?? false;
    if (opts.memory64 !== undefined && opts.memory64 !== m64) {
      throw new Error(
        `WasmKernels.load: memory64 is ${opts.memory64} but the given module is ${m64 ? "wasm64" : "wasm32"}`,
      );
    }
    const limit = m64 ? MAX_BYTES_64 : MAX_BYTES_32;
    if (m64 && (opts.maxBytes ?? 0) > limit) {
      throw new RangeError(
        `WasmKernels.load: maxBytes ${opts.maxBytes} is above 16 GiB (${limit} bytes), the most V8 allows one ` +
          `memory64 WebAssembly.Memory`,
      );
    }
    const module = await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
    const maxPages = Math.min(
      limit / PAGE,
      info.memory?.maxPages ?? Infinity,
      Math.floor((opts.maxBytes ?? limit) / PAGE),
    );
    const reserveBelow = opts.reserveBelow ?? 0;
    if (reserveBelow < 0 || reserveBelow >= maxPages * PAGE) {
      throw new RangeError(
        `WasmKernels.load: reserveBelow ${reserveBelow} is outside the memory (${maxPages * PAGE} bytes)`,
      );
    }
    // 4 MiB covers the 2 MiB main stack and static data; the rest grows on demand.
    const initial = Math.min(maxPages, Math.ceil((4 * 2 ** 20 + (opts.initialBytes ?? 0)) / PAGE));
    const desc = m64
      ? { address: "i64", initial: BigInt(initial), maximum: BigInt(maxPages), shared: true }
      : { initial, maximum: maxPages, shared: true };
    const memory = new WebAssembly.Memory(desc as WebAssembly.MemoryDescriptor);
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    return new WasmKernels(module, memory, instance, info, maxPages, reserveBelow);
  }

  /** Bytes currently backed by the memory. */
  get byteLength(): number {
    return this.memory.buffer.byteLength;
  }

  /** Upper bound of the memory in bytes (`maxBytes`, clamped to the build's limit). */
  get maxBytes(): number {
    return this.#maxPages * PAGE;
  }

  /** Allocates `bytes` (rounded up to 64) at a 64-byte-aligned offset, growing the memory when needed. */
  alloc(bytes: number): number {
    const size = Math.max(64, align(bytes, 64));
    for (let i = 0; i < this.#free.length; i++) {
      const f = this.#free[i];
      if (f.size < size) continue;
      const ptr = f.ptr;
      if (f.size === size) this.#free.splice(i, 1);
      else {
        f.ptr += size;
        f.size -= size;
      }
      this.#sizes.set(ptr, size);
      return ptr;
    }
    const ptr = this.#top;
    const end = ptr + size;
    if (end > this.#maxPages * PAGE) {
      throw new RangeError(`wasm memory exhausted: ${end} bytes needed, limit ${this.#maxPages * PAGE}`);
    }
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      (this.memory.grow as (n: number | bigint) => unknown)(this.memory64 ? BigInt(pages) : pages);
    }
    this.#top = end;
    this.#sizes.set(ptr, size);
    return ptr;
  }

  /** Returns a block from {@linkcode alloc} to the arena (coalescing neighbours). */
  free(ptr: number): void {
    const size = this.#sizes.get(ptr);
    if (size === undefined) throw new Error(`free of unknown pointer ${ptr}`);
    this.#sizes.delete(ptr);
    const list = this.#free;
    let i = 0;
    while (i < list.length && list[i].ptr < ptr) i++;
    list.splice(i, 0, { ptr, size });
    if (i + 1 < list.length && ptr + size === list[i + 1].ptr) {
      list[i].size += list[i + 1].size;
      list.splice(i + 1, 1);
    }
    if (i > 0 && list[i - 1].ptr + list[i - 1].size === ptr) {
      list[i - 1].size += list[i].size;
      list.splice(i, 1);
      i--;
    }
    // A free block that ends at the bump pointer goes back to it.
    if (list[i].ptr + list[i].size === this.#top) {
      this.#top = list[i].ptr;
      list.splice(i, 1);
    }
  }

  /** Bytes handed out and not freed (for leak checks in tests). */
  get allocatedBytes(): number {
    let s = 0;
    for (const v of this.#sizes.values()) s += v;
    return s;
  }

  /** Float32 view of `n` elements at byte offset `ptr`. */
  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }
  /** Int32 view. */
  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }
  /** Uint16 view (bf16 bits). */
  u16(ptr: number, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, ptr, n);
  }
  /** Uint8 view (f8 bits). */
  u8(ptr: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, n);
  }
  /** Int8 view (q8 values). */
  i8(ptr: number, n: number): Int8Array {
    return new Int8Array(this.memory.buffer, ptr, n);
  }

  /** Copies `data` into a fresh allocation and returns its pointer. */
  upload(data: ArrayBufferView): number {
    const ptr = this.alloc(data.byteLength);
    this.u8(ptr, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return ptr;
  }
}

/**
 * Runs the hot kernels on small inputs for about `ms` milliseconds. V8 first runs wasm with its baseline compiler
 * and swaps in optimised code in the background once a function is hot; until then kernels run several times
 * slower. Compiled code belongs to the module, so workers started from it benefit too.
 */
export function warmup(k: WasmKernels, ms = 300): void {
  const K = 256, N = 64, M = 16;
  const x = k.alloc(M * K * 4), y = k.alloc(M * N * 4), w = k.alloc(N * K * 4), qs = k.alloc(N * (K / 32) * 4);
  const fx = k.f32(x, M * K), fw = k.f32(w, N * K);
  for (let i = 0; i < fx.length; i++) fx[i] = Math.sin(i);
  for (let i = 0; i < fw.length; i++) fw[i] = Math.cos(i) * 0.1;
  k.f32(qs, N * (K / 32)).fill(0.01);
  const e = k.exports, end = performance.now() + ms;
  try {
    while (performance.now() < end) {
      for (const dt of [DT.f32, DT.bf16, DT.f8e4m3, DT.q8, DT.nvfp4, DT.q4]) {
        for (const m of [1, 2, 3, 5, M]) e.matmul(x, w, dt, 1, qs, y, m, N, K, 0, N);
      }
      e.rms_norm(x, K, w, x, K, K, 1e-6, 0, M);
      e.softmax(x, K, y, K, K, 1, 0, 1);
      e.swiglu(x, K, x + 512, K, y, K, 128, 0, 2);
      e.gelu(x, y, 0, 512);
    }
  } finally {
    for (const p of [x, y, w, qs]) k.free(p);
  }
}

/**
 * Byte offsets of a params struct's fields (`layout` as {@linkcode MLA_PARAMS}) and its size, in C's natural
 * layout for the given pointer size: i32 and f32 fields take 4 bytes, pointers (`:p`) 4 or 8, each aligned to its
 * size; the size is rounded up to the largest alignment. With 4-byte pointers every field is one 4-byte slot.
 */
export function paramLayout(layout: readonly string[], pointerBytes: 4 | 8): { offsets: number[]; bytes: number } {
  const offsets: number[] = [];
  let at = 0, maxAlign = 4;
  for (const field of layout) {
    const size = field.endsWith(":p") ? pointerBytes : 4;
    at = align(at, size);
    offsets.push(at);
    at += size;
    maxAlign = Math.max(maxAlign, size);
  }
  return { offsets, bytes: align(at, maxAlign) };
}

/** Bytes of a params struct (`layout` as {@linkcode MLA_PARAMS}) for this module's build. */
export function paramsBytes(k: WasmKernels, layout: readonly string[]): number {
  return paramLayout(layout, k.pointerBytes).bytes;
}

/** Byte offset of field `name` (without its `:` suffix) of a params struct for this module's build. */
export function paramOffset(k: WasmKernels, layout: readonly string[], name: string): number {
  const i = layout.findIndex((f) => f.split(":")[0] === name);
  if (i < 0) throw new Error(`no field ${name} in the params layout`);
  return paramLayout(layout, k.pointerBytes).offsets[i];
}

const layoutCache = new WeakMap<readonly string[], { offsets: number[]; bytes: number }[]>();

/**
 * Writes a params struct (fields in `layout` order, laid out by {@linkcode paramLayout} for this module's build;
 * `name:f` fields as f32, `name:p` as pointers, the rest as i32) at `ptr`. Missing fields are 0.
 */
export function writeParams(
  k: WasmKernels,
  ptr: number,
  layout: readonly string[],
  values: Record<string, number>,
): void {
  let cached = layoutCache.get(layout);
  if (!cached) layoutCache.set(layout, cached = []);
  const { offsets, bytes } = cached[k.pointerBytes] ??= paramLayout(layout, k.pointerBytes);
  const view = new DataView(k.memory.buffer, ptr, bytes);
  for (let i = 0; i < layout.length; i++) {
    const field = layout[i], colon = field.indexOf(":");
    const name = colon < 0 ? field : field.slice(0, colon), kind = colon < 0 ? "" : field.slice(colon + 1);
    const v = values[name] ?? 0, at = offsets[i];
    if (kind === "f") view.setFloat32(at, v, true);
    else if (kind === "p" && k.pointerBytes === 8) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`params field ${name}: ${v} is no pointer`);
      view.setUint32(at, v % 2 ** 32, true);
      view.setUint32(at + 4, Math.floor(v / 2 ** 32), true);
    } else view.setInt32(at, v | 0, true);
  }
}

/**
 * Wraps the exports whose signatures have i64 parameters or results (the wasm64 build's pointers): numbers in are
 * converted to BigInt, an i64 result back to a number. Other exports are returned as they are.
 */
export function wrapExports(
  ex: Record<string, unknown>,
  sigs: ReadonlyMap<string, FuncSig>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(ex)) {
    const sig = sigs.get(name);
    out[name] = typeof v === "function" && sig ? wrapI64(name, v as (...a: unknown[]) => unknown, sig) : v;
  }
  return out;
}

/** Positions of the i64 parameters of a signature. */
export function i64Params(sig: FuncSig): number[] {
  const at: number[] = [];
  sig.params.forEach((t, i) => t === "i64" && at.push(i));
  return at;
}

function wrapI64(name: string, fn: (...a: unknown[]) => unknown, sig: FuncSig): (...a: number[]) => unknown {
  const at = i64Params(sig), big = sig.results.length === 1 && sig.results[0] === "i64";
  if (at.length === 0 && !big) return fn as (...a: number[]) => unknown;
  const wrapped = (...a: unknown[]) => {
    for (const i of at) a[i] = BigInt(a[i] as number);
    const r = fn(...a);
    return big ? Number(r) : r;
  };
  Object.defineProperty(wrapped, "name", { value: name });
  return wrapped;
}

/**
 * Where a bundle for the browser serves the kernels (`kernels.wasm`, `kernels64.wasm`) and the kernel worker's
 * script: a bundle's `import.meta.url` is the bundle's own, so the paths beside these sources do not hold there.
 */
export interface WasmAssets {
  /** The folder holding `kernels.wasm` and `kernels64.wasm`. */
  kernelsBase?: URL;
  /** The bundled kernel worker (threads.ts starts one per extra thread). */
  workerUrl?: URL;
}

const assets: WasmAssets = {};

/**
 * Points the wasm backend at its assets in a browser bundle (web/local/worker.ts does, before loading a model);
 * unset, they are read from beside these sources (the default under Deno, and when imported by URL).
 *
 * @example
 * ```ts ignore
 * setWasmAssets({ kernelsBase: new URL("./", import.meta.url), workerUrl: new URL("./wasm_worker.js", import.meta.url) });
 * ```
 */
export function setWasmAssets(next: WasmAssets): void {
  Object.assign(assets, next);
}

/** The URL of a kernels file: the configured folder, else `kernels/wasm/` of this checkout. */
function wasmAssetUrl(file: string): URL {
  return new URL(assets.kernelsBase ? file : `../../../kernels/wasm/${file}`, assets.kernelsBase ?? import.meta.url);
}

/** The kernel worker's script: the configured bundle, else `worker.ts` beside these sources. */
export function wasmWorkerUrl(): URL {
  return assets.workerUrl ?? new URL("./worker.ts", import.meta.url);
}

/** Reads the module from disk, or fetches it when this file was imported over http(s) (e.g. from JSR) or bundled. */
async function readWasm(url: URL): Promise<Uint8Array> {
  if (url.protocol === "file:" && typeof Deno !== "undefined") return await Deno.readFile(url);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot load ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * Which q8 paths this host's relaxed SIMD allows (the kernels probe it on a small instance): int8 products for q8
 * matmuls of more than 8 rows (x86 with AVX-VNNI), and q8 decode products with the weight as the u8 operand.
 *
 * @example
 * ```ts
 * const { int8Prefill } = await probeQ8Paths(); // true on AVX-VNNI hosts
 * ```
 */
export async function probeQ8Paths(): Promise<{ int8Prefill: boolean; u8Decode: boolean }> {
  const k = await WasmKernels.load({ maxBytes: 64 * 2 ** 20 });
  return { int8Prefill: k.exports.q8_prefill_int8(1) === 1, u8Decode: k.exports.q8_decode_u8(1) === 1 };
}
