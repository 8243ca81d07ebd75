/**
 * The fake CUDA driver of the cuda backend's host-code tests: tests/fake_libcuda.c built by clang-19 into a
 * temporary shared library (once per process), loaded through `TRAMONTANE_LIBCUDA` or the factory's `libcuda`
 * option, and its call log read back as records.
 *
 * @module
 */

/** One logged driver call: the entry point and its `key=value` arguments. */
export type FakeCall = { call: string; args: Record<string, string> };

let built: Promise<string | undefined> | undefined;

/** Builds the fake driver (cached); undefined with a printed line when clang-19 is missing. */
export function fakeLibcuda(): Promise<string | undefined> {
  return built ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "tramontane_fake_cuda_" });
    const out = `${dir}/libcuda.so.1`;
    const src = new URL("./fake_libcuda.c", import.meta.url).pathname;
    try {
      const r = await new Deno.Command("clang-19", {
        args: ["-shared", "-fPIC", "-O1", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-o", out, src],
        stderr: "piped",
      }).output();
      if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
      return out;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        console.log("cuda fake-driver tests skipped: clang-19 is not installed (apt-get install clang-19)");
        return undefined;
      }
      throw e;
    }
  })();
}

/** Settings of the fake for one test (environment variables it reads at each call), and a fresh log file. */
export async function withFake<T>(
  env: { fail?: string; devices?: number; version?: number; cc?: string; mem?: number },
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
