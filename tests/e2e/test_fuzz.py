"""Property tests: whatever JSON a client sends, the endpoint answers 200 or an OpenAI-style 4xx
error, never a 5xx, a traceback or a hung connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import chat_config
from tests.e2e.rawhttp import request
from tests.harness import RunningGateway, make_config
from tests.upstream import FakeUpstream

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "bot", ""])
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text", "image_url", "audio"])},
    optional={"text": json_values, "image_url": json_values},
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={"content": st.text(max_size=30) | st.lists(parts, max_size=3) | json_values},
    ),
    max_size=4,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["openclaw", "openclaw/main", "agent:ghost", "gpt-4", ""])
        | json_values,
        "messages": messages | json_values,
        "stream": st.booleans() | json_values,
        "temperature": json_values,
        "top_p": json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
        "stop": json_values,
        "n": json_values,
        "user": json_values,
        "seed": json_values,
        "stream_options": json_values,
    },
)


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with FakeUpstream() as up:
        state: Path = tmp_path_factory.mktemp("fuzz")
        with RunningGateway(make_config(chat_config(up)), state) as gw:
            yield gw


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies | json_values)
def test_any_json_body_gets_a_clean_answer(fuzz_gateway: RunningGateway, body: object) -> None:
    reply = request(
        fuzz_gateway.port,
        "POST",
        "/v1/chat/completions",
        body=orjson.dumps(body),
        headers={**fuzz_gateway.auth_headers(), "Content-Type": "application/json"},
        timeout=20,
    )
    assert reply.status in (200, 400, 404, 413), reply.body
    if reply.status != 200:
        err = reply.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["message"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64))
def test_any_bytes_get_a_clean_answer(fuzz_gateway: RunningGateway, raw: bytes) -> None:
    reply = request(
        fuzz_gateway.port,
        "POST",
        "/v1/chat/completions",
        body=raw,
        headers=fuzz_gateway.auth_headers(),
        timeout=20,
    )
    assert reply.status in (200, 400), reply.body
