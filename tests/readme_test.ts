/**
 * The README's runnable examples: every fenced block whose info string is exactly `sh test` runs here as printed,
 * with bash from the repository root, so the README cannot drift from what works. Blocks fenced as plain `sh` (the
 * test suite itself, real-checkpoint lines) are not run.
 *
 * Each block runs under `bash -e -o pipefail` (any failing command fails it) in a process group of its own, with a
 * generous timeout. A block must stop what it starts: processes of its group still running a little after it ends
 * (a server it forgot to kill) fail it, and are killed. On failure the block's output is printed.
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";

const ROOT = new URL("..", import.meta.url).pathname;
/** Per block: it may install packages, write a checkpoint and start a server on a busy machine. */
const TIMEOUT_MS = 5 * 60_000;
/** How long a block's background processes may take to exit after it ends (a server it has just sent SIGTERM). */
const EXIT_GRACE_MS = 15_000;

/** A runnable block of a markdown file: its body and the line of its opening fence (1-based). */
export interface TestBlock {
  line: number;
  code: string;
}

/** The blocks of `markdown` fenced with the info string `sh test` exactly (``` or ~~~ fences, CommonMark style). */
export function testBlocks(markdown: string): TestBlock[] {
  const out: TestBlock[] = [];
  const lines = markdown.split("\n");
  let open: { fence: string; info: string; line: number; body: string[] } | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, "");
    if (open === null) {
      const m = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(line);
      if (m) open = { fence: m[1], info: m[2].trim(), line: i + 1, body: [] };
      continue;
    }
    const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(line);
    if (close && close[1][0] === open.fence[0] && close[1].length >= open.fence.length) {
      if (open.info === "sh test") out.push({ line: open.line, code: open.body.join("\n") + "\n" });
      open = null;
    } else {
      open.body.push(line);
    }
  }
  return out;
}

/**
 * Live processes of process group `pgid` (Linux `/proc`; elsewhere none are seen). Read by a child shell: Deno
 * lets a test read `/proc` only under `--allow-all`, and the test task grants permissions one by one.
 */
async function groupMembers(pgid: number): Promise<number[]> {
  if (Deno.build.os !== "linux") return [];
  const { code, stdout, stderr } = await new Deno.Command("bash", {
    // a process that exits meanwhile fails its `read`, which is skipped
    args: ["-c", 'for f in /proc/[0-9]*/stat; do read -r line < "$f" 2>/dev/null && echo "$line"; done; true'],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`listing /proc failed: ${new TextDecoder().decode(stderr)}`);
  const pids: number[] = [];
  for (const stat of new TextDecoder().decode(stdout).split("\n")) {
    if (!stat) continue;
    // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses, so split after the last ")".
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z") pids.push(parseInt(stat));
  }
  return pids;
}

function killGroup(pgid: number): void {
  try {
    Deno.kill(-pgid, "SIGKILL");
  } catch {
    // the group is empty
  }
}

/** Reads a stream to its end into `into`. */
async function pump(stream: ReadableStream<Uint8Array>, into: string[]): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) into.push(decoder.decode(chunk, { stream: true }));
  into.push(decoder.decode());
}

/** What running a block gave. */
interface BlockRun {
  /** The block's process group. */
  pgid: number;
  code: number;
  timedOut: boolean;
  /** Processes of its group still alive after it ended and the grace passed. */
  leftover: number[];
  output: string;
}

async function runBlock(code: string, exitGraceMs = EXIT_GRACE_MS): Promise<BlockRun> {
  const file = await Deno.makeTempFile({ prefix: "tramontane_readme_", suffix: ".sh" });
  try {
    await Deno.writeTextFile(file, code);
    // detached: a session and process group of its own, so everything the block starts can be found and stopped.
    const child = new Deno.Command("bash", {
      args: ["-e", "-o", "pipefail", file],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
    const chunks: string[] = [];
    const pumps = Promise.all([pump(child.stdout, chunks), pump(child.stderr, chunks)]);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, TIMEOUT_MS);
    const status = await child.status;
    clearTimeout(timer);
    let leftover = await groupMembers(child.pid);
    for (let waited = 0; leftover.length > 0 && waited < exitGraceMs; waited += 100) {
      await new Promise((r) => setTimeout(r, 100));
      leftover = await groupMembers(child.pid);
    }
    killGroup(child.pid); // closes the pipes of anything left, so the pumps end
    await pumps;
    return { pgid: child.pid, code: status.code, timedOut, leftover, output: chunks.join("") };
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("README runner: finds exactly the blocks fenced as `sh test`", () => {
  const md = [
    "```sh test",
    "echo one",
    "```",
    "```sh",
    "echo not run",
    "```",
    "````sh test",
    "echo two",
    "```",
    "echo still two",
    "````",
    "```sh testing",
    "echo not run",
    "```",
  ].join("\n");
  assertEquals(testBlocks(md), [
    { line: 1, code: "echo one\n" },
    { line: 7, code: "echo two\n```\necho still two\n" },
  ]);
});

Deno.test("README runner: a failing command fails its block; a process left running is found and stopped", async () => {
  const failed = await runBlock("echo before\nfalse\necho after\n");
  assertEquals([failed.code, failed.output.trim()], [1, "before"]);
  const left = await runBlock("sleep 600 &\necho started\n", 300);
  assertEquals([left.code, left.timedOut, left.leftover.length, left.output], [0, false, 1, "started\n"]);
  assertEquals(await groupMembers(left.pgid), []);
});

const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
const blocks = testBlocks(readme);

Deno.test("README: has runnable blocks", () => {
  assert(blocks.length > 0, "no block in README.md is fenced as `sh test`");
});

for (const block of blocks) {
  Deno.test(`README: the \`sh test\` block at line ${block.line} runs as printed`, async () => {
    const r = await runBlock(block.code);
    const what = r.timedOut
      ? `timed out after ${TIMEOUT_MS / 1000} s`
      : r.code !== 0
      ? `exited with ${r.code}`
      : r.leftover.length > 0
      ? `left processes running (${r.leftover.join(", ")}); stop what the block starts`
      : null;
    if (what !== null) {
      throw new Error(
        `README.md line ${block.line}: the block ${what}.\n--- block\n${block.code}--- output\n${r.output}`,
      );
    }
  });
}
