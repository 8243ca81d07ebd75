/**
 * Checkpoints for speculative decoding tests: a preset-shaped target (`tiny` by default) (f32, text only) whose layer outputs are scaled
 * by `outScale`, and an EAGLE draft built so that it predicts what that target predicts from the current token
 * alone: `fc = [I | 0]` (the token's embedding passes, the target's hidden state is ignored), zero layer outputs
 * (attention, dense, expert and shared down projections), and the target's final norm. With `outScale` 0 the
 * target's logits are `head(norm(embed(t)))` too, so every proposal is the target's greedy token (full acceptance
 * by construction); with a small scale the target's context nudges its argmax away now and then, so proposals are
 * sometimes accepted and sometimes not.
 *
 * @module
 */

import { eagleConfig } from "../graph/models/eagle.ts";
import { canonicalTensors, type Mistral4Config, presetConfig } from "../graph/models/mistral4.ts";
import type { CanonicalWeight } from "../weights/load.ts";
import { makeCheckpoint } from "../weights/make_checkpoint.ts";
import { randomCanonicalWeights } from "../weights/random.ts";

/** A layer's output projections: what `outScale` scales in the target and what the draft zeroes. */
const OUTPUTS = /\.(attn\.wo|mlp\.down|moe\.down|shared\.down)$/;

function f32(w: CanonicalWeight): Float32Array {
  return new Float32Array(w.data.buffer, w.data.byteOffset, w.data.byteLength / 4);
}

/** The target and draft configs of {@link writeSpeculativePair}: `preset` text-only in f32, a 2-layer draft. */
export function speculativePairConfigs(preset = "tiny"): { target: Mistral4Config; draft: Mistral4Config } {
  const target: Mistral4Config = { ...presetConfig(preset), vision_config: null, dtype: "f32" };
  return { target, draft: eagleConfig(target, { layers: 2, dense: 1 }) };
}

/** Writes the pair (module docs) under `dir`; returns the target's and the draft's directories. */
export async function writeSpeculativePair(
  dir: string,
  o: {
    outScale: number;
    seed?: number;
    preset?: string;
    headScale?: number;
    /**
     * What `fc` passes: the token's embedding (`[I | 0]`, the default) or the target's hidden state (`[0 | I]`,
     * with the draft's final norm all ones: proposal 0's logits are then the target's at the same position divided
     * by the hidden state's RMS, so its argmax is the target's).
     */
    fc?: "embedding" | "hidden";
  },
): Promise<{ target: string; draft: string }> {
  const { target, draft } = speculativePairConfigs(o.preset);
  const seed = o.seed ?? 0;
  const tw = randomCanonicalWeights(target, { seed, dtype: "f32" });
  for (const [name, w] of tw) if (OUTPUTS.test(name)) f32(w).forEach((x, i, a) => a[i] = x * o.outScale);
  // A scaled head sharpens both models' distributions (the draft uses the target's head).
  if (o.headScale !== undefined) f32(tw.get("lm_head")!).forEach((x, i, a) => a[i] = x * o.headScale!);
  const dw = randomCanonicalWeights(draft, { seed: seed + 1, dtype: "f32" });
  const D = target.hidden_size;
  for (const t of canonicalTensors(draft)) {
    const w = f32(dw.get(t.name)!);
    if (t.name === "eagle.fc") {
      w.fill(0);
      // [I | 0]: out row i takes the embedding's element i; [0 | I]: the hidden state's.
      const at = o.fc === "hidden" ? D : 0;
      for (let i = 0; i < D; i++) w[i * 2 * D + at + i] = 1;
    } else if (OUTPUTS.test(t.name)) w.fill(0);
    else if (t.name === "norm") {
      if (o.fc === "hidden") w.fill(1);
      else w.set(f32(tw.get("norm")!));
    }
  }
  const paths = { target: `${dir}/target`, draft: `${dir}/draft` };
  await makeCheckpoint({ config: target, out: paths.target, weights: tw, dtype: "f32", force: true });
  await makeCheckpoint({ config: draft, out: paths.draft, weights: dw, dtype: "f32", layout: "mistral", force: true });
  return paths;
}
