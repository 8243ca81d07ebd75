/**
 * `serve.ts` as a process manager runs it: the `deno run` line that `deno task serve` expands to, stopped by
 * signals. Slow-ish (each test starts a Deno process and loads a small preset).
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";

const ROOT = new URL("../", import.meta.url);

/** The `serve` task's command line, read from deno.json so that the test runs what users run. */
async function serveTaskArgs(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task: string = config.tasks.serve;
  assert(task.startsWith("deno run ") && task.endsWith(" serve.ts"), task);
  return task.split(" ").slice(1);
}

/** A running `serve.ts`: its stdout lines as they come, its stderr at the end. */
class ServeProcess {
  readonly child: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #stderr: Promise<string>;
  readonly seen: string[] = [];

  constructor(args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter()).getReader();
    this.#stderr = new Response(this.child.stderr).text();
  }

  static async start(extra: string[]): Promise<ServeProcess> {
    return new ServeProcess([...await serveTaskArgs(), "--port", "0", ...extra]);
  }

  /** Reads stdout until a line matches `pattern`; fails if the process ends first. */
  async waitFor(pattern: RegExp): Promise<RegExpExecArray> {
    for (;;) {
      const r = await this.#lines.read();
      if (r.done) throw new Error(`serve.ts ended before printing ${pattern}:\n${this.seen.join("\n")}`);
      this.seen.push(r.value);
      const m = pattern.exec(r.value);
      if (m) return m;
    }
  }

  /** The exit status, the rest of stdout and all of stderr. */
  async end(): Promise<{ status: Deno.CommandStatus; stdout: string; stderr: string }> {
    for (;;) {
      const r = await this.#lines.read();
      if (r.done) break;
      this.seen.push(r.value);
    }
    return { status: await this.child.status, stdout: this.seen.join("\n"), stderr: await this.#stderr };
  }
}

function lineSplitter(): TransformStream<string, string> {
  let buffer = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) controller.enqueue(line);
    },
    flush(controller) {
      if (buffer !== "") controller.enqueue(buffer);
    },
  });
}

/** Polls /health until it answers 200. */
async function healthy(url: string): Promise<void> {
  for (;;) {
    const res = await fetch(`${url}/health`);
    await res.body?.cancel();
    if (res.status === 200) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** True if nothing listens on `port` any more (a listener can take it). */
function portIsFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

const LISTENING = /listening on (http:\/\/127\.0\.0\.1:(\d+))/;
const chat = (url: string, body: Record<string, unknown>) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], temperature: 0, ...body }),
  });

Deno.test("serve process: SIGTERM drains and exits 0, the port is freed, Deno prints no legacy-abort warning", async () => {
  const p = await ServeProcess.start(["--model", "tiny", "--shutdown-grace", "0"]);
  const [, url, port] = await p.waitFor(LISTENING);
  await healthy(url);
  // A whole and a streamed answer: Deno's legacy request.signal would warn on the first one.
  const whole = await chat(url, { max_tokens: 2 });
  assertEquals(whole.status, 200);
  assertEquals((await whole.json()).choices[0].finish_reason, "length");
  // A stream still running at the signal: with a grace of 0 it is cancelled, and ends properly.
  const stream = await chat(url, { max_tokens: 4000, stream: true });
  const body = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = (await body.read()).value ?? "";
  p.child.kill("SIGTERM");
  await p.waitFor(/SIGTERM: shutting down/);
  for (;;) {
    const r = await body.read();
    if (r.done) break;
    text += r.value;
  }
  assert(text.trimEnd().endsWith("data: [DONE]"), text.slice(-300));
  assert(/"finish_reason":"(abort|length)"/.test(text), text.slice(-300));
  const { status, stdout, stderr } = await p.end();
  assertEquals(status.code, 0, `${stdout}\n${stderr}`);
  assert(stdout.includes("tramontane: stopped"), stdout);
  assert(!stderr.includes("request.signal"), stderr);
  assert(portIsFree(Number(port)), `port ${port} is still taken`);
});

Deno.test("serve process: a second signal while draining ends the process at once", async () => {
  const p = await ServeProcess.start(["--model", "tiny", "--shutdown-grace", "600"]);
  const [, url] = await p.waitFor(LISTENING);
  await healthy(url);
  const stream = await chat(url, { max_tokens: 4000, stream: true });
  const body = stream.body!.getReader();
  await body.read();
  p.child.kill("SIGINT");
  await p.waitFor(/SIGINT: shutting down/);
  p.child.kill("SIGINT");
  const { status } = await p.end();
  // Killed by the signal (the default action): 130 in a shell.
  assertEquals([status.success, status.signal], [false, "SIGINT"]);
  await body.cancel().catch(() => {});
});

Deno.test("serve process: SIGINT while the model loads ends the process at once", async () => {
  const p = await ServeProcess.start(["--model", "demo"]);
  await p.waitFor(LISTENING);
  p.child.kill("SIGINT");
  const { status, stdout } = await p.end();
  assertEquals([status.success, status.signal], [false, "SIGINT"], stdout);
  assert(!stdout.includes("ready"), `the signal came after loading:\n${stdout}`);
});

Deno.test("serve process: the README's process-manager line is the serve task's", async () => {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const line = `exec "$DENO" ${(await serveTaskArgs()).join(" ")} `;
  assert(readme.includes(line), `README.md has no line starting ${line}`);
});
