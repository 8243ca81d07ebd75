import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { type ChatRenderedExpectations, fixture, fixtureJson } from "../tests/fixtures.ts";
import { type ChatMessage, type ChatRequest, encodeChat, type FunctionTool } from "./encode.ts";
import { InvalidRequestError } from "./errors.ts";
import { Tokenizer } from "./tokenizer.ts";

const tok = await Tokenizer.fromFile(fixture("tokenizer/tekken_small4_v15_derived.json"));
const v3 = await Tokenizer.fromFile(fixture("tokenizer/tekken_240911.json"));

const SETTINGS_NONE = '[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS]';

/** Our encoder writes one `[IMG]` per image; mistral-common's expectations show the expanded rows. */
function collapseImages(text: string): string {
  return text.replace(/(?:\[IMG\]|\[IMG_BREAK\])*\[IMG_END\]/g, "[IMG]");
}

function expectInvalid(request: ChatRequest, includes?: string): InvalidRequestError {
  return assertThrows(() => encodeChat(tok, request), InvalidRequestError, includes);
}

interface InstructCase {
  id: string;
  version: string;
  messages?: ChatMessage[] | string;
  tools?: FunctionTool[] | null;
  reasoning_effort?: string | null;
  expected_text?: string;
  expected_error?: string;
  cases?: { message?: ChatMessage; content?: ChatMessage["content"]; expected: string }[];
}

const instruct = fixtureJson<{ cases: InstructCase[] }>("chat/mistral_common_instruct_cases.json").cases;
const instructCase = (id: string) => instruct.find((c) => c.id === id)!;

Deno.test("encode: every v15 mistral-common case", async (t) => {
  const v15 = instruct.filter((c) => c.version === "v15");
  assertEquals(v15.length, 6);
  for (const c of v15) {
    await t.step(c.id, () => {
      if (c.id === "v15_tool_result_with_image") {
        // The fixture describes this request in words; this is mistral-common's multimodal_tool_request.
        c.messages = [
          { role: "user", content: "Use the tool" },
          {
            role: "assistant",
            tool_calls: [{ id: "test12345", type: "function", function: { name: "fn", arguments: "{}" } }],
          },
          {
            role: "tool",
            tool_call_id: "test12345",
            content: [{ type: "text", text: "result" }, {
              type: "image_url",
              image_url: { url: "data:image/png;base64,x" },
            }],
          },
        ];
      }
      if (c.id === "v15_reasoning_effort_validation") {
        for (const effort of ["low", "medium", "minimal", "HIGH", ""]) {
          expectInvalid({ messages: [{ role: "user", content: "U" }], reasoning_effort: effort }, "reasoning_effort");
        }
        const absent = encodeChat(tok, { messages: [{ role: "user", content: "U" }] });
        assertEquals(absent.text, `<s>${SETTINGS_NONE}[INST]U[/INST]`);
        return;
      }
      const request = c as ChatRequest;
      if (c.expected_error !== undefined) {
        expectInvalid(request, "system message");
        return;
      }
      assertEquals(encodeChat(tok, request).text, collapseImages(c.expected_text!));
    });
  }
});

Deno.test("encode: v13 cases raise 'unsupported tokenizer version'; their v15 counterparts encode the same way", async (t) => {
  const v13 = instruct.filter((c) => c.version === "v13");
  assertEquals(v13.length, 5);
  await t.step("a non-v15 tokenizer is refused", () => {
    const request = { messages: [{ role: "user", content: "U" }] } as ChatRequest;
    assertThrows(() => encodeChat(v3, request), Error, "unsupported tokenizer version");
  });
  // v13 differs from v15 only by [MODEL_SETTINGS] and by allowing thinking in system messages.
  const withSettings = (text: string) => text.replace("[INST]", SETTINGS_NONE + "[INST]");
  await t.step("v13_tool_results_reordered", () => {
    const c = instructCase("v13_tool_results_reordered");
    assertEquals(encodeChat(tok, c as ChatRequest).text, withSettings(c.expected_text!));
  });
  await t.step("v13_system_think_and_assistant_think (v15 rejects the system thinking chunk)", () => {
    expectInvalid(instructCase("v13_system_think_and_assistant_think") as ChatRequest, "system message");
  });
  await t.step("v13_assistant_message_encodings", () => {
    for (const { message, expected } of instructCase("v13_assistant_message_encodings").cases!) {
      const messages: ChatMessage[] = [{ role: "user", content: "U" }, message!];
      const calls = (message as { tool_calls?: { id: string }[] }).tool_calls ?? [];
      for (const call of calls) messages.push({ role: "tool", tool_call_id: call.id, content: "R" });
      messages.push({ role: "user", content: "U2" });
      const results = calls.map(() => "[TOOL_RESULTS]R[/TOOL_RESULTS]").join("");
      const want = `<s>${SETTINGS_NONE}[INST]U[/INST]${expected}</s>${results}[INST]U2[/INST]`;
      assertEquals(encodeChat(tok, { messages }).text, want);
    }
  });
  await t.step("v13_system_message_encodings", () => {
    for (const { content, expected } of instructCase("v13_system_message_encodings").cases!) {
      const request = { messages: [{ role: "system", content }, { role: "user", content: "U" }] } as ChatRequest;
      if (Array.isArray(content) && content.some((p) => p.type === "thinking")) {
        expectInvalid(request, "system message");
      } else {
        assertEquals(encodeChat(tok, request).text, `<s>${expected}${SETTINGS_NONE}[INST]U[/INST]`);
      }
    }
  });
  await t.step("v13_think_chunk", () => {
    for (const c of instructCase("v13_think_chunk").cases as unknown as { thinking: string; closed: boolean }[]) {
      const thinking = { type: "thinking" as const, thinking: c.thinking, closed: c.closed };
      const messages: ChatMessage[] = [{ role: "user", content: "U" }, { role: "assistant", content: [thinking] }];
      const closed = c.closed ? "[/THINK]" : "";
      assertEquals(
        encodeChat(tok, { messages }).text,
        `<s>${SETTINGS_NONE}[INST]U[/INST][THINK]${c.thinking}${closed}`,
      );
    }
  });
});

type Conversation = ChatRequest & { name: string };
const conversations = fixtureJson<Conversation[]>("chat/conversations.json");
const renderedFixture = fixtureJson<ChatRenderedExpectations>("chat/rendered_expectations.json");

/**
 * Where the v15 templates and the encoder (mistral-common's rules for Small 4, MODEL.md §4) disagree on purpose.
 * - multi_turn_train: the template closes a trailing assistant message with `</s>`; the encoder continues it.
 * - v15 / v15_image have no [THINK] support (they drop `reasoning_content`, reject thinking parts) and v15 /
 *   v15_think no image support; Small 4's encoder is the image+think one, so it follows v15_image_think.
 */
const DEVIATIONS: Record<string, string[]> = {
  "v15_image_think.jinja": ["multi_turn_train"],
  "v15_think.jinja": ["multi_turn_train", "user_multi_image"],
  "v15.jinja": ["multi_turn_train", "assistant_reasoning_content", "assistant_thinking_chunk", "user_multi_image"],
  "v15_image.jinja": ["multi_turn_train", "assistant_reasoning_content", "assistant_thinking_chunk"],
};

/** Conversations all v15 templates reject and mistral-common's validator rejects too (role order rules). */
const REJECTED = ["mid_conversation_system", "error_starts_with_assistant", "error_tool_after_user"];

Deno.test("encode: v15 template renderings agree except for the listed deviations", () => {
  const reference = new Map(renderedFixture.renderings["v15_image_think.jinja"].map((r) => [r.name, r]));
  const ours = new Map<string, string | null>();
  for (const c of conversations) {
    if (REJECTED.includes(c.name)) {
      assertEquals(expectInvalid(c).code, "invalid_message_order", c.name);
      ours.set(c.name, null);
    } else {
      ours.set(c.name, encodeChat(tok, c).text);
    }
  }
  // Against Small 4's own template: identical but for the continued trailing assistant message.
  for (const [name, text] of ours) {
    const want = reference.get(name)!.rendered;
    assertEquals(text, name === "multi_turn_train" ? want!.replace(/<\/s>$/, "") : want, name);
  }
  for (const [template, deviations] of Object.entries(DEVIATIONS)) {
    const disagree = renderedFixture.renderings[template].filter((r) => r.rendered !== ours.get(r.name));
    assertEquals(disagree.map((r) => r.name), deviations, template);
  }
});

Deno.test("encode: prompt ids of the v15 renderings are exact", () => {
  const cases = renderedFixture.v15_image_think_prompt_token_ids.cases;
  assertEquals(cases.length, 9);
  for (const c of cases) {
    const conversation = conversations.find((x) => x.name === c.name)!;
    // multi_turn_train: the trailing assistant message is continued, so the template's final </s> is absent.
    const want = c.name === "multi_turn_train" ? c.prompt_token_ids.slice(0, -1) : c.prompt_token_ids;
    assertEquals(encodeChat(tok, conversation).ids, want, c.name);
  }
});

// Ids produced by mistral-common itself with the Small 4 control table and vocabulary: its public test data
// tests/data/expected/chat-*/expected.json (pinned-v15-image-settings-test configuration, Apache-2.0).
const WEATHER_IDS = (
  "1,17,11874,2405,3180,31215,2314,2549,4213,1317,27148,2203,7389,1046,18,17,83665,1394,80697,1693,1261,3330,4546," +
  "1395,61103,1046,18,5,1091,19227,4994,2811,1429,5165,1897,1429,5165,2811,16753,2391,2811,1429,1689,45971,1095," +
  "45629,1897,1429,14653,2811,1429,4147,1278,3519,17253,1897,1429,26204,2811,16753,4994,2811,1429,6371,1897,1429," +
  "48649,2811,16753,17611,2811,16753,4994,2811,1429,3607,1897,1429,14653,2811,1429,1784,5970,1321,3468,1044,1324," +
  "3596,1046,5151,12717,1044,13461,50666,1429,8092,2811,16753,4994,2811,1429,3607,1897,1429,31222,2811,12161,1099," +
  "79092,1897,1429,38600,10432,31597,1429,14653,2811,1429,1784,6138,5476,1317,2210,1046,90463,1593,1562,1278,8616," +
  "7285,2613,47579,1429,15760,2811,12161,17611,1897,1429,8092,4964,2821,4179,16753,4994,2811,1429,5165,1897,1429," +
  "5165,2811,16753,2391,2811,1429,1689,4883,57811,1095,45629,1095,120596,1897,1429,14653,2811,1429,4147,1420,1464," +
  "17008,17253,52932,1897,1429,26204,2811,16753,4994,2811,1429,6371,1897,1429,48649,2811,16753,17611,2811,16753," +
  "4994,2811,1429,3607,1897,1429,14653,2811,1429,1784,5970,1321,3468,1044,1324,3596,1046,5151,12717,1044,13461," +
  "50666,1429,8092,2811,16753,4994,2811,1429,3607,1897,1429,31222,2811,12161,1099,79092,1897,1429,38600,10432,31597," +
  "1429,14653,2811,1429,1784,6138,5476,1317,2210,1046,90463,1593,1562,1278,8616,7285,2613,4179,1429,10309,99794," +
  "2811,16753,4994,2811,1429,49039,1897,1429,14653,2811,1429,1784,2782,1307,5072,1317,52932,1034,47579,1429,15760," +
  "2811,12161,17611,1897,1429,8092,1897,1429,10309,99794,4964,2821,27028,6,36,19227,80277,1302,13196,1609,1449,2811," +
  "1429,17670,46005,37,3,7493,1681,1278,17253,2479,9406,4,69957,1044,1710,1636,10678,5234,1639,1454,2143,7285,1063," +
  "2,3,1073,4525,1294,6993,1044,5498,1046,4,9,1689,45971,1095,45629,32,19227,17611,2811,1429,42572,1044,5498,1897," +
  "1429,8092,2811,1429,1099,79092,46005,2,7,1050,1050,8,1784,3519,6138,1294,6993,1044,5498,1395,1032,1050,1050," +
  "17633,112399,1046,2,3,13394,1395,1278,17253,4670,1317,1402,2479,1294,6993,1044,5498,2136,1278,4275,2460,5072,4," +
  "17013,5584,1639,1278,2782,1307,5072,1636,2933,1278,17253,52932,1394,1046,2,3,1053,5072,4,9,1689,4883,57811,1095," +
  "45629,1095,120596,32,19227,17611,2811,1429,42572,1044,5498,1897,1429,8092,2811,1429,1099,79092,1897,1429,10309," +
  "99794,2811,1032,1053,1125,2,7,19227,1050,1048,1050,1052,1045,1048,1053,1045,1050,1050,12592,1050,1050,8011,1050," +
  "1048,1050,1052,1045,1048,1053,1045,1050,1051,12592,1050,1051,8011,1050,1048,1050,1052,1045,1048,1053,1045,1050," +
  "1052,12592,1050,1052,8011,1050,1048,1050,1052,1045,1048,1053,1045,1050,1053,12592,1050,1053,8011,1050,1048,1050," +
  "1052,1045,1048,1053,1045,1050,1054,12592,1050,1054,46005,8"
).split(",").map(Number);

const SETTINGS_NONE_IDS = [36, 19227, 80277, 1302, 13196, 1609, 1449, 2811, 1429, 17670, 46005, 37];

Deno.test("encode: ids equal mistral-common's own encodings", async (t) => {
  await t.step("chat-sample-weather-full-released-p15i (two system prompts, tools, two calls, results)", () => {
    const location = { type: "string", description: "The city and state, e.g. San Francisco, CA" };
    const format = {
      type: "string",
      enum: ["celsius", "fahrenheit"],
      description: "The temperature unit to use. Infer this from the users location.",
    };
    const days = { type: "integer", description: "The number of days to forecast" };
    const call = (id: string, name: string, args: string) => ({
      role: "assistant" as const,
      tool_calls: [{ id, type: "function" as const, function: { name, arguments: args } }],
    });
    const request: ChatRequest = {
      tools: [
        {
          type: "function",
          function: {
            name: "get_current_weather",
            description: "Get the current weather",
            parameters: { type: "object", properties: { location, format }, required: ["location", "format"] },
          },
        },
        {
          type: "function",
          function: {
            name: "get_n_day_weather_forecast",
            description: "Get an N-day weather forecast",
            parameters: {
              type: "object",
              properties: { location, format, num_days: days },
              required: ["location", "format", "num_days"],
            },
          },
        },
      ],
      messages: [
        { role: "system", content: "Don't make assumptions about what values to plug into functions." },
        { role: "system", content: "Ask for clarification if a user request is ambiguous." },
        { role: "user", content: "What's the weather like today" },
        { role: "assistant", content: "Sure, can you please provide me with your location?" },
        { role: "user", content: "I'm in Paris, France." },
        call("aaaaaaaaa", "get_current_weather", '{"location": "Paris, France", "format": "celsius"}'),
        { role: "tool", tool_call_id: "aaaaaaaaa", content: "22" },
        { role: "assistant", content: "The current temperature in Paris, France is 22 degrees Celsius." },
        { role: "user", content: "what is the weather going to be like in Paris, France over the next x days" },
        { role: "assistant", content: "Please tell me the number of days you want the weather forecast for." },
        { role: "user", content: "5 days" },
        call("bbbbbbbbb", "get_n_day_weather_forecast", '{"location":"Paris, France","format":"celsius","num_days":5}'),
        {
          role: "tool",
          tool_call_id: "bbbbbbbbb",
          content: '{"2024-05-22":"22","2024-05-23":"23","2024-05-24":"24","2024-05-25":"25","2024-05-26":"26"}',
        },
      ],
    };
    const out = encodeChat(tok, request);
    assertEquals(out.ids, WEATHER_IDS);
    assertEquals(out.text, tok.decode(WEATHER_IDS, { specials: "keep" }));
  });
  await t.step("chat-v15-policy-high-both (tools, reasoning high)", () => {
    const c = instructCase("v15_tools_reasoning_high");
    const toolsJson = [
      ...[1091, 19227, 4994, 2811, 1429, 5165, 1897, 1429, 5165, 2811, 16753, 2391, 2811, 1429, 2978, 55359, 88521],
      ...[1897, 1429, 14653, 2811, 1429, 4147, 1278, 2632, 1307, 1420, 54114, 4818, 39249, 1429, 26204, 2811, 16753],
      ...[4994, 2811, 1429, 6371, 1897, 1429, 48649, 2811, 16753, 90043, 2811, 16753, 4994, 2811, 1429, 3607, 1897],
      ...[1429, 14653, 2811, 1429, 25697, 4818, 2613, 108978, 27028],
    ];
    const settingsHigh = [36, 19227, 80277, 1302, 13196, 1609, 1449, 2811, 1429, 24871, 46005, 37];
    const turns = [3, 1085, 1049, 4, 1065, 1049, 9, 1070, 1049, 32, 30620, 9, 1070, 1050, 32, 30620, 2];
    const rest = [7, 1082, 1049, 8, 7, 1082, 1050, 8, 1065, 1050, 2, 3, 1085, 1050, 4];
    const want = [1, 17, 1083, 18, 5, ...toolsJson, 6, ...settingsHigh, ...turns, ...rest];
    assertEquals(encodeChat(tok, c as ChatRequest).ids, want);
  });
  await t.step("chat-v15-call-id-x / -slash (any call id; ids are not encoded)", () => {
    for (const id of ["x", "call/id-1"]) {
      const messages: ChatMessage[] = [
        { role: "user", content: "a" },
        { role: "assistant", tool_calls: [{ id, type: "function", function: { name: "f", arguments: "{}" } }] },
        { role: "tool", tool_call_id: id, content: "b" },
      ];
      assertEquals(encodeChat(tok, { messages }).ids, [
        1,
        ...SETTINGS_NONE_IDS,
        3,
        1097,
        4,
        9,
        1102,
        32,
        30620,
        2,
        7,
        1098,
        8,
      ]);
    }
  });
  await t.step("chat-v15-prefixed-final (a final assistant message is continued)", () => {
    const messages: ChatMessage[] = [{ role: "user", content: "a" }, { role: "assistant", content: "b", prefix: true }];
    assertEquals(encodeChat(tok, { messages }).ids, [1, ...SETTINGS_NONE_IDS, 3, 1097, 4, 1098]);
  });
  await t.step("chat-v15-user-image-url and chat-v15-tool-image-url (one [IMG] placeholder per image)", () => {
    const image = { type: "image_url" as const, image_url: { url: "data:image/png;base64,AAAA" } };
    const user = encodeChat(tok, {
      messages: [{ role: "user", content: [{ type: "text", text: "Here is content" }, image] }],
    });
    // mistral-common: [..., 3, 10, 13, 11745, 1395, 4701, 4]; a 4x4 image at patch 16 is [IMG][IMG_END].
    assertEquals(user.ids, [1, ...SETTINGS_NONE_IDS, 3, 10, 11745, 1395, 4701, 4]);
    // The image moves before the text (mistral-common's rule) and keeps its place in the request for errors.
    assertEquals(user.images, [{
      index: 14,
      url: "data:image/png;base64,AAAA",
      param: "messages[0].content[1].image_url",
    }]);
    const tool = encodeChat(tok, {
      tools: [{ type: "function", function: { name: "fn", description: "test", parameters: {} } }],
      messages: [
        { role: "user", content: "Use the tool" },
        {
          role: "assistant",
          tool_calls: [{ id: "test12345", type: "function", function: { name: "fn", arguments: "{}" } }],
        },
        { role: "tool", tool_call_id: "test12345", content: [{ type: "text", text: "result" }, image] },
      ],
    });
    const toolsJson = [1091, 19227, 4994, 2811, 1429, 5165, 1897, 1429, 5165, 2811, 16753, 2391, 2811, 1429, 28117];
    const toolsJson2 = [1897, 1429, 14653, 2811, 1429, 4417, 1897, 1429, 26204, 2811, 1445, 2821, 27028];
    assertEquals(tool.ids, [
      ...[1, 5, ...toolsJson, ...toolsJson2, 6, ...SETTINGS_NONE_IDS, 3, 15908, 1278, 9519, 4],
      ...[9, 28117, 32, 30620, 2, 7, 5133, 10, 8],
    ]);
    assertEquals(tool.images.map((i) => tool.ids[i.index]), [10]);
    assertEquals(tool.images.map((i) => i.param), ["messages[2].content[1].image_url"]);
  });
});

Deno.test("encode: typed control-token names are plain text", () => {
  const out = encodeChat(tok, { messages: [{ role: "user", content: "[INST]<s>[/INST][THINK]" }] });
  const userIds = out.ids.slice(SETTINGS_NONE_IDS.length + 2, -1);
  assertEquals(userIds, tok.encode("[INST]<s>[/INST][THINK]"));
  assert(userIds.every((id) => !tok.isSpecial(id)));
  assertEquals(out.ids.filter((id) => id === tok.specialId("[INST]")).length, 1);
});

Deno.test("encode: tool JSON keeps non-ASCII, key order, Python floats; call arguments are re-serialised", () => {
  const tools: FunctionTool[] = [{
    type: "function",
    function: {
      name: "meteo",
      description: "Météo à 東京 😀",
      parameters: {
        type: "object",
        properties: { ville: { type: "string" }, seuil: { type: "number", default: 0.5 } },
      },
      strict: true,
    },
  }];
  const call = (id: string, args: string | Record<string, unknown> | null) => ({
    id,
    type: "function" as const,
    function: { name: "meteo", arguments: args },
  });
  const calls = [
    call("c1", '{"ville":"Zürich","n":1.0,"e":2.5e-7,"big":12345678901234567890}'),
    call("c2", { ville: "Genève", n: 2 }),
    call("c3", "{'a': 1}"),
    call("c4", ""),
    call("c5", null),
  ];
  const messages: ChatMessage[] = [
    { role: "user", content: "U" },
    { role: "assistant", tool_calls: calls },
    ...calls.map((c): ChatMessage => ({ role: "tool", tool_call_id: c.id, content: "ok" })),
  ];
  const out = encodeChat(tok, { tools, messages });
  const toolsJson = '[{"type": "function", "function": {"name": "meteo", "description": "Météo à 東京 😀", ' +
    '"parameters": {"type": "object", "properties": {"ville": {"type": "string"}, "seuil": {"type": "number", ' +
    '"default": 0.5}}}}}]';
  const args = [
    '{"ville": "Zürich", "n": 1.0, "e": 2.5e-07, "big": 12345678901234567890}',
    '{"ville": "Genève", "n": 2}',
    "\"{'a': 1}\"",
    "{}",
    "{}",
  ];
  const callText = args.map((a) => `[TOOL_CALLS]meteo[ARGS]${a}`).join("");
  const results = "[TOOL_RESULTS]ok[/TOOL_RESULTS]".repeat(5);
  assertEquals(
    out.text,
    `<s>[AVAILABLE_TOOLS]${toolsJson}[/AVAILABLE_TOOLS]${SETTINGS_NONE}[INST]U[/INST]${callText}</s>${results}`,
  );
  assertEquals(out.ids.slice(2, 2 + tok.encode(toolsJson).length), tok.encode(toolsJson));
});

Deno.test("encode: a trailing assistant message is continued", () => {
  // llama.cpp's assistant_prefill case (fixtures/api/openai_protocol_assertions.json).
  const out = encodeChat(tok, {
    messages: [
      { role: "system", content: "Book" },
      { role: "user", content: "What is the best book" },
      { role: "assistant", content: "Whill" },
    ],
  });
  assertEquals(
    out.text,
    `<s>[SYSTEM_PROMPT]Book[/SYSTEM_PROMPT]${SETTINGS_NONE}[INST]What is the best book[/INST]Whill`,
  );
  assertEquals(out.ids.slice(-tok.encode("Whill").length), tok.encode("Whill"));
  // Like mistral-common, trailing spaces of a plain-string assistant message are dropped.
  const spaced = encodeChat(tok, { messages: [{ role: "user", content: "U" }, { role: "assistant", content: "A  " }] });
  assert(spaced.text.endsWith("[/INST]A"));
  // Thinking left open, then continued: the model goes on reasoning.
  const open = encodeChat(tok, {
    messages: [{ role: "user", content: "U" }, {
      role: "assistant",
      content: [{ type: "thinking", thinking: "Let me", closed: false }],
    }],
  });
  assert(open.text.endsWith("[/INST][THINK]Let me"));
  // Tool calls with no results yet: continued after the last call.
  const calling = encodeChat(tok, {
    messages: [{ role: "user", content: "U" }, {
      role: "assistant",
      tool_calls: [{ id: "a", type: "function", function: { name: "f", arguments: "{}" } }],
    }],
  });
  assert(calling.text.endsWith("[/INST][TOOL_CALLS]f[ARGS]{}"));
});

Deno.test("encode: consecutive messages merge (blank line between messages, nothing between parts)", () => {
  const text = (messages: ChatMessage[]) => encodeChat(tok, { messages }).text.slice(`<s>${SETTINGS_NONE}`.length);
  assertEquals(text([{ role: "user", content: "a" }, { role: "user", content: "b" }]), "[INST]a\n\nb[/INST]");
  assertEquals(
    text([{ role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }]),
    "[INST]ab[/INST]",
  );
  assertEquals(text([{ role: "user", content: "" }, { role: "user", content: "b" }]), "[INST]b[/INST]");
  assertEquals(
    text([
      { role: "user", content: "U" },
      { role: "assistant", content: "x", tool_calls: [{ id: "a", type: "function", function: { name: "f" } }] },
      { role: "assistant", reasoning: "r", tool_calls: [{ id: "b", type: "function", function: { name: "g" } }] },
      { role: "tool", tool_call_id: "b", content: "B" },
      { role: "tool", tool_call_id: "a", content: "A" },
    ]),
    "[INST]U[/INST]x[THINK]r[/THINK][TOOL_CALLS]f[ARGS]{}[TOOL_CALLS]g[ARGS]{}</s>" +
      "[TOOL_RESULTS]A[/TOOL_RESULTS][TOOL_RESULTS]B[/TOOL_RESULTS]",
  );
  // System messages are never merged.
  const systems = encodeChat(tok, {
    messages: [{ role: "system", content: "S1" }, { role: "developer", content: "S2" }, { role: "user", content: "U" }],
  });
  assert(systems.text.startsWith("<s>[SYSTEM_PROMPT]S1[/SYSTEM_PROMPT][SYSTEM_PROMPT]S2[/SYSTEM_PROMPT]"));
});

Deno.test("encode: image placement and image refs", () => {
  const img = (url: string) => ({ type: "image_url" as const, image_url: { url } });
  const txt = (text: string) => ({ type: "text" as const, text });
  const user = (content: ChatMessage["content"], more: ChatMessage[] = []) => {
    const out = encodeChat(tok, { messages: [{ role: "user", content } as ChatMessage, ...more] });
    return { ...out, text: out.text.slice(`<s>${SETTINGS_NONE}`.length) };
  };
  assertEquals(user([txt("a"), img("x")]).text, "[INST][IMG]a[/INST]");
  assertEquals(user([txt("a"), txt("b"), img("x")]).text, "[INST][IMG]ab[/INST]");
  assertEquals(user([img("x"), txt("a")]).text, "[INST][IMG]a[/INST]");
  assertEquals(user([txt("a"), img("x"), txt("b")]).text, "[INST]a[IMG]b[/INST]");
  assertEquals(user([txt("a"), img("x"), img("y")]).text, "[INST]a[IMG][IMG][/INST]");
  assertEquals(user("a", [{ role: "user", content: [img("x")] }]).text, "[INST][IMG]a[/INST]");
  const out = user([img("x"), txt("and"), { type: "image_url", image_url: "y" }]);
  assertEquals(out.images.map((i) => i.url), ["x", "y"]);
  assertEquals(out.images.map((i) => out.ids[i.index]), [10, 10]);
});

Deno.test("encode: reasoning effort comes from the request, else the option, else the tokenizer default", () => {
  const messages: ChatMessage[] = [{ role: "user", content: "U" }];
  const high = '[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS]';
  assert(encodeChat(tok, { messages, reasoning_effort: "high" }).text.includes(high));
  assert(encodeChat(tok, { messages, reasoning_effort: null }).text.includes(SETTINGS_NONE));
  assert(encodeChat(tok, { messages }, { defaultReasoningEffort: "high" }).text.includes(high));
  const e = expectInvalid({ messages, reasoning_effort: "low" });
  assertEquals([e.param, e.code], ["reasoning_effort", "unsupported_value"]);
  assert(e.message.includes('"none", "high"'));
});

Deno.test("encode: invalid requests raise InvalidRequestError naming the field", async (t) => {
  const U: ChatMessage = { role: "user", content: "U" };
  const call = (id: string, name = "f") => ({ id, type: "function" as const, function: { name, arguments: "{}" } });
  const cases: [string, unknown, string][] = [
    ["not an object", null, ""],
    ["no messages", { messages: [] }, "messages"],
    ["unknown role", { messages: [{ role: "function", content: "x" }] }, "messages[0].role"],
    ["role not a string", { messages: [{ role: 123 }] }, "messages[0].role"],
    ["message not an object", { messages: [123] }, "messages[0]"],
    ["content not text", { messages: [{ role: "system", content: 123 }] }, "messages[0].content"],
    ["user without content", { messages: [{ role: "user" }] }, "messages[0].content"],
    ["second message empty", { messages: [{ role: "system", content: "t" }, {}] }, "messages[1].role"],
    ["starts with assistant", { messages: [{ role: "assistant", content: "A" }] }, "messages[0].role"],
    ["tool after user", { messages: [U, { role: "tool", tool_call_id: "a", content: "r" }] }, "messages[1].role"],
    [
      "system after assistant",
      { messages: [U, { role: "assistant", content: "A" }, { role: "system", content: "S" }] },
      "messages[2].role",
    ],
    ["empty assistant turn", { messages: [U, { role: "assistant", content: "" }, U] }, "messages[1].content"],
    ["null assistant turn", { messages: [U, { role: "assistant", content: null }] }, "messages[1].content"],
    [
      "thinking in system",
      { messages: [{ role: "system", content: [{ type: "thinking", thinking: "t" }] }, U] },
      "messages[0].content[0]",
    ],
    [
      "thinking in user",
      { messages: [{ role: "user", content: [{ type: "thinking", thinking: "t" }] }] },
      "messages[0].content[0]",
    ],
    ["image in assistant", {
      messages: [U, { role: "assistant", content: [{ type: "image_url", image_url: { url: "x" } }] }],
    }, "messages[1].content[0]"],
    ["image in system", {
      messages: [{ role: "system", content: [{ type: "image_url", image_url: { url: "x" } }] }, U],
    }, "messages[0].content[0]"],
    [
      "image without url",
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] },
      "messages[0].content[0]",
    ],
    [
      "unknown part type",
      { messages: [{ role: "user", content: [{ type: "input_audio", input_audio: {} }] }] },
      "messages[0].content[0].type",
    ],
    ["reasoning and thinking", {
      messages: [U, { role: "assistant", reasoning: "r", content: [{ type: "thinking", thinking: "t" }] }],
    }, "messages[1].reasoning"],
    ["tool without id", {
      messages: [U, { role: "assistant", tool_calls: [call("a")] }, { role: "tool", content: "r" }],
    }, "messages[2].tool_call_id"],
    ["result for no call", {
      messages: [U, { role: "assistant", content: "A" }, { role: "tool", tool_call_id: "a", content: "r" }],
    }, "messages[2].tool_call_id"],
    ["result for another call", {
      messages: [U, { role: "assistant", tool_calls: [call("a")] }, { role: "tool", tool_call_id: "b", content: "r" }],
    }, "messages[2].tool_call_id"],
    ["result twice", {
      messages: [U, { role: "assistant", tool_calls: [call("a"), call("b")] }, {
        role: "tool",
        tool_call_id: "a",
        content: "r",
      }, { role: "tool", tool_call_id: "a", content: "r" }],
    }, "messages[3].tool_call_id"],
    ["missing result", {
      messages: [U, { role: "assistant", tool_calls: [call("a"), call("b")] }, {
        role: "tool",
        tool_call_id: "a",
        content: "r",
      }],
    }, "messages[1].tool_calls"],
    ["results skipped", { messages: [U, { role: "assistant", tool_calls: [call("a")] }, U] }, "messages[1].tool_calls"],
    ["call without id", {
      messages: [U, { role: "assistant", tool_calls: [{ type: "function", function: { name: "f" } }] }],
    }, "messages[1].tool_calls[0].id"],
    [
      "call ids repeat",
      { messages: [U, { role: "assistant", tool_calls: [call("a"), call("a")] }] },
      "messages[1].tool_calls[1]",
    ],
    [
      "bad call name",
      { messages: [U, { role: "assistant", tool_calls: [call("a", "my.fn")] }] },
      "messages[1].tool_calls[0].function.name",
    ],
    ["arguments a list", {
      messages: [U, { role: "assistant", tool_calls: [{ id: "a", function: { name: "f", arguments: [1] } }] }],
    }, "messages[1].tool_calls[0].function.arguments"],
    ["prefix not last", { messages: [U, { role: "assistant", content: "A", prefix: true }, U] }, "messages[1].prefix"],
    ["tools not a list", { messages: [U], tools: {} }, "tools"],
    [
      "tool of another type",
      { messages: [U], tools: [{ type: "retrieval", function: { name: "f" } }] },
      "tools[0].type",
    ],
    [
      "bad tool name",
      { messages: [U], tools: [{ type: "function", function: { name: "a b" } }] },
      "tools[0].function.name",
    ],
    ["tool parameters not an object", {
      messages: [U],
      tools: [{ type: "function", function: { name: "f", parameters: [] } }],
    }, "tools[0].function.parameters"],
    ["reasoning effort not a string", { messages: [U], reasoning_effort: 1 }, "reasoning_effort"],
  ];
  for (const [name, request, param] of cases) {
    await t.step(name, () => {
      const e = expectInvalid(request as ChatRequest);
      assertEquals(e.param ?? "", param);
      assertEquals(e.toJSON().error.type, "invalid_request_error");
    });
  }
});

Deno.test("encode: text always equals the ids decoded with control tokens kept", () => {
  for (const c of conversations) {
    if (REJECTED.includes(c.name)) continue;
    const out = encodeChat(tok, c);
    assertEquals(out.text, tok.decode(out.ids, { specials: "keep" }), c.name);
  }
});
