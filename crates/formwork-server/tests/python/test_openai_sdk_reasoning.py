"""The OpenAI Python SDK against `formwork serve --chat-template think.jinja
--reasoning-parser deepseek_r1` on the default model.

`tests/fixtures/think.jinja` is SmolLM2's ChatML with `<think>\\n` at the end of the
generation prompt (unless `chat_template_kwargs` sets `enable_thinking` to false), so the
reply starts inside a reasoning block, as DeepSeek-R1's does. `openai_sdk.rs` starts that
server and runs this file with `FORMWORK_BASE_URL`.
"""


import openai
import pytest

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


def ask(client, model, **kwargs):
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("max_tokens", 40)
    return client.chat.completions.create(model=model, **kwargs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reasoning_content_streamed_and_whole_agree(client, model, seed):
    whole = ask(client, model, seed=seed, temperature=0.8)
    message = whole.choices[0].message
    reasoning = message.model_extra.get("reasoning_content")
    assert reasoning, message
    assert "<think>" not in (message.content or "") and "</think>" not in (message.content or "")
    streamed_reasoning, streamed_content = "", ""
    for chunk in ask(client, model, seed=seed, temperature=0.8, stream=True):
        for choice in chunk.choices:
            streamed_reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            streamed_content += choice.delta.content or ""
    assert streamed_reasoning == reasoning
    assert streamed_content == (message.content or "")


def test_thinking_off_through_chat_template_kwargs(client, model):
    response = ask(client, model, seed=1, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = response.choices[0].message
    assert message.model_extra.get("reasoning_content") is None
    assert message.content


def test_reserved_template_kwargs_are_refused(client, model):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, model, extra_body={"chat_template_kwargs": {"messages": []}})
    assert info.value.param == "chat_template_kwargs.messages"


ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def test_structure_applies_after_the_reasoning_over_ten_seeds(client, model):
    import json

    import jsonschema

    for seed in range(10):
        response = ask(
            client, model, seed=seed, temperature=0.8, max_tokens=80,
            extra_body={"max_reasoning_tokens": 24},
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}},
        )
        choice = response.choices[0]
        message = choice.message
        # Thinking is not switched off by the schema: it comes first, free, then the document.
        assert message.model_extra.get("reasoning_content"), message
        assert choice.finish_reason == "stop", message
        jsonschema.validate(json.loads(message.content), ANSWER)


def test_structured_reasoning_streams_what_it_returns(client, model):
    kwargs = dict(
        seed=4, temperature=0.8, max_tokens=80, extra_body={"max_reasoning_tokens": 16},
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}},
    )
    message = ask(client, model, **kwargs).choices[0].message
    reasoning, content = "", ""
    for chunk in ask(client, model, stream=True, **kwargs):
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    assert (reasoning, content) == (message.model_extra.get("reasoning_content"), message.content)
