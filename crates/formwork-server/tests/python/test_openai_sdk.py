"""End-to-end tests of `formwork serve` through the official OpenAI Python SDK.

The server's base URL (with `/v1`) comes from the environment:

    FORMWORK_BASE_URL=http://127.0.0.1:8000/v1 python -m pytest -q test_openai_sdk.py

`FORMWORK_MODEL` picks the model name (default: the first of `GET /v1/models`).
`crates/formwork-server/tests/openai_sdk.rs` creates a virtualenv with
`openai pydantic pytest jsonschema`, starts the server on the default model and runs
this file. Every generation is greedy (`temperature=0`) and short, so the tests are
about the protocol, not about what a 135M-parameter model knows.
"""

import json
import os
import re
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

WEATHER_TOOL = {
    "type": "function",
    "function": {
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
    },
}

TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
            "required": ["zone"],
        },
    },
}

QUESTION = [{"role": "user", "content": "What is the weather like in Paris?"}]


@pytest.fixture(scope="session")
def base_url():
    url = os.environ.get("FORMWORK_BASE_URL")
    if not url:
        pytest.fail(
            "FORMWORK_BASE_URL is not set: start `formwork serve` and set it to the "
            "server's base URL, e.g. http://127.0.0.1:8000/v1"
        )
    return url.rstrip("/")


def chat(client, model, **kwargs):
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_tokens", 24)
    return client.chat.completions.create(model=model, **kwargs)


def raw_post(url, body):
    """POSTs raw bytes (the SDK cannot send malformed JSON); returns status, headers, body."""
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def check_usage(usage):
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# ---- models ----------------------------------------------------------------------------


def test_models_list(client, model):
    models = client.models.list()
    assert models.object == "list"
    assert model in [m.id for m in models.data]
    assert all(m.object == "model" for m in models.data)


# ---- chat completions ------------------------------------------------------------------


def test_create(client, model):
    completion = chat(client, model)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model
    assert completion.created > 1_700_000_000
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert not choice.message.tool_calls
    assert choice.finish_reason in ("stop", "length")
    check_usage(completion.usage)
    assert completion.usage.completion_tokens <= 24


def test_max_tokens_gives_length(client, model):
    completion = chat(client, model, max_tokens=1)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 1


def test_n_choices(client, model):
    completion = chat(client, model, n=2, temperature=1.0, seed=7, max_tokens=8)
    assert [c.index for c in completion.choices] == [0, 1]


def test_stream_with_usage(client, model):
    whole = chat(client, model, seed=1)
    stream = chat(client, model, seed=1, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len(chunks) >= 3
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)

    *choice_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    check_usage(usage_chunk.usage)
    assert all(c.usage is None for c in choice_chunks)

    assert choice_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in choice_chunks]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert usage_chunk.usage.completion_tokens == whole.usage.completion_tokens


def test_stream_without_usage(client, model):
    chunks = list(chat(client, model, stream=True, max_tokens=4))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks)


def test_logprobs(client, model):
    completion = chat(client, model, logprobs=True, top_logprobs=3, max_tokens=4)
    content = completion.choices[0].logprobs.content
    assert 1 <= len(content) <= 4
    for entry in content:
        assert entry.logprob <= 0
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        assert len(entry.top_logprobs) == 3
    # Greedy: the chosen token is the most likely one.
    assert content[0].logprob == pytest.approx(content[0].top_logprobs[0].logprob, abs=1e-4)


# ---- structured output -----------------------------------------------------------------


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: int = Field(ge=0, le=100)


def test_parse_pydantic_model(client, model):
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    completion = parse(
        model=model,
        messages=[{"role": "user", "content": "Describe the city of Paris as JSON."}],
        response_format=City,
        temperature=0,
        max_tokens=200,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, City)
    assert City.model_validate_json(message.content) == message.parsed


def test_response_format_json_object(client, model):
    completion = chat(client, model, response_format={"type": "json_object"}, max_tokens=100)
    choice = completion.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:
        assert choice.message.content.startswith("{")


def test_metadata_structure_as_string(client, model):
    structure = {"type": "choice", "choices": ["yes", "no"]}
    completion = chat(
        client,
        model,
        messages=[{"role": "user", "content": "Is Paris in France?"}],
        metadata={"structure": json.dumps(structure)},
    )
    assert completion.choices[0].message.content in ("yes", "no")
    assert completion.choices[0].finish_reason == "stop"


def test_metadata_structure_as_object(client, model):
    completion = chat(
        client,
        model,
        extra_body={"metadata": {"structure": {"type": "regex", "pattern": "[0-9]{3}-[0-9]{4}"}}},
    )
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", completion.choices[0].message.content)


def test_metadata_structure_json_schema(client, model):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "boolean"}},
        "required": ["answer"],
    }
    completion = chat(
        client,
        model,
        metadata={"structure": json.dumps({"type": "json_schema", "schema": schema})},
        max_tokens=40,
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_guided_regex(client, model):
    completion = chat(client, model, extra_body={"guided_regex": "(sunny|rainy|cloudy)"})
    assert completion.choices[0].message.content in ("sunny", "rainy", "cloudy")


def test_guided_choice(client, model):
    choices = ["Paris", "London", "Rome"]
    completion = chat(client, model, extra_body={"guided_choice": choices})
    assert completion.choices[0].message.content in choices


def test_guided_choice_streamed(client, model):
    choices = ["alpha beta gamma", "delta epsilon"]
    chunks = list(chat(client, model, stream=True, extra_body={"guided_choice": choices}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) in choices


# ---- grammars --------------------------------------------------------------------------

# Nested lists of digits, in both syntaxes: a language no regex can describe.
LISTS_GBNF = 'root ::= "[" (item ("," item)*)? "]"\nitem ::= root | [0-9]\n'
LISTS_LARK = 'start: "[" [item ("," item)*] "]"\nitem: start | /[0-9]/\n'


def is_nested_list(text):
    """Whether `text` is a list of digits and lists, by folding innermost lists to a digit."""
    while True:
        folded = re.sub(r"\[(?:[0-9](?:,[0-9])*)?\]", "0", text)
        if folded == text:
            return text == "0"
        text = folded


def check_nested_list(choice, text):
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "stop":
        assert is_nested_list(text), text


@pytest.mark.parametrize(
    "extra_body",
    [
        {"grammar": LISTS_GBNF},
        {"guided_grammar": LISTS_GBNF},
        {"guided_grammar": LISTS_LARK},
        {"structured_outputs": {"grammar": LISTS_LARK}},
        {"metadata": {"structure": {"type": "grammar", "syntax": "lark", "grammar": LISTS_LARK}}},
    ],
)
def test_grammar_fields(client, model, extra_body):
    messages = [{"role": "user", "content": "Write a nested list of digits."}]
    completion = chat(client, model, messages=messages, max_tokens=60, extra_body=extra_body)
    choice = completion.choices[0]
    check_nested_list(choice, choice.message.content)
    stream = chat(client, model, messages=messages, max_tokens=60, stream=True, extra_body=extra_body)
    chunks = [c for c in stream if c.choices]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == choice.message.content


def test_grammar_through_sdk_metadata(client, model):
    structure = {"type": "grammar", "syntax": "gbnf", "grammar": LISTS_GBNF}
    messages = [{"role": "user", "content": "Write a nested list of digits."}]
    completion = chat(client, model, messages=messages, max_tokens=60, metadata={"structure": json.dumps(structure)})
    check_nested_list(completion.choices[0], completion.choices[0].message.content)
    # Completions take llama.cpp's field through `extra_body`.
    completion = client.completions.create(
        model=model, prompt="A nested list:", max_tokens=60, temperature=0, extra_body={"grammar": LISTS_GBNF}
    )
    check_nested_list(completion.choices[0], completion.choices[0].text)


def test_bad_grammar_names_the_cause(client, model):
    error = bad_request(lambda: chat(client, model, extra_body={"grammar": 'root ::= "a'}))
    assert error.param == "grammar"
    assert "gbnf grammar, line 1, column" in error.message
    error = bad_request(lambda: chat(client, model, extra_body={"structured_outputs": {"grammar": "start: item"}}))
    assert error.param == "structured_outputs.grammar"
    assert "`item`" in error.message


# ---- tool calls ------------------------------------------------------------------------


def check_tool_calls(calls, tools):
    assert calls, "no tool_calls"
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_")
        assert call.function.name in schemas
        assert isinstance(call.function.arguments, str)
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    assert len({c.id for c in calls}) == len(calls)


def test_tool_choice_required(client, model):
    completion = chat(client, model, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=80)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    check_tool_calls(choice.message.tool_calls, [WEATHER_TOOL])
    assert choice.message.content is None


def test_tool_choice_required_several_tools(client, model):
    tools = [WEATHER_TOOL, TIME_TOOL]
    completion = chat(client, model, tools=tools, tool_choice="required", max_tokens=120)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    check_tool_calls(choice.message.tool_calls, tools)


def test_tool_choice_named_function(client, model):
    tools = [WEATHER_TOOL, TIME_TOOL]
    completion = chat(
        client,
        model,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=60,
    )
    calls = completion.choices[0].message.tool_calls
    check_tool_calls(calls, tools)
    assert [c.function.name for c in calls] == ["get_time"]


def test_tool_call_streamed(client, model):
    chunks = list(chat(client, model, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=80, stream=True))
    calls = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.id is not None:
                assert delta.index not in calls
                assert delta.type == "function"
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            calls[delta.index]["arguments"] += delta.function.arguments or ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER_TOOL["function"]["parameters"])


def streamed_tool_calls(chunks):
    """The calls a stream's `tool_calls` deltas add up to, by index."""
    calls = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.id is not None:
                calls[delta.index] = {"name": delta.function.name, "arguments": ""}
            calls[delta.index]["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def test_cut_forced_call_is_a_tool_call(client, model):
    # Cut by max_tokens: still a tool_calls entry (truncated arguments), never content, and
    # the stream agrees (issue 15: it used to come back as content holding our JSON).
    for max_tokens in (10, 14, 18):
        # Budgets below the shortest call, so without steering it to end valid (which would
        # refuse them).
        kwargs = dict(tools=[WEATHER_TOOL], tool_choice="required", max_tokens=max_tokens,
                      extra_body={"end_valid": False})
        choice = chat(client, model, **kwargs).choices[0]
        assert choice.finish_reason == "length"
        assert choice.message.content is None
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls or []]
        assert all(c["name"] == "get_weather" for c in calls)
        chunks = [c for c in chat(client, model, stream=True, **kwargs) if c.choices]
        assert streamed_tool_calls(chunks) == calls
        assert chunks[-1].choices[0].finish_reason == "length"
    assert calls, "no cut call had its name read"


def test_tool_choice_allowed_tools(client, model):
    tools = [WEATHER_TOOL, TIME_TOOL]
    allowed = {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}}
    completion = chat(client, model, tools=tools, tool_choice=allowed, max_tokens=60)
    calls = completion.choices[0].message.tool_calls
    check_tool_calls(calls, tools)
    assert {c.function.name for c in calls} == {"get_time"}
    allowed["allowed_tools"]["mode"] = "auto"
    completion = chat(client, model, tools=tools, tool_choice=allowed, max_tokens=30)
    for call in completion.choices[0].message.tool_calls or []:
        assert call.function.name == "get_time"
    allowed["allowed_tools"]["tools"] = [{"type": "function", "function": {"name": "nope"}}]
    error = bad_request(lambda: chat(client, model, tools=tools, tool_choice=allowed))
    assert error.param == "tool_choice"


def test_empty_parameters_are_an_object(client, model):
    echo = {"type": "function", "function": {"name": "echo", "parameters": {}}}
    completion = chat(client, model, tools=[echo], tool_choice="required", max_tokens=60)
    choice = completion.choices[0]
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "echo"
    if choice.finish_reason == "tool_calls":
        assert isinstance(json.loads(call.function.arguments), dict)
    else:
        assert call.function.arguments.startswith("{")


def test_tool_result_conversation(client, model):
    messages = QUESTION + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees and sunny"},
    ]
    completion = chat(client, model, messages=messages, tools=[WEATHER_TOOL], tool_choice="none")
    assert completion.choices[0].message.content
    assert not completion.choices[0].message.tool_calls


# ---- completions -----------------------------------------------------------------------


def test_completions(client, model):
    completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert completion.id.startswith("cmpl-")
    assert completion.object == "text_completion"
    [choice] = completion.choices
    assert isinstance(choice.text, str) and choice.text
    assert choice.finish_reason in ("stop", "length")
    check_usage(completion.usage)

    stream = client.completions.create(
        model=model,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    check_usage(chunks[-1].usage)
    assert "".join(c.choices[0].text for c in chunks[:-1]) == choice.text


def test_completions_structured(client, model):
    completion = client.completions.create(
        model=model,
        prompt="Q: Is the sky blue? A:",
        max_tokens=5,
        temperature=0,
        extra_body={"guided_choice": [" yes", " no"]},
    )
    assert completion.choices[0].text in (" yes", " no")


def test_completions_logprobs(client, model):
    completion = client.completions.create(model=model, prompt="One, two,", max_tokens=3, temperature=0, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)


# ---- errors ----------------------------------------------------------------------------


def bad_request(call):
    with pytest.raises(openai.BadRequestError) as info:
        call()
    error = info.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert isinstance(error.message, str)
    return error


def test_bad_temperature(client, model):
    error = bad_request(lambda: chat(client, model, temperature=5))
    assert error.param == "temperature"


def test_bad_n(client, model):
    error = bad_request(lambda: chat(client, model, n=0))
    assert error.param == "n"


def test_image_content_is_refused(client, model):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    error = bad_request(lambda: chat(client, model, messages=messages))
    assert "Image content is not supported" in error.message
    assert error.param == "messages[0].content[1].type"


def test_wrong_type_names_the_field(client, model):
    error = bad_request(lambda: chat(client, model, extra_body={"top_k": "forty"}))
    assert error.param == "top_k"


def test_two_structures_conflict(client, model):
    error = bad_request(
        lambda: chat(client, model, response_format={"type": "json_object"}, extra_body={"guided_regex": "a+"})
    )
    assert "response_format" in error.message and "guided_regex" in error.message


def test_bad_structures(client, model):
    for structure, param in [
        ({"type": "grammar"}, "metadata.structure.grammar"),
        ({"type": "cfg"}, "metadata.structure.type"),
        ({"type": "choice", "choices": []}, "metadata.structure.choices"),
        ({"type": "json_schema"}, "metadata.structure.schema"),
        ({"type": "choice", "choices": ["a", 1]}, "metadata.structure.choices[1]"),
    ]:
        error = bad_request(lambda: chat(client, model, metadata={"structure": json.dumps(structure)}))
        assert error.param == param, structure


def test_tool_choice_without_tools(client, model):
    error = bad_request(lambda: chat(client, model, tool_choice="required"))
    assert error.param == "tool_choice"


def test_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert info.value.code == "model_not_found"


def test_malformed_json_body(base_url):
    status, _, body = raw_post(f"{base_url}/chat/completions", b'{"messages": [')
    assert status == 400
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]


def test_wrong_type_raw(base_url, model):
    body = {"model": model, "messages": [{"role": "user", "content": 5}]}
    status, _, raw = raw_post(f"{base_url}/chat/completions", json.dumps(body).encode())
    assert status == 400
    assert json.loads(raw)["error"]["param"] == "messages[0].content"


def test_raw_sse_framing(base_url, model):
    body = {"model": model, "messages": QUESTION, "max_tokens": 3, "stream": True}
    status, headers, raw = raw_post(f"{base_url}/chat/completions", json.dumps(body).encode())
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    raw = raw.decode()
    assert raw.endswith("data: [DONE]\n\n")
    # Keep-alive comments (": ...") are allowed between events.
    events = [e for e in raw.split("\n\n") if e and not e.startswith(":")]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert event.startswith("data: ")
        json.loads(event[len("data: ") :])


# ---- composed constraints: structural tags ---------------------------------------------

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}

# Two worked examples teach even the default model to write the tag now and then.
TAGGED = [
    {"role": "user", "content": "Biggest city in Italy?"},
    {"role": "assistant", "content": 'Let me answer. <answer>{"city": "Rome", "population": 2800000}</answer>'},
    {"role": "user", "content": "Biggest city in Spain?"},
    {"role": "assistant", "content": 'Sure. <answer>{"city": "Madrid", "population": 3300000}</answer>'},
    {"role": "user", "content": "Biggest city in France?"},
]

STRUCTURAL_TAG = {
    "type": "structural_tag",
    "structures": [{"begin": "<answer>", "schema": CITY, "end": "</answer>"}],
    "triggers": ["<answer>"],
}


def tagged_segments(text):
    """The bodies between `<answer>` and `</answer>`; a complete reply closes every one."""
    bodies = []
    rest = text
    while "<answer>" in rest:
        rest = rest.split("<answer>", 1)[1]
        assert "</answer>" in rest, f"an unclosed segment: {text!r}"
        body, rest = rest.split("</answer>", 1)
        bodies.append(body)
    return bodies


def test_structural_tag_segments_validate_over_ten_seeds(client, model):
    tagged = 0
    for seed in range(10):
        completion = chat(
            client, model, messages=TAGGED, seed=seed, temperature=0.8, max_tokens=80,
            response_format=STRUCTURAL_TAG,
        )
        choice = completion.choices[0]
        if choice.finish_reason != "stop":
            continue
        for body in tagged_segments(choice.message.content):
            jsonschema.validate(json.loads(body), CITY)
            tagged += 1
    assert tagged >= 3, "the model wrote too few tags for the check to mean anything"


@pytest.mark.parametrize(
    "extra_body",
    [
        {"structured_outputs": {"structural_tag": json.dumps({k: v for k, v in STRUCTURAL_TAG.items() if k != "type"})}},
        {"metadata": {"structure": json.dumps(STRUCTURAL_TAG)}},
    ],
)
def test_structural_tag_dialects_stream_what_they_return(client, model, extra_body):
    whole = chat(client, model, messages=TAGGED, seed=1, temperature=0.8, max_tokens=80, extra_body=extra_body)
    chunks = list(
        chat(client, model, messages=TAGGED, seed=1, temperature=0.8, max_tokens=80, extra_body=extra_body, stream=True)
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    for body in tagged_segments(streamed):
        jsonschema.validate(json.loads(body), CITY)


def test_structural_tag_errors_name_the_field(client, model):
    bad = dict(STRUCTURAL_TAG, triggers=["<nope>"])
    with pytest.raises(openai.BadRequestError) as error:
        chat(client, model, messages=TAGGED, response_format=bad)
    assert error.value.body["param"] == "response_format.triggers[0]"


# ---- composed constraints: tools in auto mode ------------------------------------------

# Worked examples in the default model's (generic) call syntax, and one plain answer.
CALLING = [
    {"role": "system", "content": 'To call a tool, write <tool_call>{"name": NAME, "arguments": {...}}</tool_call>.'},
    {"role": "user", "content": "Weather in Rome?"},
    {"role": "assistant", "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}</tool_call>'},
    {"role": "user", "content": "What time is it in London?"},
    {"role": "assistant", "content": '<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}</tool_call>'},
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": '{"answer": "Hello!"}'},
]

ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 60}},
    "required": ["answer"],
    "additionalProperties": False,
}


# ---- strict and lenient schemas, refusal ------------------------------------------------

# `uniqueItems` is a keyword Formwork does not enforce.
UNIQUE_TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True}},
    "required": ["tags"],
    "additionalProperties": False,
}


def test_auto_tool_calls_have_valid_arguments_over_ten_seeds(client, model):
    tools = [WEATHER_TOOL, TIME_TOOL]
    calls = 0
    for seed in range(10):
        question = ["Weather in Paris?", "What time is it in Berlin?"][seed % 2]
        completion = chat(
            client, model, messages=CALLING[:5] + [{"role": "user", "content": question}],
            tools=tools, tool_choice="auto", seed=seed, temperature=0.8, max_tokens=80,
        )
        choice = completion.choices[0]
        if choice.message.tool_calls:
            if choice.finish_reason == "tool_calls":
                check_tool_calls(choice.message.tool_calls, tools)
            calls += len(choice.message.tool_calls)
    assert calls >= 3, "the model made too few calls for the check to mean anything"


def test_auto_tool_calls_stream_what_they_return(client, model):
    kwargs = dict(
        messages=CALLING + [{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto", seed=3, temperature=0.8, max_tokens=80,
    )
    whole = chat(client, model, **kwargs).choices[0]
    calls = {}
    content = ""
    for chunk in chat(client, model, stream=True, **kwargs):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        content += delta.content or ""
        for d in delta.tool_calls or []:
            if d.id is not None:
                calls[d.index] = {"name": d.function.name, "arguments": ""}
            calls[d.index]["arguments"] += d.function.arguments or ""
    assert (content or None) == whole.message.content
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls or []
    ]


def test_response_format_with_auto_tools_is_a_call_or_a_document(client, model):
    tools = [WEATHER_TOOL, TIME_TOOL]
    calls = documents = 0
    for seed in range(10):
        question = ["Weather in Paris?", "Say goodbye.", "Tell me a fact about cats."][seed % 3]
        completion = chat(
            client, model, messages=CALLING + [{"role": "user", "content": question}],
            tools=tools, tool_choice="auto", seed=seed, temperature=0.8, max_tokens=80,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}},
        )
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            continue
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert not (choice.message.content or "").strip()
            check_tool_calls(choice.message.tool_calls, tools)
            calls += 1
        else:
            jsonschema.validate(json.loads(choice.message.content), ANSWER)
            documents += 1
    assert calls + documents >= 5


def test_message_refusal_is_null(client, model, base_url):
    response = chat(client, model)
    assert response.choices[0].message.refusal is None
    body = {"model": model, "messages": QUESTION, "max_tokens": 2}
    status, _, raw = raw_post(f"{base_url}/chat/completions", json.dumps(body).encode())
    assert status == 200
    message = json.loads(raw)["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None


def test_strict_schema_with_unenforced_keyword_is_refused(client, model):
    for strict in [True, None]:
        spec = {"name": "tags", "schema": UNIQUE_TAGS}
        if strict is not None:
            spec["strict"] = strict
        error = bad_request(
            lambda: chat(client, model, response_format={"type": "json_schema", "json_schema": spec})
        )
        assert error.param == "response_format.json_schema.schema"
        assert "uniqueItems" in error.message and "/properties/tags" in error.message


def test_lenient_schema_warns_and_still_validates_the_rest(client, model):
    response = chat(
        client,
        model,
        max_tokens=40,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "tags", "schema": UNIQUE_TAGS, "strict": False},
        },
    )
    warnings = response.model_extra["warnings"]
    assert len(warnings) == 1 and "`uniqueItems` at /properties/tags" in warnings[0]
    if response.choices[0].finish_reason == "stop":
        document = json.loads(response.choices[0].message.content)
        # Everything but the dropped keyword holds.
        jsonschema.validate(document, {k: v for k, v in UNIQUE_TAGS.items()} | {
            "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}}
        })
    stream = chat(
        client,
        model,
        max_tokens=40,
        stream=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "tags", "schema": UNIQUE_TAGS, "strict": False},
        },
    )
    first = next(iter(stream))
    assert first.choices == [] and first.model_extra["warnings"] == warnings


def test_lenient_tool_parameters(client, model):
    tool = {
        "type": "function",
        "function": {"name": "tag", "parameters": UNIQUE_TAGS},
    }
    error = bad_request(lambda: chat(client, model, tools=[tool], tool_choice="required"))
    assert "uniqueItems" in error.message and "`tag`" in error.message
    tool["function"]["strict"] = False
    response = chat(client, model, max_tokens=60, tools=[tool], tool_choice="required")
    assert any("uniqueItems" in w for w in response.model_extra["warnings"])


def test_whitespace_pattern(client, model):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    response = chat(
        client,
        model,
        max_tokens=30,
        extra_body={"structured_outputs": {"json": schema, "whitespace_pattern": " "}},
    )
    text = response.choices[0].message.content
    assert text.startswith('{ "a" : '), text
    error = bad_request(
        lambda: chat(client, model, extra_body={"structured_outputs": {"json": schema, "whitespace_pattern": "("}})
    )
    assert error.param == "structured_outputs.whitespace_pattern"
