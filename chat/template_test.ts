import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { type ChatRenderedExpectations, fixture, fixtureJson } from "../tests/fixtures.ts";
import { type ChatRequest, encodeChat } from "./encode.ts";
import { InvalidRequestError } from "./errors.ts";
import { encodeRenderedPrompt, renderChatTemplate } from "./template.ts";
import { Tokenizer } from "./tokenizer.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));

type Conversation = ChatRequest & { name: string };
const conversations = fixtureJson<Conversation[]>("chat/conversations.json");
const expectations = fixtureJson<ChatRenderedExpectations>("chat/rendered_expectations.json");

const templates = new Map(
  Object.keys(expectations.renderings).map((name) => [
    name,
    Deno.readTextFileSync(fixture(`chat/templates/${name}`)),
  ]),
);
const TOKENS = { bosToken: "<s>", eosToken: "</s>", addGenerationPrompt: true };

Deno.test("template: renderings of all six templates are exact; template errors raise InvalidRequestError", async (t) => {
  assertEquals(templates.size, 6);
  for (const [name, source] of templates) {
    await t.step(name, () => {
      const renderings = expectations.renderings[name];
      assertEquals(renderings.length, conversations.length);
      for (const r of renderings) {
        const conversation = conversations.find((c) => c.name === r.name)!;
        if (r.error !== null) {
          const e = assertThrows(() => renderChatTemplate(source, conversation, TOKENS), InvalidRequestError);
          // Jinja2's traceback names the Python exception class; the message is the template's own.
          assertEquals(e.message, r.error.replace(/^ValueError: /, ""), r.name);
        } else {
          assertEquals(renderChatTemplate(source, conversation, TOKENS), r.rendered, r.name);
        }
      }
    });
  }
});

Deno.test("template: tokenized v15 renderings give the fixture's prompt ids", () => {
  const rendered = new Map(expectations.renderings["v15_image_think.jinja"].map((r) => [r.name, r.rendered]));
  const cases = expectations.v15_image_think_prompt_token_ids.cases;
  assertEquals(cases.length, 9);
  for (const c of cases) assertEquals(encodeRenderedPrompt(tok, rendered.get(c.name)!), c.prompt_token_ids, c.name);
});

Deno.test("template: Small 4's template and encodeChat give the same ids where their rules agree", () => {
  const source = templates.get("v15_image_think.jinja")!;
  let compared = 0;
  for (const c of conversations) {
    // The template ends a trailing assistant message with </s>; encodeChat continues it (MODEL.md §4).
    if (c.name === "multi_turn_train" || c.name.startsWith("error_") || c.name === "mid_conversation_system") continue;
    assertEquals(encodeRenderedPrompt(tok, renderChatTemplate(source, c, TOKENS)), encodeChat(tok, c).ids, c.name);
    compared++;
  }
  assertEquals(compared, 8);
});

Deno.test("template: raise_exception and bad request data become InvalidRequestError", () => {
  const source = templates.get("v15_image_think.jinja")!;
  const request: ChatRequest = { messages: [{ role: "user", content: "U" }], reasoning_effort: "low" };
  assertThrows(() => renderChatTemplate(source, request, TOKENS), InvalidRequestError, 'either "none" or "high"');
  const own = "{{ raise_exception('no ' + messages[0]['role'] + ' here') }}";
  assertThrows(() => renderChatTemplate(own, request, TOKENS), InvalidRequestError, "no user here");
  // A failure inside the interpreter on the request's data (here a number where text is expected).
  const broken = { messages: [{ role: "user", content: 5 }] } as unknown as ChatRequest;
  const fault = assertThrows(
    () => renderChatTemplate("{{ messages[0].content | upper }}", broken, TOKENS),
    InvalidRequestError,
    "cannot render this request",
  );
  assert(fault.cause instanceof Error);
  // A template that does not parse is the model directory's fault, not the client's.
  const e = assertThrows(() => renderChatTemplate("{% for %}", request, TOKENS), Error, "chat template");
  assert(!(e instanceof InvalidRequestError));
});

Deno.test("template: standard variables and helpers are available", () => {
  const source = "{{ bos_token }}{% for i in range(2) %}{{ i }}{% endfor %}{{ add_generation_prompt }}" +
    "{{ tools is none }}{{ reasoning_effort }}{{ strftime_now('%Y') | length }}{{ extra }}{{ eos_token }}";
  const request: ChatRequest = { messages: [], tools: null, reasoning_effort: "high" };
  assertEquals(
    renderChatTemplate(source, request, { ...TOKENS, variables: { extra: "!" } }),
    "<s>01truetruehigh4!</s>",
  );
});

Deno.test("template: encodeRenderedPrompt splits on every control-token name, text between goes to encode", () => {
  const text = "<s>[INST]a[IMG]b[/INST][THINK]c<SPECIAL_20>[/THINK]</s>";
  const ids = encodeRenderedPrompt(tok, text);
  assertEquals(ids, [1, 3, ...tok.encode("a"), 10, ...tok.encode("b"), 4, 34, ...tok.encode("c"), 20, 35, 2]);
  assertEquals(encodeRenderedPrompt(tok, "plain [INST"), tok.encode("plain [INST"));
  assertEquals(encodeRenderedPrompt(tok, ""), []);
  assertEquals(tok.decode(ids, { specials: "keep" }), text);
});
