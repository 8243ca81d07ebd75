/**
 * Says which q8 prefill path this host exercises (CI log): the wasm kernels' `q8_prefill_int8` probe. q8 matmuls of
 * more than 8 rows multiply int8 activations only where the relaxed dot product is exact on unsigned bytes (x86 with
 * AVX-VNNI); elsewhere they keep f32 activations, and the int8 prefill path goes untested on this host.
 *
 * ```
 * deno run --allow-read .ci/q8_path.ts
 * ```
 *
 * @module
 */
import { probeQ8Paths } from "../runtime/backends/wasm/module.ts";

let line: string;
try {
  line = (await probeQ8Paths()).int8Prefill
    ? "int8 activations (the relaxed dot product is exact on unsigned bytes here, as with AVX-VNNI)"
    : "f32 activations (no exact relaxed int8 dot product here): the int8 prefill path is NOT exercised on this host";
} catch (e) {
  line = `unknown: the wasm kernels do not load here (${(e as Error).message})`;
}
console.log(`q8 prefill path: ${line}`);
