import { assertEquals, assertThrows } from "../tests/assert.ts";
import { parseServeArgs, UsageError } from "./cli.ts";
import { Metrics } from "./metrics.ts";

Deno.test("serve flags: --speculative-model, --num-speculative-tokens 1..16, --cache-dtype", () => {
  assertEquals(parseServeArgs([]).speculative, undefined);
  assertEquals(parseServeArgs(["--speculative-model", "demo-eagle"]).speculative, {
    model: "demo-eagle",
    numTokens: 3,
  });
  const o = parseServeArgs(["--speculative-model", "/d", "--num-speculative-tokens", "16", "--cache-dtype", "f32"]);
  assertEquals(o.speculative, { model: "/d", numTokens: 16 });
  assertEquals(o.cacheDtype, "f32");
  for (const k of ["0", "17", "2.5", "x", ""]) {
    assertThrows(
      () => parseServeArgs(["--speculative-model", "/d", "--num-speculative-tokens", k]),
      UsageError,
      "--num-speculative-tokens must be an integer from 1 to 16",
    );
  }
  assertThrows(() => parseServeArgs(["--num-speculative-tokens", "3"]), UsageError, "needs --speculative-model");
  assertThrows(() => parseServeArgs(["--speculative-model", " "]), UsageError, "must not be empty");
  assertThrows(() => parseServeArgs(["--cache-dtype", "f16"]), UsageError, "--cache-dtype must be one of bf16, f32");
});

Deno.test("metrics: spec_decode counters and ratios only when the engine speculates", () => {
  const m = new Metrics("m");
  const base = { running: 0, waiting: 0, batchSize: 0, cacheBlocksUsed: 0, cacheBlocksTotal: 1, tokensProcessed: 0 };
  assertEquals(m.render(base).includes("spec"), false);
  const text = m.render({
    ...base,
    speculative: { numTokens: 4, proposed: 40, accepted: 30, verifications: 10, draftSteps: 45 },
  });
  const get = (name: string) =>
    Number(new RegExp(`^tramontane_${name}\\{model_name="m"\\} (\\S+)$`, "m").exec(text)![1]);
  assertEquals(get("spec_decode_num_draft_tokens_total"), 40);
  assertEquals(get("spec_decode_num_accepted_tokens_total"), 30);
  assertEquals(get("spec_decode_num_drafts_total"), 10);
  assertEquals(get("spec_decode_draft_steps_total"), 45);
  assertEquals(get("spec_decode_acceptance_rate"), 0.75);
  assertEquals(get("spec_decode_mean_accepted_length"), 3);
  assertEquals(get("spec_decode_num_speculative_tokens"), 4);
});
