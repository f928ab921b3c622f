"""The OpenAI SDK against `formwork serve` on Gemma 3 270M (a base model behind Gemma's chat
template, a 262,144-token SentencePiece vocabulary): structured replies in every dialect parse
and validate."""

import json
import re

import jsonschema
from pydantic import BaseModel


class Person(BaseModel):
    name: str
    age: int
    city: str


PERSON_SCHEMA = Person.model_json_schema()

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}

USER = [{"role": "user", "content": "Describe a fictional person named Ada as JSON."}]


def test_the_model_is_gemma(client, model):
    assert "gemma" in model.lower()


def test_parse_pydantic_model(client, model):
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    completion = parse(model=model, messages=USER, response_format=Person, temperature=0, max_tokens=120)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Person)
    jsonschema.validate(json.loads(choice.message.content), PERSON_SCHEMA)


def test_json_schema_streamed_with_sampling(client, model):
    stream = client.chat.completions.create(
        model=model,
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}},
        temperature=1.0,
        seed=3,
        max_tokens=120,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), PERSON_SCHEMA)
    assert usage.completion_tokens > 0


def test_tool_call_required(client, model):
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=80,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_completions_with_a_regex_and_choices(client, model):
    date = client.completions.create(
        model=model, prompt="The date today is ", max_tokens=16, extra_body={"guided_regex": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"}
    )
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", date.choices[0].text)
    choice = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, extra_body={"guided_choice": ["Paris", "Lyon"]}
    )
    assert choice.choices[0].text in ("Paris", "Lyon")
