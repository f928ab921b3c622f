"""The Responses API on a reasoning model, through the official OpenAI Python SDK:
`formwork serve --chat-template think.jinja --reasoning-parser deepseek_r1` on the
default model (see `test_openai_sdk_reasoning.py`). The reasoning is a `reasoning`
output item before the answer's `message`, whole or streamed.
"""

import json

import jsonschema
import pytest

SCHEMA = {
    "type": "object",
    "properties": {"prime": {"type": "boolean"}},
    "required": ["prime"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reasoning_item_then_structured_message_streamed_and_whole(client, model, seed):
    kwargs = dict(
        model=model,
        input="Is 7 a prime number?",
        max_output_tokens=80,
        temperature=0.8,
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True}},
        extra_body={"seed": seed, "max_reasoning_tokens": 16},
    )
    whole = client.responses.create(**kwargs)
    assert whole.status == "completed", whole
    reasoning, message = whole.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.summary == []
    assert reasoning.content[0].type == "reasoning_text" and reasoning.content[0].text
    assert "</think>" not in reasoning.content[0].text
    assert message.type == "message"
    jsonschema.validate(json.loads(whole.output_text), SCHEMA)
    assert whole.reasoning.effort == "low"

    events = list(client.responses.create(stream=True, **kwargs))
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert thought == reasoning.content[0].text
    assert text == whole.output_text
    types = [e.type for e in events]
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    done = next(e for e in events if e.type == "response.reasoning_text.done")
    assert done.text == thought
    assert [e.output_index for e in events if e.type == "response.output_item.added"] == [0, 1]
    assert types[-1] == "response.completed"
