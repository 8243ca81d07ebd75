/**
 * The fake CUDA driver of the cuda backend's host-code tests: tests/fake_libcuda.c built by clang-19 into a
 * temporary shared library (once per process; optionally with the kernels built for the CPU), loaded through
 * `TRAMONTANE_LIBCUDA` or the factory's `libcuda` option, and its call log read back as records.
 *
 * @module
 */

/** One logged driver call: the entry point and its `key=value` arguments. */
export type FakeCall = { call: string; args: Record<string, string> };

const built = new Map<string, Promise<string | undefined>>();

/**
 * Builds the fake driver (cached); undefined with a printed line when clang-19 is missing. With `kernels`, the
 * cuda backend's kernels are built into it for the CPU (tests/cuda_host_shim.cpp), and `FAKE_CUDA_RUN=1` makes its
 * cuLaunchKernel run them; with `noGraphs`, it exports no CUDA graph entry points (an older driver).
 */
export function fakeLibcuda(o: { kernels?: boolean; noGraphs?: boolean } = {}): Promise<string | undefined> {
  const kernels = o.kernels ?? false, noGraphs = o.noGraphs ?? false, key = `${kernels}/${noGraphs}`;
  let p = built.get(key);
  if (!p) built.set(key, p = build(kernels, noGraphs));
  return p;
}

async function build(kernels: boolean, noGraphs: boolean): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_fake_cuda_" });
  removeAtExit(dir);
  const out = `${dir}/libcuda.so.1`;
  const path = (f: string) => new URL(f, import.meta.url).pathname;
  const cc = async (args: string[]) => {
    const r = await new Deno.Command("clang-19", { args, stderr: "piped" }).output();
    if (!r.success) throw new Error(`clang-19 ${args.join(" ")}:\n${new TextDecoder().decode(r.stderr)}`);
  };
  const flags = [
    "-fPIC",
    "-O1",
    "-ffp-contract=off",
    "-Wall",
    "-Wextra",
    "-Werror",
    ...(noGraphs ? ["-DFAKE_NO_GRAPHS"] : []),
  ];
  try {
    if (!kernels) {
      await cc(["-shared", ...flags, "-o", out, path("./fake_libcuda.c")]);
      return out;
    }
    const cxx = [...flags, "-std=c++17", "-x", "c++", "-DTRAMONTANE_SHIM"];
    await Promise.all([
      cc(["-c", ...flags, "-o", `${dir}/fake.o`, path("./fake_libcuda.c")]),
      cc([
        "-c",
        ...cxx,
        "-include",
        path("./cuda_host_shim.h"),
        "-o",
        `${dir}/kernels.o`,
        path("../kernels/cuda/kernels.cu"),
      ]),
      cc(["-c", ...cxx, "-o", `${dir}/shim.o`, path("./cuda_host_shim.cpp")]),
    ]);
    await cc(["-shared", "-o", out, `${dir}/fake.o`, `${dir}/kernels.o`, `${dir}/shim.o`, "-ldl"]);
    return out;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      console.log("cuda fake-driver tests skipped: clang-19 is not installed (apt-get install clang-19)");
      return undefined;
    }
    throw e;
  }
}

/** Settings of the fake for one test (environment variables it reads at each call), and a fresh log file. */
export async function withFake<T>(
  env: { fail?: string; devices?: number; version?: number; cc?: string; mem?: number; run?: boolean },
  fn: (log: () => FakeCall[]) => Promise<T>,
): Promise<T> {
  const logPath = await Deno.makeTempFile({ prefix: "fake_cuda_log_" });
  const vars: Record<string, string | undefined> = {
    FAKE_CUDA_LOG: logPath,
    FAKE_CUDA_FAIL: env.fail,
    FAKE_CUDA_DEVICES: env.devices?.toString(),
    FAKE_CUDA_VERSION: env.version?.toString(),
    FAKE_CUDA_CC: env.cc,
    FAKE_CUDA_MEM: env.mem?.toString(),
    FAKE_CUDA_RUN: env.run ? "1" : undefined,
  };
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const set = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) x === undefined ? Deno.env.delete(k) : Deno.env.set(k, x);
  };
  set(vars);
  try {
    return await fn(() => parseLog(Deno.readTextFileSync(logPath)));
  } finally {
    set(before);
    await Deno.remove(logPath);
  }
}

/** The records of a fake driver log. */
export function parseLog(text: string): FakeCall[] {
  return text.split("\n").filter((l) => l).map((line) => {
    const [call, ...rest] = line.split(" ");
    return { call, args: Object.fromEntries(rest.map((kv) => kv.split("=") as [string, string])) };
  });
}

/** A launch's fields from its log record. */
export function launchOf(c: FakeCall): {
  fn: string;
  grid: number[];
  block: number[];
  smem: number;
  stream: string;
  ptrs: bigint[];
  words: number[];
} {
  return {
    fn: c.args.fn,
    grid: c.args.grid.split(",").map(Number),
    block: c.args.block.split(",").map(Number),
    smem: Number(c.args.smem),
    stream: c.args.stream,
    ptrs: c.args.ptrs.split(",").map((x) => BigInt(x)),
    words: c.args.words.split(",").map(Number),
  };
}

/** Removes `dir` when the process ends (a loaded library's file may go while it stays mapped). */
export function removeAtExit(dir: string): void {
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // already gone
    }
  });
}
