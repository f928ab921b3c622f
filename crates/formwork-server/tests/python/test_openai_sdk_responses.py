"""The Responses API (`POST /v1/responses`) of `formwork serve` through the official
OpenAI Python SDK: `client.responses.create` (whole and streamed), `responses.parse`,
function tools over two turns, `metadata.structure`, and refusals.

Run by `crates/formwork-server/tests/openai_sdk.rs` against the default model, with
`FORMWORK_BASE_URL` set to the server's base URL (with `/v1`), like `test_openai_sdk.py`.
Generations are short, so the tests are about the protocol.
"""

import json
import re

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}

# The events a streamed text response sends, in order (deltas may repeat).
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def create(client, model, **kwargs):
    kwargs.setdefault("input", "What is the weather like in Paris?")
    kwargs.setdefault("max_output_tokens", 24)
    return client.responses.create(model=model, **kwargs)


def collapse(types):
    """Event types with runs of the same type collapsed into one."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def test_create_plain(client, model):
    response = create(client, model, temperature=0, instructions="Answer in one sentence.")
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    assert response.instructions == "Answer in one sentence."
    assert response.error is None
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    assert response.output_text == message.content[0].text
    assert response.output_text
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_max_output_tokens_makes_an_incomplete_response(client, model):
    response = create(client, model, max_output_tokens=3, extra_body={"ignore_eos": True})
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.usage.output_tokens == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_events_in_order_and_deltas_add_up(client, model, seed):
    kwargs = dict(temperature=0.8, extra_body={"seed": seed})
    whole = create(client, model, **kwargs)
    events = list(create(client, model, stream=True, **kwargs))
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == ("response.completed" if whole.status == "completed" else "response.incomplete")
    assert collapse(types[:-1]) == TEXT_EVENTS, types
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == deltas
    assert last.response.output_text == deltas
    assert last.response.usage.output_tokens == whole.usage.output_tokens
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {last.response.output[0].id}


def test_stream_helper_gives_the_final_response(client, model):
    # The helper wants `response.completed`: a choice always completes.
    structure = {"type": "choice", "choices": ["hello", "hi"]}
    with client.responses.stream(
        model=model, input="Say hello.", temperature=0, metadata={"structure": json.dumps(structure)}
    ) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text in ("hello", "hi")
    assert "".join(texts) == final.output_text


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population: int


def test_parse_with_a_pydantic_model(client, model):
    response = client.responses.parse(
        model=model,
        input="Describe Paris.",
        text_format=City,
        max_output_tokens=80,
        temperature=0,
    )
    assert response.status == "completed", response
    parsed = response.output_parsed
    assert isinstance(parsed, City)
    assert response.text.format.type == "json_schema"


def test_json_schema_over_ten_seeds_streamed_and_whole(client, model):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "score": {"type": "integer"}},
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    text = {"format": {"type": "json_schema", "name": "verdict", "schema": schema, "strict": True}}
    for seed in range(10):
        kwargs = dict(text=text, temperature=1.0, max_output_tokens=40, extra_body={"seed": seed})
        whole = create(client, model, **kwargs)
        jsonschema.validate(json.loads(whole.output_text), schema)
        streamed = "".join(
            e.delta for e in create(client, model, stream=True, **kwargs) if e.type == "response.output_text.delta"
        )
        assert streamed == whole.output_text


def test_json_object(client, model):
    response = create(client, model, text={"format": {"type": "json_object"}}, max_output_tokens=40, temperature=0)
    assert isinstance(json.loads(response.output_text), dict)


def test_function_call_required_then_its_output_sent_back(client, model):
    first = create(client, model, tools=[WEATHER_TOOL], tool_choice="required", temperature=0, max_output_tokens=60)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert call.status == "completed"
    arguments = json.loads(call.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["parameters"])
    assert first.tool_choice == "required"
    assert first.tools[0].name == "get_weather"

    second = create(
        client,
        model,
        tools=[WEATHER_TOOL],
        temperature=0,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What is the weather like in Paris?"}]},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "sunny"})},
        ],
    )
    assert second.status in ("completed", "incomplete")
    assert second.output, second


def test_function_call_streamed_arguments_add_up(client, model):
    kwargs = dict(tools=[WEATHER_TOOL], tool_choice={"type": "function", "name": "get_weather"}, temperature=0.7, max_output_tokens=60, extra_body={"seed": 5})
    whole = create(client, model, **kwargs)
    events = list(create(client, model, stream=True, **kwargs))
    types = collapse([e.type for e in events])
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ], types
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments == whole.output[0].arguments
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"


def test_metadata_structure(client, model):
    structure = {"type": "regex", "pattern": "[0-9]{3}-[0-9]{4}"}
    response = create(client, model, metadata={"structure": json.dumps(structure)}, temperature=0)
    assert re.fullmatch(structure["pattern"], response.output_text), response.output_text
    assert response.metadata == {"structure": json.dumps(structure)}


def test_metadata_structure_as_object_is_echoed_as_a_string(client, model):
    structure = {"type": "choice", "choices": ["red", "green"]}
    response = create(client, model, extra_body={"metadata": {"structure": structure}}, temperature=0)
    assert response.output_text in ("red", "green")
    assert json.loads(response.metadata["structure"]) == structure


def error_of(call):
    with pytest.raises(openai.BadRequestError) as info:
        call()
    return info.value.body


def test_unknown_item_type_is_a_400_naming_it(client, model):
    body = error_of(lambda: create(client, model, input=[
        {"role": "user", "content": "hi"},
        {"type": "web_search_call", "id": "ws_1"},
    ]))
    assert body["param"] == "input[1].type"
    assert body["type"] == "invalid_request_error"


def test_previous_response_id_is_a_400(client, model):
    body = error_of(lambda: create(client, model, previous_response_id="resp_123"))
    assert body["param"] == "previous_response_id"
    assert "store" in body["message"]


def test_hosted_tools_and_bad_schemas_are_400s(client, model):
    body = error_of(lambda: create(client, model, tools=[{"type": "web_search"}]))
    assert body["param"] == "tools[0].type"
    body = error_of(lambda: create(client, model, text={"format": {"type": "json_schema", "name": "x", "schema": []}}))
    assert body["param"] == "text.format.schema"
    body = error_of(lambda: create(client, model, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]))
    assert body["param"] == "input[0].content[0].type"
