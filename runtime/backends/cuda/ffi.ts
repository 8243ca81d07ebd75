/**
 * The CUDA driver API through `Deno.dlopen`, typed, in one place: every entry point the `cuda` backend calls, each
 * wrapped so that a `CUresult` other than `CUDA_SUCCESS` throws a {@link CudaError} naming the call and the code's
 * name (from `cuGetErrorName`, or the table below when the driver cannot say). `CUDA_ERROR_OUT_OF_MEMORY` from an
 * allocation is a {@link CudaError} too, with `outOfMemory` set: the backend turns it into the runtime's
 * `OutOfMemoryError` naming the tensor.
 *
 * The library is `libcuda.so.1` (the driver's, installed with it: no CUDA toolkit is needed to run), or the path
 * in `TRAMONTANE_LIBCUDA` (tests load a fake driver built from tests/fake_libcuda.c that way). Handles (contexts,
 * streams, modules, functions, events, pinned host memory) are pointers; device addresses (`CUdeviceptr`) are
 * bigints. CUDA graphs are captured from the stream (`cuStreamBeginCapture`), instantiated and launched whole.
 *
 * @module
 */

/** Where the driver library is looked for (`TRAMONTANE_LIBCUDA` overrides it). */
export const DEFAULT_LIBCUDA = "libcuda.so.1";

/** The driver library to open: `TRAMONTANE_LIBCUDA` when set (and readable), else {@link DEFAULT_LIBCUDA}. */
export function libcudaPath(): string {
  try {
    return Deno.env.get("TRAMONTANE_LIBCUDA") || DEFAULT_LIBCUDA;
  } catch {
    return DEFAULT_LIBCUDA; // no --allow-env: the default library
  }
}

/** `CUresult` codes the backend acts on. */
export const CUDA_SUCCESS = 0;
export const CUDA_ERROR_OUT_OF_MEMORY = 2;
export const CUDA_ERROR_NO_DEVICE = 100;
export const CUDA_ERROR_INVALID_CONTEXT = 201;
export const CUDA_ERROR_NOT_READY = 600;

/**
 * Names of the `CUresult` codes (cuda.h), for when `cuGetErrorName` itself fails (a driver that did not
 * initialise). Codes 700 and up leave the context unusable: the process must restart to use the GPU again.
 */
export const CU_RESULT_NAMES: Readonly<Record<number, string>> = {
  0: "CUDA_SUCCESS",
  1: "CUDA_ERROR_INVALID_VALUE",
  2: "CUDA_ERROR_OUT_OF_MEMORY",
  3: "CUDA_ERROR_NOT_INITIALIZED",
  4: "CUDA_ERROR_DEINITIALIZED",
  34: "CUDA_ERROR_STUB_LIBRARY",
  46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
  100: "CUDA_ERROR_NO_DEVICE",
  101: "CUDA_ERROR_INVALID_DEVICE",
  200: "CUDA_ERROR_INVALID_IMAGE",
  201: "CUDA_ERROR_INVALID_CONTEXT",
  209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
  218: "CUDA_ERROR_INVALID_PTX",
  222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
  400: "CUDA_ERROR_INVALID_HANDLE",
  500: "CUDA_ERROR_NOT_FOUND",
  600: "CUDA_ERROR_NOT_READY",
  700: "CUDA_ERROR_ILLEGAL_ADDRESS",
  701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
  702: "CUDA_ERROR_LAUNCH_TIMEOUT",
  710: "CUDA_ERROR_ASSERT",
  714: "CUDA_ERROR_HARDWARE_STACK_ERROR",
  715: "CUDA_ERROR_ILLEGAL_INSTRUCTION",
  716: "CUDA_ERROR_MISALIGNED_ADDRESS",
  719: "CUDA_ERROR_LAUNCH_FAILED",
  803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
  804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
  999: "CUDA_ERROR_UNKNOWN",
};

/**
 * A driver call failed. `call` is the entry point, `code` the `CUresult` and `codeName` its name. `fatal` marks the
 * errors after which the context is unusable (illegal address, launch failure…: codes 700–799, sticky until the
 * process restarts), which a server answers with 503 as a lost device; `outOfMemory` marks
 * `CUDA_ERROR_OUT_OF_MEMORY`.
 */
export class CudaError extends Error {
  /** The driver entry point that failed (`cuMemAlloc_v2`). */
  readonly call: string;
  /** The `CUresult`. */
  readonly code: number;
  /** Its name (`CUDA_ERROR_OUT_OF_MEMORY`). */
  readonly codeName: string;

  /** `detail` says what was being done. */
  constructor(call: string, code: number, codeName: string, detail?: string) {
    super(`${call} failed: ${codeName} (${code})${detail ? `: ${detail}` : ""}`);
    this.name = "CudaError";
    this.call = call;
    this.code = code;
    this.codeName = codeName;
  }

  /** True for `CUDA_ERROR_OUT_OF_MEMORY`. */
  get outOfMemory(): boolean {
    return this.code === CUDA_ERROR_OUT_OF_MEMORY;
  }

  /** True when the context cannot be used any more (the process must restart to use the GPU). */
  get fatal(): boolean {
    return this.code >= 700 && this.code < 800;
  }
}

/** The driver library could not be opened, or has no device: `reason` says what to install or check. */
export class CudaUnavailableError extends Error {
  /** `reason` is the whole message. */
  constructor(reason: string, options?: ErrorOptions) {
    super(reason, options);
    this.name = "CudaUnavailableError";
  }
}

const P = "pointer" as const, B = "buffer" as const, I = "i32" as const, U = "u32" as const;
const SZ = "usize" as const, DP = "u64" as const;

/** The driver entry points bound (the `_v2` names are the ones cuda.h maps the plain names to). */
export const SYMBOLS = {
  cuInit: { parameters: [U], result: I },
  cuDriverGetVersion: { parameters: [B], result: I },
  cuGetErrorName: { parameters: [I, B], result: I },
  cuDeviceGetCount: { parameters: [B], result: I },
  cuDeviceGet: { parameters: [B, I], result: I },
  cuDeviceGetName: { parameters: [B, I, I], result: I },
  cuDeviceGetAttribute: { parameters: [B, I, I], result: I },
  cuDeviceTotalMem_v2: { parameters: [B, I], result: I },
  cuDevicePrimaryCtxRetain: { parameters: [B, I], result: I },
  cuDevicePrimaryCtxRelease_v2: { parameters: [I], result: I },
  cuCtxSetCurrent: { parameters: [P], result: I },
  cuMemGetInfo_v2: { parameters: [B, B], result: I },
  cuStreamCreate: { parameters: [B, U], result: I },
  // Waits off the main thread: the stream names its context, so no context needs to be current there.
  cuStreamSynchronize: { parameters: [P], result: I, nonblocking: true },
  cuStreamQuery: { parameters: [P], result: I },
  cuStreamDestroy_v2: { parameters: [P], result: I },
  cuMemAlloc_v2: { parameters: [B, SZ], result: I },
  cuMemFree_v2: { parameters: [DP], result: I },
  cuMemAllocHost_v2: { parameters: [B, SZ], result: I },
  cuMemFreeHost: { parameters: [P], result: I },
  cuMemcpyHtoDAsync_v2: { parameters: [DP, P, SZ, P], result: I },
  cuMemcpyDtoHAsync_v2: { parameters: [P, DP, SZ, P], result: I },
  cuMemcpyDtoDAsync_v2: { parameters: [DP, DP, SZ, P], result: I },
  cuMemsetD8Async: { parameters: [DP, "u8", SZ, P], result: I },
  cuModuleLoadData: { parameters: [B, B], result: I },
  cuModuleUnload: { parameters: [P], result: I },
  cuModuleGetFunction: { parameters: [B, P, B], result: I },
  cuLaunchKernel: { parameters: [P, U, U, U, U, U, U, U, P, B, P], result: I },
  cuEventCreate: { parameters: [B, U], result: I },
  cuEventRecord: { parameters: [P, P], result: I },
  cuEventSynchronize: { parameters: [P], result: I },
  cuEventElapsedTime: { parameters: [B, P, P], result: I, optional: true },
  cuEventDestroy_v2: { parameters: [P], result: I },
  // Optional: a driver without them still runs the backend (graphs off, no event timing).
  cuStreamBeginCapture_v2: { parameters: [P, I], result: I, optional: true },
  cuStreamEndCapture: { parameters: [P, B], result: I, optional: true },
  cuGraphInstantiateWithFlags: { parameters: [B, P, "u64"], result: I, optional: true },
  cuGraphLaunch: { parameters: [P, P], result: I, optional: true },
  cuGraphExecDestroy: { parameters: [P], result: I, optional: true },
  cuGraphDestroy: { parameters: [P], result: I, optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** `CU_DEVICE_ATTRIBUTE_*` values the backend reads. */
export const ATTR = {
  maxThreadsPerBlock: 1,
  maxSharedMemoryPerBlock: 8,
  multiprocessorCount: 16,
  computeCapabilityMajor: 75,
  computeCapabilityMinor: 76,
} as const;

/** A launch: the kernel, its grid and block, dynamic shared memory, and its one argument block. */
export type Launch = {
  fn: Deno.PointerValue;
  grid: readonly [number, number, number];
  block: readonly [number, number, number];
  sharedBytes: number;
  /** The kernel's single by-value parameter (every kernel takes one `Args` struct, see kernels/cuda/common.cuh). */
  args: Uint8Array<ArrayBuffer>;
};

/** The bound driver: each method calls one entry point and throws {@link CudaError} on failure. */
export class Driver {
  /** The raw symbols (tests and the backend's error paths). */
  readonly lib: Lib;
  readonly #close: () => void;
  readonly path: string;
  #u64 = new BigUint64Array(1);
  #i32 = new Int32Array(1);
  #ptr = new BigUint64Array(1);
  #kernelParams = new BigUint64Array(1);

  private constructor(path: string, dl: Deno.DynamicLibrary<typeof SYMBOLS>) {
    this.path = path;
    this.lib = dl.symbols;
    this.#close = () => dl.close();
  }

  /**
   * Opens the driver library (`path`, else `TRAMONTANE_LIBCUDA`, else libcuda.so.1). Throws
   * {@link CudaUnavailableError} saying what is missing when it cannot be opened.
   */
  static open(path?: string): Driver {
    const lib = path ?? libcudaPath();
    try {
      return new Driver(lib, Deno.dlopen(lib, SYMBOLS));
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (e instanceof Deno.errors.NotCapable || /permission|--allow-ffi/i.test(why)) {
        throw new CudaUnavailableError(`the cuda backend needs --allow-ffi to load the NVIDIA driver (${why})`);
      }
      throw new CudaUnavailableError(
        `no NVIDIA driver (${lib} not found): ${why}. Install the NVIDIA driver (≥ ${MIN_DRIVER_TEXT}), or set ` +
          `TRAMONTANE_LIBCUDA to the path of libcuda.so.1`,
        { cause: e },
      );
    }
  }

  /** Closes the library (every handle from it must be released first). */
  close(): void {
    this.#close();
  }

  /** True when this driver exports the CUDA graph entry points. */
  get hasGraphs(): boolean {
    const l = this.lib;
    return !!(l.cuStreamBeginCapture_v2 && l.cuStreamEndCapture && l.cuGraphInstantiateWithFlags && l.cuGraphLaunch &&
      l.cuGraphExecDestroy && l.cuGraphDestroy);
  }

  /** An optional entry point, or a CudaError (CUDA_ERROR_NOT_FOUND) naming it when this driver lacks it. */
  #need<F>(f: F | null, name: string): F {
    if (f === null) throw new CudaError(name, 500, "CUDA_ERROR_NOT_FOUND", "this driver does not export it");
    return f;
  }

  /** Throws a {@link CudaError} for `code` (≠ 0) from `call`. */
  check(call: string, code: number, detail?: string): void {
    if (code !== CUDA_SUCCESS) throw new CudaError(call, code, this.errorName(code), detail);
  }

  /** The name of a `CUresult`: `cuGetErrorName`'s, else the built-in table's, else `CUDA_ERROR_<code>`. */
  errorName(code: number): string {
    const out = new BigUint64Array(1);
    try {
      if (this.lib.cuGetErrorName(code, out) === CUDA_SUCCESS && out[0] !== 0n) {
        const name = Deno.UnsafePointerView.getCString(Deno.UnsafePointer.create(out[0])!);
        if (name) return name;
      }
    } catch {
      // fall through to the table
    }
    return CU_RESULT_NAMES[code] ?? `CUDA_ERROR_${code}`;
  }

  init(): void {
    this.check("cuInit", this.lib.cuInit(0));
  }

  driverVersion(): number {
    this.check("cuDriverGetVersion", this.lib.cuDriverGetVersion(this.#i32));
    return this.#i32[0];
  }

  deviceCount(): number {
    this.check("cuDeviceGetCount", this.lib.cuDeviceGetCount(this.#i32));
    return this.#i32[0];
  }

  device(ordinal: number): number {
    this.check("cuDeviceGet", this.lib.cuDeviceGet(this.#i32, ordinal), `device ${ordinal}`);
    return this.#i32[0];
  }

  deviceName(dev: number): string {
    const buf = new Uint8Array(256);
    this.check("cuDeviceGetName", this.lib.cuDeviceGetName(buf, buf.length, dev));
    const end = buf.indexOf(0);
    return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
  }

  attribute(dev: number, attr: number): number {
    this.check("cuDeviceGetAttribute", this.lib.cuDeviceGetAttribute(this.#i32, attr, dev), `attribute ${attr}`);
    return this.#i32[0];
  }

  totalMem(dev: number): number {
    this.check("cuDeviceTotalMem_v2", this.lib.cuDeviceTotalMem_v2(this.#u64, dev));
    return Number(this.#u64[0]);
  }

  /** Retains the device's primary context and makes it current on this thread. */
  primaryContext(dev: number): Deno.PointerValue {
    this.check("cuDevicePrimaryCtxRetain", this.lib.cuDevicePrimaryCtxRetain(this.#ptr, dev));
    const ctx = Deno.UnsafePointer.create(this.#ptr[0]);
    this.check("cuCtxSetCurrent", this.lib.cuCtxSetCurrent(ctx));
    return ctx;
  }

  releasePrimaryContext(dev: number): void {
    this.check("cuDevicePrimaryCtxRelease_v2", this.lib.cuDevicePrimaryCtxRelease_v2(dev));
  }

  /** `{ free, total }` bytes of device memory. */
  memInfo(): { free: number; total: number } {
    const free = new BigUint64Array(1), total = new BigUint64Array(1);
    this.check("cuMemGetInfo_v2", this.lib.cuMemGetInfo_v2(free, total));
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  /** A stream that does not synchronise with the legacy default stream (`CU_STREAM_NON_BLOCKING`). */
  streamCreate(): Deno.PointerValue {
    this.check("cuStreamCreate", this.lib.cuStreamCreate(this.#ptr, 1));
    return Deno.UnsafePointer.create(this.#ptr[0]);
  }

  /** Resolves when the stream's work is done (waiting off the main thread). */
  async streamSynchronize(stream: Deno.PointerValue): Promise<void> {
    let code = await this.lib.cuStreamSynchronize(stream);
    if (code === CUDA_ERROR_INVALID_CONTEXT) {
      // A driver that wants a current context on the waiting thread: poll from this one instead.
      while ((code = this.lib.cuStreamQuery(stream)) === CUDA_ERROR_NOT_READY) {
        await new Promise((r) => setTimeout(r, 0));
      }
    }
    this.check("cuStreamSynchronize", code);
  }

  streamDestroy(stream: Deno.PointerValue): void {
    this.check("cuStreamDestroy_v2", this.lib.cuStreamDestroy_v2(stream));
  }

  /** `bytes` of device memory (its address). */
  memAlloc(bytes: number): bigint {
    this.check("cuMemAlloc_v2", this.lib.cuMemAlloc_v2(this.#u64, BigInt(bytes)), `${bytes} B`);
    return this.#u64[0];
  }

  memFree(ptr: bigint): void {
    this.check("cuMemFree_v2", this.lib.cuMemFree_v2(ptr));
  }

  /** `bytes` of page-locked host memory, as a pointer. */
  memAllocHost(bytes: number): Deno.PointerObject {
    this.check("cuMemAllocHost_v2", this.lib.cuMemAllocHost_v2(this.#ptr, BigInt(bytes)), `${bytes} B pinned`);
    const p = Deno.UnsafePointer.create(this.#ptr[0]);
    if (!p) throw new CudaError("cuMemAllocHost_v2", 999, "CUDA_ERROR_UNKNOWN", "returned a null pointer");
    return p;
  }

  memFreeHost(p: Deno.PointerValue): void {
    this.check("cuMemFreeHost", this.lib.cuMemFreeHost(p));
  }

  memcpyHtoDAsync(dst: bigint, src: Deno.PointerValue, bytes: number, stream: Deno.PointerValue): void {
    this.check("cuMemcpyHtoDAsync_v2", this.lib.cuMemcpyHtoDAsync_v2(dst, src, BigInt(bytes), stream));
  }

  memcpyDtoHAsync(dst: Deno.PointerValue, src: bigint, bytes: number, stream: Deno.PointerValue): void {
    this.check("cuMemcpyDtoHAsync_v2", this.lib.cuMemcpyDtoHAsync_v2(dst, src, BigInt(bytes), stream));
  }

  memcpyDtoDAsync(dst: bigint, src: bigint, bytes: number, stream: Deno.PointerValue): void {
    this.check("cuMemcpyDtoDAsync_v2", this.lib.cuMemcpyDtoDAsync_v2(dst, src, BigInt(bytes), stream));
  }

  memsetD8Async(dst: bigint, value: number, count: number, stream: Deno.PointerValue): void {
    this.check("cuMemsetD8Async", this.lib.cuMemsetD8Async(dst, value, BigInt(count), stream));
  }

  /**
   * Loads a module from a cubin or from PTX text (JIT-compiled by the driver for this device; the text must end
   * with a NUL byte, added here when missing).
   */
  moduleLoadData(data: Uint8Array): Deno.PointerValue {
    const elf = data[0] === 0x7f && data[1] === 0x45 && data[2] === 0x4c && data[3] === 0x46;
    let image = data;
    if (!elf && data[data.length - 1] !== 0) {
      image = new Uint8Array(data.length + 1);
      image.set(data);
    }
    this.check("cuModuleLoadData", this.lib.cuModuleLoadData(this.#ptr, image), "loading the kernels' PTX");
    return Deno.UnsafePointer.create(this.#ptr[0]);
  }

  moduleUnload(module: Deno.PointerValue): void {
    this.check("cuModuleUnload", this.lib.cuModuleUnload(module));
  }

  moduleGetFunction(module: Deno.PointerValue, name: string): Deno.PointerValue {
    const cname = new TextEncoder().encode(name + "\0");
    this.check("cuModuleGetFunction", this.lib.cuModuleGetFunction(this.#ptr, module, cname), `kernel ${name}`);
    return Deno.UnsafePointer.create(this.#ptr[0]);
  }

  /**
   * Queues a kernel on `stream`. Every kernel takes one by-value struct, so `kernelParams` is one pointer, to
   * `l.args` (the driver copies the arguments before returning).
   */
  launch(l: Launch, stream: Deno.PointerValue, name: string): void {
    this.#kernelParams[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(l.args)));
    const [gx, gy, gz] = l.grid, [bx, by, bz] = l.block;
    const code = this.lib.cuLaunchKernel(l.fn, gx, gy, gz, bx, by, bz, l.sharedBytes, stream, this.#kernelParams, null);
    this.check("cuLaunchKernel", code, `kernel ${name} grid ${l.grid} block ${l.block}`);
  }

  eventCreate(flags = 0): Deno.PointerValue {
    this.check("cuEventCreate", this.lib.cuEventCreate(this.#ptr, flags));
    return Deno.UnsafePointer.create(this.#ptr[0]);
  }

  eventRecord(event: Deno.PointerValue, stream: Deno.PointerValue): void {
    this.check("cuEventRecord", this.lib.cuEventRecord(event, stream));
  }

  eventSynchronize(event: Deno.PointerValue): void {
    this.check("cuEventSynchronize", this.lib.cuEventSynchronize(event));
  }

  /** Milliseconds between two recorded events. */
  eventElapsed(start: Deno.PointerValue, end: Deno.PointerValue): number {
    const ms = new Float32Array(1);
    this.check("cuEventElapsedTime", this.#need(this.lib.cuEventElapsedTime, "cuEventElapsedTime")(ms, start, end));
    return ms[0];
  }

  eventDestroy(event: Deno.PointerValue): void {
    this.check("cuEventDestroy_v2", this.lib.cuEventDestroy_v2(event));
  }

  /**
   * Starts capturing the stream's work into a graph (`CU_STREAM_CAPTURE_MODE_RELAXED`: nothing else the backend
   * calls meanwhile is refused, and it calls nothing else).
   */
  beginCapture(stream: Deno.PointerValue): void {
    this.check(
      "cuStreamBeginCapture_v2",
      this.#need(this.lib.cuStreamBeginCapture_v2, "cuStreamBeginCapture_v2")(stream, 2),
    );
  }

  /** Ends the capture: the graph of the work queued since {@link beginCapture}. */
  endCapture(stream: Deno.PointerValue): Deno.PointerValue {
    this.check("cuStreamEndCapture", this.#need(this.lib.cuStreamEndCapture, "cuStreamEndCapture")(stream, this.#ptr));
    return Deno.UnsafePointer.create(this.#ptr[0]);
  }

  graphInstantiate(graph: Deno.PointerValue): Deno.PointerValue {
    const instantiate = this.#need(this.lib.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags");
    this.check("cuGraphInstantiateWithFlags", instantiate(this.#ptr, graph, 0n));
    return Deno.UnsafePointer.create(this.#ptr[0]);
  }

  graphLaunch(exec: Deno.PointerValue, stream: Deno.PointerValue): void {
    this.check("cuGraphLaunch", this.#need(this.lib.cuGraphLaunch, "cuGraphLaunch")(exec, stream));
  }

  graphExecDestroy(exec: Deno.PointerValue): void {
    this.check("cuGraphExecDestroy", this.#need(this.lib.cuGraphExecDestroy, "cuGraphExecDestroy")(exec));
  }

  graphDestroy(graph: Deno.PointerValue): void {
    this.check("cuGraphDestroy", this.#need(this.lib.cuGraphDestroy, "cuGraphDestroy")(graph));
  }
}

/**
 * The oldest driver the committed PTX loads on: nvcc 13.0 writes PTX ISA 9.0, which needs a CUDA 13.0 driver
 * (`cuDriverGetVersion` ≥ 13000; Linux driver 580 or newer).
 */
export const MIN_DRIVER_VERSION = 13000;
const MIN_DRIVER_TEXT = "580, CUDA 13.0";

/** `13000` → `13.0`. */
export function cudaVersionText(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/** Throws {@link CudaUnavailableError} when driver version `v` is older than the PTX needs. */
export function checkDriverVersion(v: number): void {
  if (v < MIN_DRIVER_VERSION) {
    throw new CudaUnavailableError(
      `the NVIDIA driver supports CUDA ${cudaVersionText(v)}, and the cuda backend's kernels (PTX from nvcc 13.0) ` +
        `need CUDA ${cudaVersionText(MIN_DRIVER_VERSION)}: install driver ${MIN_DRIVER_TEXT.split(",")[0]} or newer`,
    );
  }
}
