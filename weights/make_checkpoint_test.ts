import { join } from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import {
  type CheckpointLayout,
  configFromHF,
  LINEAR_GROUPS,
  type Mistral4Config,
  presetConfig,
} from "../graph/models/mistral4.ts";
import { main } from "../make_checkpoint.ts";
import { bytesToF32, dequantizeNvfp4 } from "./codecs.ts";
import { type CanonicalWeight, loadCanonicalWeights, weightToF32 } from "./load.ts";
import { configFile, makeCheckpoint } from "./make_checkpoint.ts";
import { configForDtype, randomCanonicalWeights, type RandomDType } from "./random.ts";
import { openSafetensors } from "./safetensors.ts";
import { writeSafetensors } from "./safetensors_writer.ts";
import { fixture } from "../tests/fixtures.ts";
import { loadDemoTokenizer } from "../chat/demo_tokenizer.ts";
import { Tokenizer } from "../chat/tokenizer.ts";
import { CheckpointError } from "./errors.ts";
import { readGenerationConfig } from "./generation_config.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tramontane_ckpt_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Same names, shapes, dtypes, bytes and scales. */
function assertSameWeights(got: Map<string, CanonicalWeight>, want: Map<string, CanonicalWeight>, what: string) {
  assertEquals([...got.keys()].sort(), [...want.keys()].sort(), `${what}: names`);
  for (const [name, w] of want) {
    const g = got.get(name)!;
    assertEquals([g.shape, g.dtype], [w.shape, w.dtype], `${what}: ${name}`);
    assert(g.data.length === w.data.length && g.data.every((b, i) => b === w.data[i]), `${what}: ${name} data`);
    assertEquals(g.scales ? [...g.scales] : undefined, w.scales ? [...w.scales] : undefined, `${what}: ${name} scales`);
    const [gg, wg] = [g.globalScales, w.globalScales].map((a) => a ? [...a] : undefined);
    assertEquals(gg, wg, `${what}: ${name} global scales`);
  }
}

async function roundTrip(
  config: Mistral4Config,
  dtype: RandomDType,
  layout: CheckpointLayout,
  dir: string,
  shard = 8e6,
) {
  const made = await makeCheckpoint({ config, out: dir, dtype, seed: 5, layout, maxShardBytes: shard });
  assertEquals(made.config, configForDtype(config, dtype));
  for (const group of ["text", "all"] as const) {
    const loaded = await loadCanonicalWeights(dir, { quiet: true, group });
    assertEquals(loaded.layout, layout);
    assertEquals(loaded.config, made.config, `${dtype} ${layout}: config`);
    assertSameWeights(loaded.weights, randomCanonicalWeights(config, { seed: 5, dtype, group }), `${dtype} ${layout}`);
  }
  return made;
}

for (const layout of ["hf", "mistral"] as const) {
  for (const dtype of ["f32", "bf16", "f8e4m3", "nvfp4"] as const) {
    Deno.test(`make-checkpoint → load: tiny ${dtype} ${layout} is bit-identical to the random weights`, async () => {
      await withDir(async (dir) => {
        // Mistral bf16 goes over the shard size: consolidated-0000i-of-0000n + index.
        const sharded = layout === "hf" || dtype === "bf16";
        const made = await roundTrip(presetConfig("tiny"), dtype, layout, dir, sharded ? 8e6 : 5e9);
        const names = made.files.map((f) => f.path.slice(dir.length + 1));
        if (layout === "hf") {
          assertEquals(names[0], "config.json");
          assert(names.includes("model.safetensors.index.json"), names.join());
          assert(names.filter((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n)).length > 1, "sharded");
          const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
          const p = "model.language_model.layers.1.mlp.experts";
          // NVFP4 HF checkpoints keep the experts per expert (llm-compressor's un-fused Linear modules).
          assertEquals(`${p}.gate_up_proj` in index.weight_map, dtype !== "nvfp4");
          assertEquals(`${p}.3.up_proj.weight_packed` in index.weight_map, dtype === "nvfp4");
          assertEquals(`${p}.3.up_proj.input_global_scale` in index.weight_map, dtype === "nvfp4");
          assert("lm_head.weight" in index.weight_map && "model.vision_tower.ln_pre.weight" in index.weight_map);
          assertEquals(`${p}.down_proj_scale_inv` in index.weight_map, dtype === "f8e4m3");
          assertEquals(`${p}.down_proj_activation_scale` in index.weight_map, dtype === "f8e4m3");
        } else {
          const file = sharded ? "consolidated.safetensors.index.json" : "consolidated.safetensors";
          assertEquals([names[0], names.at(-1)], ["params.json", file]);
          const r = await openSafetensors(join(dir, file));
          assertEquals(r.has("layers.1.experts.7.w3.weight"), dtype !== "nvfp4");
          assertEquals(r.has("layers.1.experts.7.w3.weight_packed"), dtype === "nvfp4");
          assert(r.has("output.weight"));
          assertEquals(r.has("layers.1.experts.7.w3.qscale_weight"), dtype === "f8e4m3");
        }
      });
    });
  }
}

Deno.test("make-checkpoint: FP8 config.json carries quantization_config and real scale shapes", async () => {
  await withDir(async (dir) => {
    await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype: "f8e4m3" });
    const json = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assertEquals(json.model_type, "mistral3");
    assertEquals(json.text_config.model_type, "mistral4");
    assertEquals([json.quantization_config.quant_method, json.quantization_config.activation_scheme], [
      "fp8",
      "static",
    ]);
    const r = await openSafetensors(join(dir, "model.safetensors.index.json"));
    const p = "model.language_model.layers.0";
    assertEquals(r.info(`${p}.self_attn.q_a_proj.weight_scale_inv`).shape, []);
    assertEquals(r.info(`${p}.mlp.experts.gate_up_proj_scale_inv`).shape, [8, 1, 1]);
    assertEquals(r.info(`${p}.mlp.experts.gate_up_proj`).storage, "F8_E4M3");
    assertEquals(r.info("lm_head.weight").storage, "BF16");
  });
});

Deno.test("make-checkpoint: NVFP4 writes a compressed-tensors quantization_config, real shapes", async () => {
  await withDir(async (dir) => {
    const made = await makeCheckpoint({ config: presetConfig("tiny"), out: dir, dtype: "nvfp4" });
    const qc = JSON.parse(await Deno.readTextFile(join(dir, "config.json"))).quantization_config;
    assertEquals([qc.quant_method, qc.format, qc.config_groups.group_0.targets], [
      "compressed-tensors",
      "nvfp4-pack-quantized",
      ["Linear"],
    ]);
    assertEquals(qc.config_groups.group_0.weights.group_size, 16);
    assertEquals(qc.config_groups.group_0.input_activations.dynamic, "local");
    assert(qc.ignore.includes("lm_head") && qc.ignore.includes("re:.*self_attn.*"), JSON.stringify(qc.ignore));
    // configFromHF reads it back to the same config (makeCheckpoint checks this; here it is visible).
    assertEquals(configFromHF(JSON.parse(await Deno.readTextFile(join(dir, "config.json")))), made.config);
    const r = await openSafetensors(join(dir, "model.safetensors.index.json"));
    const e = "model.language_model.layers.1.mlp.experts.0.gate_proj";
    assertEquals([r.info(`${e}.weight_packed`).storage, r.info(`${e}.weight_packed`).shape], ["U8", [32, 32]]);
    assertEquals([r.info(`${e}.weight_scale`).storage, r.info(`${e}.weight_scale`).shape], ["F8_E4M3", [32, 4]]);
    assertEquals([r.info(`${e}.weight_global_scale`).storage, r.info(`${e}.weight_global_scale`).shape], ["F32", [1]]);
    assertEquals(r.info("model.language_model.layers.0.self_attn.q_a_proj.weight").storage, "BF16");
    // The stored tensors decode, by the codec alone, to exactly the loaded canonical weight's rows.
    const f8 = await r.read(`${e}.weight_scale`), g = bytesToF32(await r.read(`${e}.weight_global_scale`), "f32");
    const stored = dequantizeNvfp4(
      { packed: await r.read(`${e}.weight_packed`), scale: f8, globalScale: g[0] },
      32,
      64,
    );
    const loaded = await loadCanonicalWeights(dir, { quiet: true });
    assertEquals(weightToF32(loaded.weights.get("layers.1.moe.gate_up")!).subarray(0, 32 * 64), stored);
  });
  await withDir(async (dir) => {
    // Mistral layout, weight-only and every linear NVFP4: params.json carries the config as the release does.
    const tiny = presetConfig("tiny");
    const q = { weight_dtype: "nvfp4" as const, activation_scheme: "dynamic" as const, linears: [...LINEAR_GROUPS] };
    await roundTrip({ ...tiny, quantization: q }, "nvfp4", "mistral", dir, 5e9);
    const params = JSON.parse(await Deno.readTextFile(join(dir, "params.json")));
    assertEquals([params.quantization, params.quantization_config.quant_method], [undefined, "compressed-tensors"]);
    assertEquals(params.quantization_config.config_groups.group_0.input_activations, null);
    const r = await openSafetensors(join(dir, "consolidated.safetensors"));
    assert(r.has("layers.0.attention.wkv_b.weight_packed") && !r.has("layers.0.attention.wkv_b.input_global_scale"));
  });
});

Deno.test("make-checkpoint → load: HF text-only (bare model.* + lm_head, Mistral4ForCausalLM)", async () => {
  await withDir(async (dir) => {
    const text = { ...presetConfig("tiny"), vision_config: null };
    await roundTrip(text, "f8e4m3", "hf", dir);
    const json = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assertEquals([json.model_type, json.architectures], ["mistral4", ["Mistral4ForCausalLM"]]);
    const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    assert("model.layers.0.self_attn.q_a_proj.weight" in index.weight_map);
    assert(Object.keys(index.weight_map).every((n) => n.startsWith("model.layers.") || !n.includes("language_model")));
  });
});

Deno.test("load: the language_model.model.* / vision_tower.* prefix variant of a multimodal checkpoint", async () => {
  await withDir(async (dir) => {
    const src = join(dir, "src"), dst = join(dir, "dst");
    await makeCheckpoint({ config: presetConfig("tiny"), out: src, dtype: "f8e4m3" });
    const r = await openSafetensors(join(src, "model.safetensors.index.json"));
    const rename = (n: string) =>
      n.replace(/^model\.language_model\./, "language_model.model.").replace(/^lm_head\./, "language_model.lm_head.")
        .replace(/^model\.(vision_tower|multi_modal_projector)\./, "$1.");
    await Deno.mkdir(dst);
    await writeSafetensors(
      join(dst, "model.safetensors"),
      r.tensors.map((t) => ({ name: rename(t.name), dtype: t.storage, shape: t.shape, data: () => r.read(t.name) })),
    );
    await Deno.copyFile(join(src, "config.json"), join(dst, "config.json"));
    const [a, b] = [await loadCanonicalWeights(src, { quiet: true }), await loadCanonicalWeights(dst, { quiet: true })];
    assertSameWeights(b.weights, a.weights, "renamed");
  });
});

Deno.test("make-checkpoint: re-exports loaded weights in the other layout, bit-identical (tiny_rect HF → Mistral)", async () => {
  // The outside checkpoint of tests/model_reference_test.ts: every dimension differs, so a transposed or mis-split
  // tensor would change shape or bytes here.
  const hf = await loadCanonicalWeights(fixture("model/tiny_rect/checkpoint").pathname, { quiet: true, group: "all" });
  await withDir(async (dir) => {
    const made = await makeCheckpoint({ config: hf.config, out: dir, layout: "mistral", weights: hf.weights });
    const back = await loadCanonicalWeights(dir, { quiet: true, group: "all" });
    assertEquals([back.layout, made.config], ["mistral", hf.config]);
    assertEquals(back.config, hf.config);
    assertSameWeights(back.weights, hf.weights, "mistral re-export");
    const partial = new Map(hf.weights);
    partial.delete("norm");
    await assertRejects(
      () => makeCheckpoint({ config: hf.config, out: join(dir, "b"), weights: partial }),
      Error,
      'no weight "norm"',
    );
    const f32 = new Map(hf.weights).set("norm", { ...hf.weights.get("norm")!, dtype: "f32" });
    await assertRejects(
      () => makeCheckpoint({ config: hf.config, out: join(dir, "c"), weights: f32 }),
      Error,
      "norm is f32 [64], the config declares bf16 [64]",
    );
  });
});

Deno.test("make-checkpoint: refuses a config its layout cannot hold, and an occupied directory", async () => {
  const c = presetConfig("tiny");
  const noMscale = { ...c, rope_scaling: { ...c.rope_scaling!, mscale: null, mscale_all_dim: null } };
  assertThrows(() => configFile(noMscale, "mistral"), Error, "params.json cannot express this config");
  assertEquals(configFile(noMscale, "hf").name, "config.json");
  await withDir(async (dir) => {
    await makeCheckpoint({ config: c, out: dir, dtype: "bf16" });
    await assertRejects(() => makeCheckpoint({ config: c, out: dir }), Error, "--force");
    await makeCheckpoint({ config: c, out: dir, layout: "mistral", force: true });
    assertEquals((await loadCanonicalWeights(dir, { quiet: true })).layout, "mistral");
  });
});

Deno.test("make-checkpoint CLI: writes a checkpoint, rejects bad flags", async () => {
  await withDir(async (dir) => {
    const log = console.log;
    const lines: string[] = [];
    console.log = (s: string) => lines.push(s);
    try {
      assertEquals(await main(["--model", "tiny", "--out", dir, "--dtype", "f8e4m3", "--seed", "3"]), 0);
    } finally {
      console.log = log;
    }
    assert(lines[0].includes("16,973,824 parameters"), lines[0]);
    assert(lines.some((l) => l.includes("config.json")));
    const loaded = await loadCanonicalWeights(dir, { quiet: true });
    assertSameWeights(
      loaded.weights,
      randomCanonicalWeights(presetConfig("tiny"), { seed: 3, dtype: "f8e4m3" }),
      "cli",
    );
    // A config file as --model: the checkpoint's own config.json.
    const again = join(dir, "again");
    console.log = () => {};
    try {
      assertEquals(await main(["--model", join(dir, "config.json"), "--out", again, "--layout", "mistral"]), 0);
    } finally {
      console.log = log;
    }
    assertEquals((await loadCanonicalWeights(again, { quiet: true })).config, loaded.config);
    const nv = join(dir, "nvfp4");
    console.log = () => {};
    try {
      assertEquals(await main(["--model", "tiny", "--out", nv, "--dtype", "nvfp4", "--layout", "mistral"]), 0);
    } finally {
      console.log = log;
    }
    assertEquals((await loadCanonicalWeights(nv, { quiet: true })).config.quantization?.weight_dtype, "nvfp4");
  });
  const error = console.error;
  console.error = () => {};
  try {
    assertEquals(await main(["--model", "tiny"]), 2);
    assertEquals(await main(["--model", "tiny", "--out", "/tmp/x", "--dtype", "q8"]), 2);
    assertEquals(await main(["--model", "tiny", "--out", "/tmp/x", "--layout", "gguf"]), 2);
    assertEquals(await main(["--model", "nope", "--out", "/tmp/x"]), 1);
  } finally {
    console.error = error;
  }
});

/** Runs the make-checkpoint CLI with its output kept. */
async function runCli(args: string[]): Promise<{ code: number; lines: string[] }> {
  const log = console.log;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  try {
    return { code: await main(args), lines };
  } finally {
    console.log = log;
  }
}

Deno.test("make-checkpoint CLI: the directory carries its tokenizer and a generation_config, ready to serve", async () => {
  await withDir(async (dir) => {
    const made = await runCli(["--model", "tiny", "--out", dir]);
    assertEquals(made.code, 0);
    assert(made.lines.some((l) => l.includes(`${dir}/tekken.json`)), made.lines.join("\n"));
    // The demo's tokenizer, as a file our loader reads to the same ids.
    const tok = await Tokenizer.fromFile(join(dir, "tekken.json"));
    const demo = await loadDemoTokenizer();
    assertEquals([tok.version, tok.usedVocabSize], [demo.version, demo.usedVocabSize]);
    for (let id = 0; id < 1000; id++) assertEquals(tok.specialName(id), demo.specialName(id));
    const text = "Hello, world! [INST] 1234 été 東京 🙂\r\n";
    assertEquals(tok.encode(text), demo.encode(text));
    assertEquals(JSON.parse(await Deno.readTextFile(join(dir, "generation_config.json"))), {
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 11,
      max_new_tokens: 256,
    });
    // From a checkpoint's config file, the checkpoint's own tokenizer goes along, byte for byte.
    const again = join(dir, "again");
    await Deno.writeTextFile(join(dir, "tekken.json"), '{"config": {"pattern": "own"}, "vocab": []}');
    assertEquals((await runCli(["--model", join(dir, "config.json"), "--out", again])).code, 0);
    assertEquals(await Deno.readTextFile(join(again, "tekken.json")), '{"config": {"pattern": "own"}, "vocab": []}');
    // Another vocabulary: no tokenizer, and the output says how to serve it.
    await Deno.mkdir(join(dir, "cfg"));
    const small = join(dir, "cfg", "small.json");
    await Deno.writeTextFile(
      small,
      JSON.stringify(configFile({ ...presetConfig("tiny"), vocab_size: 2000 }, "hf").json),
    );
    const other = join(dir, "other");
    const r = await runCli(["--model", small, "--out", other]);
    assertEquals(r.code, 0);
    assert(
      r.lines.at(-1)!.includes("no tekken.json written") && r.lines.at(-1)!.includes("--tokenizer"),
      r.lines.at(-1),
    );
    await assertRejects(() => Deno.stat(join(other, "tekken.json")), Deno.errors.NotFound);
  });
});

Deno.test("make-checkpoint: generation_config.json has max_new_tokens for random weights, none for given ones", async () => {
  await withDir(async (dir) => {
    const c = presetConfig("tiny");
    await makeCheckpoint({ config: c, out: dir });
    assertEquals(await readGenerationConfig(dir), { maxNewTokens: 256 });
    await makeCheckpoint({ config: c, out: dir, force: true, maxNewTokens: 7 });
    assertEquals(await readGenerationConfig(dir), { maxNewTokens: 7 });
    const weights = randomCanonicalWeights(c, { seed: 0, dtype: "bf16", group: "all" });
    await makeCheckpoint({ config: configForDtype(c, "bf16"), out: dir, force: true, weights });
    assertEquals(await readGenerationConfig(dir), { maxNewTokens: null });
    assertEquals(await readGenerationConfig(join(dir, "nowhere")), null);
    for (const [text, message] of [["{", "is not JSON"], ['{"max_new_tokens": 0}', "positive integer, got 0"]]) {
      await Deno.writeTextFile(join(dir, "generation_config.json"), text);
      await assertRejects(() => readGenerationConfig(dir), CheckpointError, message);
    }
  });
});
