/**
 * A device lost while serving: the running stream ends with an OpenAI-shaped `device_lost` error event and `[DONE]`,
 * queued and new requests get 503 `device_lost`, `/health` answers 503 saying why, and nothing hangs. First over the
 * reference backend whose steps start failing with a `DeviceLostError` (what the webgpu backend throws; runs
 * everywhere), then end to end on the webgpu backend whose real device is destroyed mid-stream (lavapipe on CI).
 *
 * @module
 */

import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import { ModelEngine } from "../engine/engine.ts";
import { loadModel, type Model } from "../engine/model.ts";
import { DeviceLostError, OutOfMemoryError } from "../runtime/backend.ts";
import { createServer } from "../server/server.ts";
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { MemoryLogger } from "./server_helpers.ts";
import { instrumentedAdapter, WEBGPU_IGNORE } from "./webgpu_helpers.ts";

const SMALL = { quiet: true, maxModelLen: 128, maxSeqs: 1, maxTokens: 32, threads: 2, seed: 3 };

/** Fails `p` after `ms` instead of letting a hang stall the suite. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error(`${what} hung`)), ms));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * Serves `model` and checks the loss path: a stream is started and its first event read, `lose()` loses the device,
 * then the stream must end with the error and `[DONE]`, a queued request (maxSeqs 1) fail 503, and later requests
 * and `/health` answer 503 `device_lost`.
 */
async function checkLossWhileServing(model: Model, lose: () => void | Promise<void>): Promise<void> {
  const tok = await loadDemoTokenizer();
  // One token of buffer: the engine waits for the reader, so the stream is still running when the device goes.
  const engine = await ModelEngine.create(model, { eosId: tok.eosId, streamBufferTokens: 1 });
  const logger = new MemoryLogger();
  const handle = createServer({ engine, tokenizer: tok, modelName: "tiny", logger })
    .serve({ hostname: "127.0.0.1", port: 0 });
  const post = (body: unknown) =>
    fetch(`${handle.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", prompt: "The device", temperature: 0, max_tokens: 30, ...body as object }),
    });
  try {
    assertEquals((await (await fetch(`${handle.url}/health`)).json()).status, "ok");
    const stream = await post({ stream: true });
    assertEquals(stream.status, 200);
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = (await within(reader.read(), 20_000, "the first event")).value ?? "";
    assert(text.startsWith("data: {"), text);
    const queued = post({}); // waits for the one slot
    await lose();
    for (;;) {
      const { done, value } = await within(reader.read(), 20_000, "the stream after the loss");
      if (done) break;
      text += value;
    }
    const events = text.split("\n\n").filter((e) => e).map((e) => e.slice("data: ".length));
    assertEquals(events.at(-1), "[DONE]", "the stream ends");
    const error = JSON.parse(events.at(-2)!).error;
    assertEquals([error.code, error.type], ["device_lost", "server_error"], JSON.stringify(error));
    assert(/webgpu|reference/.test(error.message) && error.message.includes("lost"), error.message);
    const waited = await within(queued, 20_000, "the queued request");
    assertEquals([waited.status, (await waited.json()).error.code], [503, "device_lost"], "the queued request");
    const next = await post({});
    assertEquals([next.status, (await next.json()).error.code], [503, "device_lost"], "a new request");
    const health = await fetch(`${handle.url}/health`);
    const why = (await health.json()).error;
    assertEquals([health.status, why.code], [503, "device_lost"]);
    assert(why.message.includes("restart"), why.message);
    assertEquals(engine.ready, false);
    assert(engine.failure instanceof DeviceLostError, String(engine.failure));
    assertEquals(engine.stats().running + engine.stats().waiting, 0, "nothing left running or queued");
  } finally {
    await handle.shutdown();
    await engine.close();
  }
}

Deno.test("device lost: a DeviceLostError from a step fails the stream (error event, [DONE]) and the engine; 503s", async () => {
  const model = await loadModel("tiny", { ...SMALL, backend: "reference" });
  try {
    let lost = false;
    const fail = () => new DeviceLostError({ backend: "reference", call: "run", reason: "destroyed: test" });
    const step = model.step.bind(model), sampleStep = model.sampleStep.bind(model);
    model.step = (input) => lost ? Promise.reject(fail()) : step(input);
    model.sampleStep = (input, sampling) => lost ? Promise.reject(fail()) : sampleStep(input, sampling);
    await checkLossWhileServing(model, () => void (lost = true));
  } finally {
    model.dispose();
  }
});

Deno.test("device out of memory mid-step: that request gets 503 out_of_memory naming the tensor; the next is served", async () => {
  const model = await loadModel("tiny", { ...SMALL, backend: "reference" });
  const tok = await loadDemoTokenizer();
  const engine = await ModelEngine.create(model, { eosId: tok.eosId });
  const handle = createServer({ engine, tokenizer: tok, modelName: "tiny", logger: new MemoryLogger() })
    .serve({ hostname: "127.0.0.1", port: 0 });
  try {
    let failures = 1;
    const step = model.step.bind(model);
    model.step = (input) =>
      failures-- > 0
        ? Promise.reject(
          new OutOfMemoryError({ backend: "webgpu", tensor: 'act of moe_experts "experts"', requested: 64 }),
        )
        : step(input);
    const post = () =>
      fetch(`${handle.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "tiny", prompt: "Out of", temperature: 0, max_tokens: 3 }),
      });
    const first = await post(), body = await first.json();
    assertEquals([first.status, body.error.code, first.headers.get("retry-after")], [503, "out_of_memory", "5"]);
    assert(body.error.message.includes('act of moe_experts "experts"'), body.error.message);
    assertEquals(engine.failure, null);
    const second = await post();
    const answer = await second.text();
    assertEquals(second.status, 200, answer);
    assertEquals((await (await fetch(`${handle.url}/health`)).json()).status, "ok");
  } finally {
    await handle.shutdown();
    await engine.close();
    model.dispose();
  }
});

Deno.test({
  name: "device lost: webgpu's device destroyed mid-stream → error event and [DONE], 503 device_lost, /health 503",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const { adapter, devices } = await instrumentedAdapter();
    const model = await loadModel("tiny", { ...SMALL, backend: "webgpu", backendOptions: { adapter } as never });
    try {
      assertEquals(devices.length, 1);
      await checkLossWhileServing(model, async () => {
        devices[0].destroy(); // not the backend's dispose(): a loss, whatever the reason says
        await devices[0].lost;
      });
      // The backend itself says so on its next call.
      await assertRejects(
        () => model.step({ ids: [1], pos: [0], seq: [0], blockTables: [[0]], logitRows: [0] }),
        DeviceLostError,
      );
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "device lost: webgpu's device lost while the server is idle → /health 503 device_lost without a request",
  ignore: WEBGPU_IGNORE,
  async fn() {
    const { adapter, devices } = await instrumentedAdapter();
    const model = await loadModel("tiny", { ...SMALL, backend: "webgpu", backendOptions: { adapter } as never });
    const tok = await loadDemoTokenizer();
    const engine = await ModelEngine.create(model, { eosId: tok.eosId });
    const handle = createServer({ engine, tokenizer: tok, modelName: "tiny", logger: new MemoryLogger() })
      .serve({ hostname: "127.0.0.1", port: 0 });
    try {
      const before = await fetch(`${handle.url}/health`);
      assertEquals([before.status, (await before.json()).status], [200, "ok"]);
      devices[0].destroy();
      await devices[0].lost;
      await new Promise((r) => setTimeout(r, 0)); // the backend's watcher, then the engine's, run on the loss
      const health = await fetch(`${handle.url}/health`), body = await health.json();
      assertEquals([health.status, body.error.code], [503, "device_lost"], JSON.stringify(body));
      assert(body.error.message.includes("webgpu"), body.error.message);
    } finally {
      await handle.shutdown();
      await engine.close();
      model.dispose();
    }
  },
});
