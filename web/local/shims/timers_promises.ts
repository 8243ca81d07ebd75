/**
 * `node:timers/promises` for the browser bundle: `setImmediate` as a message-channel turn (a macrotask that, unlike
 * `setTimeout(0)`, is not clamped to 4 ms), so the engine's loop lets the worker's messages (abort, new requests)
 * in between steps.
 *
 * @module
 */

/** Resolves on the next macrotask. */
export function setImmediate(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(0);
  });
}
