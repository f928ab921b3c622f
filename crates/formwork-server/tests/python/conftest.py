"""Fixtures the SDK test files share (a file's own fixtures of the same name win)."""

import os

import openai
import pytest


@pytest.fixture(scope="session")
def client():
    url = os.environ.get("FORMWORK_BASE_URL")
    if not url:
        pytest.fail("FORMWORK_BASE_URL is not set: start `formwork serve` and set it to its base URL with /v1")
    return openai.OpenAI(base_url=url.rstrip("/"), api_key=os.environ.get("OPENAI_API_KEY", "unused"), max_retries=0)


@pytest.fixture(scope="session")
def model(client):
    return os.environ.get("FORMWORK_MODEL") or client.models.list().data[0].id
