// The Vercel AI SDK's default OpenAI provider (`openai(model)`, the Responses API)
// against `formwork serve`: `generateObject` with a zod schema, `streamText`, a required
// tool call; and `openai.chat(model)` (chat completions) for comparison.
//
// Run by `crates/formwork-server/tests/vercel_ai_sdk.rs` with `FORMWORK_BASE_URL` (the
// server's base URL with `/v1`) and `FORMWORK_NODE_MODULES` (the folder holding `ai`,
// `@ai-sdk/openai` and `zod`). Exits non-zero on the first failed check.
const assert = require("node:assert/strict");
const { createRequire } = require("node:module");

globalThis.AI_SDK_LOG_WARNINGS = false;
const load = createRequire(process.env.FORMWORK_NODE_MODULES + "/");
const { generateObject, generateText, streamText } = load("ai");
const { createOpenAI } = load("@ai-sdk/openai");
const { z } = load("zod");

async function main() {
  const openai = createOpenAI({ baseURL: process.env.FORMWORK_BASE_URL, apiKey: "unused" });
  const models = await (await fetch(process.env.FORMWORK_BASE_URL + "/models")).json();
  const model = openai(models.data[0].id);

  // generateObject: the zod schema goes as `text.format` (json_schema); the object is valid.
  const City = z.object({
    name: z.string().max(20),
    country: z.string().max(20),
    population: z.number().int(),
  });
  const { object, finishReason, usage } = await generateObject({
    model,
    schema: City,
    prompt: "Describe Paris.",
    temperature: 0,
    maxOutputTokens: 80,
  });
  assert.equal(finishReason, "stop");
  City.parse(object);
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
  console.log("generateObject:", JSON.stringify(object));

  // streamText: the deltas add up to what generateText returns (greedy: the Responses
  // provider sends no seed).
  const settings = { model, prompt: "Say hello.", temperature: 0, maxOutputTokens: 24 };
  const whole = await generateText(settings);
  const stream = streamText(settings);
  let text = "";
  for await (const delta of stream.textStream) {
    text += delta;
  }
  assert.ok(text.length > 0);
  assert.equal(text, whole.text);
  assert.equal(await stream.finishReason, whole.finishReason);
  console.log("streamText:", JSON.stringify(text));

  // A tool the model must call: the call comes back with arguments of its schema.
  const result = await generateText({
    model,
    prompt: "What is the weather like in Paris?",
    tools: {
      get_weather: {
        description: "Get the current weather in a city.",
        inputSchema: z.object({ city: z.string().max(20) }),
      },
    },
    toolChoice: "required",
    temperature: 0,
    maxOutputTokens: 60,
  });
  assert.equal(result.toolCalls.length, 1, JSON.stringify(result.toolCalls));
  assert.equal(result.toolCalls[0].toolName, "get_weather");
  assert.equal(typeof result.toolCalls[0].input.city, "string");
  console.log("tool call:", JSON.stringify(result.toolCalls[0].input));

  // The chat-completions provider, `openai.chat(model)`, on the same server.
  const chat = await generateObject({
    model: openai.chat(models.data[0].id),
    schema: City,
    prompt: "Describe Rome.",
    temperature: 0,
    maxOutputTokens: 80,
  });
  City.parse(chat.object);
  console.log("openai.chat generateObject:", JSON.stringify(chat.object));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
