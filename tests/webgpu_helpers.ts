/**
 * Whether the `webgpu` tests run here. They run wherever `navigator.gpu` finds an adapter (lavapipe, Mesa's
 * software Vulkan, on CI). Without one they are ignored, with one printed line saying why, except under `CI=true`:
 * `.ci/run` installs lavapipe, so there a missing adapter must fail the tests rather than skip them.
 *
 * @module
 */

import { webgpuBackend } from "../runtime/backends/webgpu/backend.ts";

/** Why the probe found nothing (undefined when it found an adapter). */
export const WEBGPU_MISSING: string | undefined = await webgpuBackend.probe().then(
  (s) => s > 0 ? undefined : "the probe scored 0",
  (e) => (e as Error).message,
);

/** True under CI, where a missing adapter is a failure. */
export const IN_CI = Deno.env.get("CI") === "true";

/** `ignore` for a webgpu test: only where no adapter exists and this is not CI. */
export const WEBGPU_IGNORE = WEBGPU_MISSING !== undefined && !IN_CI;

if (WEBGPU_IGNORE) console.log(`webgpu tests skipped: ${WEBGPU_MISSING}`);
