import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { GraphBuilder } from "../builder.ts";
import { CheckpointError } from "../../weights/errors.ts";
import { makeCheckpoint } from "../../weights/make_checkpoint.ts";
import { openWeightSources } from "../../weights/stream.ts";
import {
  buildDraft,
  checkDraftFits,
  eagleConfig,
  eaglePresetConfig,
  eaglePresetNames,
  isEaglePresetName,
} from "./eagle.ts";
import {
  build,
  canonicalTensors,
  checkpointTensors,
  EAGLE_HIDDEN,
  type Mistral4IOOptions,
  presetConfig,
} from "./mistral4.ts";
import { resolveModel } from "./mod.ts";

const IO: Mistral4IOOptions = { maxTokens: 16, maxSeqs: 2, numBlocks: 8, blockSize: 4, maxBlocksPerSeq: 4 };

Deno.test("eagle presets: one per target, layers after the target's, tiny with a dense and a MoE layer", () => {
  for (const name of ["tiny-eagle", "demo-eagle", "ms4-mini-eagle"]) assert(isEaglePresetName(name), name);
  assert(!isEaglePresetName("tiny") && !isEaglePresetName("nope-eagle"));
  assertEquals(eaglePresetNames().length, 5);
  const { target, draft } = eaglePresetConfig("tiny-eagle");
  assertEquals(target, "tiny");
  assertEquals(draft.num_hidden_layers, 2);
  assertEquals(draft.first_k_dense_replace, 3); // in the checkpoint's numbering: layer 2 (the draft's 0) is dense
  assertEquals(draft.eagle, { layer_offset: 2 });
  assertEquals(draft.vision_config, null);
  assertEquals(eaglePresetConfig("demo-eagle").draft.eagle, { layer_offset: 4 });
  assertThrows(() => eaglePresetConfig("tiny"), Error, "tiny-eagle");
});

Deno.test("eagle tensors: no embedding or head of its own, eagle.fc 2D → D, names in both layouts", () => {
  const { draft } = eaglePresetConfig("tiny-eagle");
  const canon = new Map(canonicalTensors(draft).map((t) => [t.name, t]));
  assert(!canon.has("embed") && !canon.has("lm_head"));
  assertEquals(canon.get("eagle.fc")!.shape, [64, 128]);
  assert(canon.has("layers.0.mlp.gate_up") && canon.has("layers.1.moe.gate_up") && canon.has("norm"));
  const mistral = new Map(checkpointTensors(draft, "mistral").map((t) => [t.checkpointName, t.canonicalName]));
  assertEquals(mistral.get("eagle_linear.weight"), "eagle.fc");
  assertEquals(mistral.get("layers.2.feed_forward.w1.weight"), "layers.0.mlp.gate_up");
  assertEquals(mistral.get("layers.3.experts.0.w1.weight"), "layers.1.moe.gate_up");
  assertEquals(mistral.get("norm.weight"), "norm");
  assert(![...mistral.keys()].some((n) => n.startsWith("layers.0.") || n.startsWith("tok_embeddings")));
  const hf = new Map(
    // Numbered from 0 in its file, its switch counts from 0 too.
    checkpointTensors({ ...draft, eagle: { layer_offset: 0 }, first_k_dense_replace: 1 }, "hf").map((t) => [
      t.checkpointName,
      t,
    ]),
  );
  assertEquals(hf.get("model.fc.weight")!.canonicalName, "eagle.fc");
  assert(hf.has("model.layers.0.mlp.gate_proj.weight") && hf.has("model.layers.1.mlp.experts.gate_up_proj"));
  // FP8 drafts carry a scale for the input projection too.
  const fp8 = { ...draft, quantization: { weight_dtype: "f8e4m3" as const, activation_scheme: "static" as const } };
  assert(checkpointTensors(fp8, "mistral").some((t) => t.checkpointName === "eagle_linear.qscale_weight"));
});

Deno.test("eagle checkpoints: written in both layouts, the loader finds the draft and its layer numbering", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { draft } = eaglePresetConfig("tiny-eagle");
    for (const [layout, offset] of [["mistral", 2], ["hf", 2], ["mistral", 0], ["hf", 0]] as const) {
      const out = `${dir}/${layout}${offset}`;
      await makeCheckpoint({ config: { ...draft, eagle: { layer_offset: offset } }, out, layout, dtype: "f32" });
      const opened = await openWeightSources(out, { quiet: true });
      try {
        assertEquals(opened.config.eagle, { layer_offset: offset }, `${layout} ${offset}`);
        assertEquals(opened.config.num_hidden_layers, 2);
        assert(opened.sources.has("eagle.fc") && !opened.sources.has("embed"));
      } finally {
        opened.close();
      }
    }
    // A decoder checkpoint stays a decoder.
    await makeCheckpoint({ config: presetConfig("tiny"), out: `${dir}/target`, dtype: "f32", layout: "mistral" });
    const target = await openWeightSources(`${dir}/target`, { quiet: true });
    assertEquals(target.config.eagle, undefined);
    target.close();
    assertEquals((await resolveModel("demo-eagle")).config.eagle, { layer_offset: 4 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eagle: a draft whose hidden size or vocabulary differs from the target's is an error naming both", () => {
  const tiny = presetConfig("tiny"), demo = presetConfig("demo");
  const names = { target: "tiny", draft: "/d" };
  const e = assertThrows(() => checkDraftFits(tiny, eagleConfig(demo, { layers: 1 }), names), CheckpointError);
  assert(e.message.includes("256") && e.message.includes("64") && e.message.includes("tiny"), e.message);
  const v = assertThrows(
    () => checkDraftFits(tiny, { ...eagleConfig(tiny, { layers: 1 }), vocab_size: 1000 }, names),
    CheckpointError,
  );
  assert(v.message.includes("1000") && v.message.includes("131072"), v.message);
  assertThrows(() => checkDraftFits(tiny, tiny, names), CheckpointError, "not an EAGLE draft");
  // A draft cannot be served as a model.
  assertThrows(() => build(new GraphBuilder(), eaglePresetConfig("tiny-eagle").draft, IO), Error, "speculative-model");
});

Deno.test("eagle graphs: the target writes its final-norm rows into eagle.hidden, the draft reads and extends it", () => {
  const tiny = presetConfig("tiny");
  const g = new GraphBuilder();
  build(g, { ...tiny, vision_config: null }, { ...IO, eagleHidden: true });
  const target = g.build();
  const store = target.inputs.find((t) => t.state && t.name === EAGLE_HIDDEN)!;
  assertEquals(store.shape, [16, 64]);
  assert(target.inputs.some((i) => i.name === "hiddenAt"));

  const d = new GraphBuilder();
  buildDraft(d, eaglePresetConfig("tiny-eagle").draft, tiny, IO);
  const draft = d.build();
  const weights = new Map(draft.weights.map((w) => [w.name, w]));
  // Embedding and head under the target's names (shared), everything else the draft's own.
  assert(weights.has("embed") && weights.has("lm_head") && weights.has("draft.eagle.fc"));
  assert(weights.has("draft.layers.0.mlp.gate_up") && weights.has("draft.layers.1.moe.gate_up"));
  assert(weights.has("draft.norm") && !weights.has("norm"));
  const states = draft.inputs.filter((t) => t.state).map((t) => t.name).sort();
  assertEquals(states, ["draft.layers.0.cache", "draft.layers.1.cache", EAGLE_HIDDEN]);
  assertEquals(draft.outputs.map((o) => o.name), ["logits"]);
});

Deno.test("eagle layers: dense or MoE by the checkpoint's numbering (local index + layer_offset vs first_k_dense_replace)", () => {
  const target = presetConfig("tiny"); // 2 layers: a draft's layers are numbered 2, 3
  const base = eagleConfig(target, { layers: 2, dense: 1 });
  const kinds = (c: typeof base) => {
    const names = new Set(canonicalTensors(c).map((t) => t.name));
    const g = new GraphBuilder();
    buildDraft(g, c, target, IO);
    const ops = g.build().nodes;
    return [0, 1].map((i) => {
      const dense = names.has(`layers.${i}.mlp.down`), moe = names.has(`layers.${i}.moe.router`);
      assert(dense !== moe, `layer ${i}: one FFN kind`);
      // The graph agrees with the tensor list: a dense layer has no router node.
      const routed = ops.some((n) => n.name.startsWith(`draft.layers.${i}.`) && n.op === "moe_experts");
      assertEquals(routed, moe, `layer ${i} graph`);
      return dense ? "dense" : "moe";
    });
  };
  // first_k_dense_replace 3 with offset 2: checkpoint layer 2 dense, 3 MoE.
  assertEquals(kinds(base), ["dense", "moe"]);
  // 2 (the target's count): no draft layer is dense, though the local indices 0 and 1 are below it.
  assertEquals(kinds({ ...base, first_k_dense_replace: 2 }), ["moe", "moe"]);
  // 4: both dense.
  assertEquals(kinds({ ...base, first_k_dense_replace: 4 }), ["dense", "dense"]);
  // Numbered from 0 in its file: the switch counts from 0.
  assertEquals(kinds({ ...base, eagle: { layer_offset: 0 }, first_k_dense_replace: 1 }), ["dense", "moe"]);
});
