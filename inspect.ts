/**
 * `deno task inspect` — model inspection CLI: parameters, FLOPs, weight and cache bytes, per-layer table, graph.
 *
 * ```
 * deno run --allow-read inspect.ts --model mistral-small-4 [--format text|json|dot] [--json] [--dtype f8e4m3]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DType, headDTypeOf, isDType } from "./graph/dtype.ts";
import { decodeGraph, inspectModel, renderDot, renderJson, renderText, withSoftmaxScale } from "./graph/inspect.ts";
import { linearDtype, type Mistral4Config, type SoftmaxScaleMode, softmaxScaleMode } from "./graph/models/mistral4.ts";
import { resolveModel } from "./graph/models/mod.ts";
import { planSection } from "./engine/plan_section.ts";
import { parseBandwidth, parseByteSize } from "./engine/server_plan.ts";

const USAGE = `usage: inspect.ts [--model PRESET|DIR] [--format text|json|dot] [--json] [--dtype DTYPE] [--layers N]
                  [--backend NAME[,NAME…]|none] [--softmax-scale plain|deepseek_yarn] [--head-dtype q4|q8|bf16]
                  [--host-memory SIZE] [--bandwidth RATE]
  --model   preset (tiny, demo, ms4-mini, ms4-medium, mistral-small-4; default mistral-small-4) or a checkpoint directory
  --format  text (default), json, or dot (Graphviz; --layers N layers drawn in full, default 1)
  --json    same as --format json
  --dtype   stored dtype of the text linears (f8e4m3, bf16, nvfp4, q8, q4…) for the byte counts
  --head-dtype  the lm head's dtype (q4, q8, bf16; default as --dtype, q8 under q4)
  --backend backends to plan the decode step on, in preference order (default auto; none: no plan)
  --host-memory  plan for a host with this much memory (128GiB, 512GB…; default this machine's): what fits, and
            what is left for the latent cache
  --bandwidth    the host's memory bandwidth (200GB/s, 51.2GiB/s…): the decode speed it allows, bytes read per
            token / bandwidth
  --softmax-scale  MLA softmax scale: plain (1/sqrt(qk_head_dim)) or deepseek_yarn (mscale²/sqrt(qk_head_dim));
            default the checkpoint's. The report prints the scale in use.`;

/** Runs the CLI on `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      args,
      options: {
        model: { type: "string", default: "mistral-small-4" },
        format: { type: "string", default: "text" },
        json: { type: "boolean", default: false },
        dtype: { type: "string" },
        "head-dtype": { type: "string" },
        layers: { type: "string", default: "1" },
        backend: { type: "string", default: "auto" },
        "softmax-scale": { type: "string" },
        "host-memory": { type: "string" },
        bandwidth: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  const format = flags.json ? "json" : flags.format;
  if (!["text", "json", "dot"].includes(format)) {
    console.error(`--format must be text, json or dot, got "${format}"\n${USAGE}`);
    return 2;
  }
  if (flags.dtype !== undefined && !isDType(flags.dtype)) {
    console.error(`--dtype: unknown dtype "${flags.dtype}"\n${USAGE}`);
    return 2;
  }
  let headDtype: DType | undefined;
  try {
    if (flags["head-dtype"] !== undefined) headDtype = headDTypeOf(flags["head-dtype"], "--head-dtype");
  } catch (e) {
    console.error(`${(e as Error).message}
${USAGE}`);
    return 2;
  }
  const scale = flags["softmax-scale"];
  if (scale !== undefined) {
    try {
      softmaxScaleMode(scale, "--softmax-scale");
    } catch (e) {
      console.error(`${(e as Error).message}\n${USAGE}`);
      return 2;
    }
  }
  let hostMemory: number | undefined, bandwidth: number | undefined;
  try {
    const sizing = flags["host-memory"] !== undefined || flags.bandwidth !== undefined;
    if (sizing && (flags.backend === "none" || format === "dot")) {
      throw new RangeError(
        "--host-memory and --bandwidth size the plan: they need --backend (not none) and text or json",
      );
    }
    if (flags["host-memory"] !== undefined) hostMemory = parseByteSize(flags["host-memory"], "--host-memory");
    if (flags.bandwidth !== undefined) bandwidth = parseBandwidth(flags.bandwidth, "--bandwidth");
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const dtype = flags.dtype as DType | undefined;
  try {
    if (format === "dot") {
      const graph = decodeGraph(withSoftmaxScale(await resolveModel(flags.model), scale), { dtype, headDtype });
      console.log(renderDot(graph, { expandLayers: Number(flags.layers) }));
      return 0;
    }
    const resolved = withSoftmaxScale(await resolveModel(flags.model), scale);
    const graphFor = (d?: DType) => decodeGraph(resolved, { dtype: d, headDtype });
    const linear = linearDtype(resolved.config, dtype, "routed_experts");
    const plan = flags.backend === "none" ? undefined : (_: unknown, config: Mistral4Config) =>
      planSection({
        backends: flags.backend!,
        graphFor,
        dtype,
        linearDtype: linear,
        // The host block and the decode traffic when a host is described (--host-memory, --bandwidth).
        ...(hostMemory !== undefined || bandwidth !== undefined ? { config } : {}),
        hostMemoryBytes: hostMemory,
        bandwidthBytesPerSecond: bandwidth,
      });
    const softmaxScale = scale as SoftmaxScaleMode;
    const report = await inspectModel(flags.model, { dtype, headDtype, plan, softmaxScale });
    console.log(format === "json" ? renderJson(report) : renderText(report));
    return 0;
  } catch (e) {
    console.error(`inspect: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
