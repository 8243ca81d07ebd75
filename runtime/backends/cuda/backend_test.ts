/**
 * The cuda backend where this host has no NVIDIA driver (CI, this machine): `--backend cuda` fails at once with
 * the reason, from the registry, `loadModel` and `serve.ts` alike. The host code against a fake driver is tested in
 * tests/cuda_fake_driver_test.ts; the kernels on a GPU by bench/cuda_check.sh.
 */
import { assert, assertEquals, assertRejects } from "../../../tests/assert.ts";
import { BACKENDS, BackendUnavailableError, createBackend, probeAll } from "../../registry.ts";
import { loadModel } from "../../../engine/model.ts";
import { cudaBackend, probeCuda } from "./backend.ts";
import { checkDriverVersion, CudaUnavailableError, cudaVersionText, MIN_DRIVER_VERSION } from "./ffi.ts";

const system = probeCuda({ libcuda: "libcuda.so.1" });
const NO_DRIVER = "no NVIDIA driver (libcuda.so.1 not found): ";
const hasDriver = system.ok || !system.reason.startsWith(NO_DRIVER) || Deno.env.get("TRAMONTANE_LIBCUDA") !== undefined;
if (hasDriver) {
  console.log(`cuda no-driver tests skipped: this host has a driver (${system.ok ? "ok" : system.reason})`);
}

Deno.test({
  name: "cuda: without a driver, probe is 0 and --backend cuda names the missing library (registry, loadModel, serve)",
  ignore: hasDriver,
  async fn() {
    assert(BACKENDS.includes(cudaBackend));
    const probe = (await probeAll()).find((p) => p.name === "cuda")!;
    assertEquals(probe.score, 0);
    assert(probe.error!.startsWith(NO_DRIVER), probe.error);
    const e = await assertRejects(() => createBackend("cuda"), BackendUnavailableError);
    assert(e.message.startsWith(`backend "cuda" is not available here: ${NO_DRIVER}`), e.message);
    assert(e.message.includes("Install the NVIDIA driver (≥ 580, CUDA 13.0)"), e.message);
    await assertRejects(() => loadModel("tiny", { backend: "cuda", quiet: true }), BackendUnavailableError, NO_DRIVER);
    // The server exits with it before listening.
    const task: string =
      JSON.parse(await Deno.readTextFile(new URL("../../../deno.json", import.meta.url))).tasks.serve;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...task.split(" ").slice(1), "--model", "tiny", "--backend", "cuda", "--port", "0"],
      cwd: new URL("../../../", import.meta.url),
      env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 1, stderr);
    assert(stderr.includes(`backend "cuda" is not available here: ${NO_DRIVER}`), stderr);
  },
});

Deno.test("cuda: a driver older than the PTX needs is refused with the versions and the fix", () => {
  assertEquals(cudaVersionText(MIN_DRIVER_VERSION), "13.0");
  checkDriverVersion(13000);
  checkDriverVersion(13010);
  try {
    checkDriverVersion(12090);
    throw new Error("accepted CUDA 12.9");
  } catch (e) {
    assert(e instanceof CudaUnavailableError);
    assertEquals(
      e.message,
      "the NVIDIA driver supports CUDA 12.9, and the cuda backend's kernels (PTX from nvcc 13.0) need CUDA 13.0: " +
        "install driver 580 or newer",
    );
  }
});
