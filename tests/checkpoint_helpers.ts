/**
 * Helpers for the checkpoint and safetensors tests.
 *
 * @module
 */
import { CheckpointError } from "../weights/errors.ts";
import { assert } from "./assert.ts";

/** Runs `f`, expecting a CheckpointError of `kind` whose message contains every string in `parts`. */
export async function expectCheckpointError(
  f: () => unknown,
  kind: string,
  parts: string[],
): Promise<CheckpointError> {
  try {
    await f();
  } catch (e) {
    assert(e instanceof CheckpointError, `expected CheckpointError, got ${e}`);
    assert(e.kind === kind, `expected kind ${kind}, got ${e.kind}: ${e.message}`);
    for (const p of parts) assert(e.message.includes(p), `message lacks "${p}": ${e.message}`);
    return e;
  }
  throw new Error(`expected a ${kind} CheckpointError`);
}
