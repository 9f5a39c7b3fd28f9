"""Schemathesis against the gateway's own ``GET /openapi.json``, on a live gateway with a valid
token: every operation of the document (chat completions, responses and the stored ones,
embeddings, models, tools/invoke, health) gets generated requests, valid and invalid, streamed
and not.  The gateway must never answer 5xx, and every answer must be what the document says:
status code, content type, body schema (each event of a ``text/event-stream`` too), 401 without
the token, 4xx for a body the schema rejects, and, following the document's links, a stored
response found after it was created and gone after it was deleted.

The upstream is ``FakeUpstream`` answering at once (its default echo), so the run measures the
gateway.  Deterministic: Hypothesis derandomized, one seed, no example database; a run sends
the same requests every time (the counts ``-s`` prints are the same run after run).

The default run is short: the document's examples, ``EXAMPLES`` fuzzed cases per operation
(positive and negative) and a few stateful scenarios, a few hundred requests.  The long run
(thousands) is the same test with ``OPENCLAW_SCHEMATHESIS_EXAMPLES`` set: that many cases per
operation and scenarios, plus Schemathesis' coverage phase (the boundary and the invalid values
of every keyword, every other HTTP method).  ``-s`` prints what was generated and what the
gateway served, by route and status::

    OPENCLAW_SCHEMATHESIS_EXAMPLES=100 .venv/bin/python -m pytest -q --no-cov -p no:cacheprovider \\
        -s tests/e2e/test_schemathesis.py
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from tests.e2e.conftest import chat_config
from tests.harness import RunningGateway, make_config
from tests.upstream import FakeUpstream

LONG = bool(os.environ.get("OPENCLAW_SCHEMATHESIS_EXAMPLES"))
EXAMPLES = int(os.environ.get("OPENCLAW_SCHEMATHESIS_EXAMPLES") or 20)
SCENARIOS = EXAMPLES if LONG else 10
SEED = 20_251_129
# What the gateway accepts in ``model`` (anything else is a 400 the document cannot spell out:
# agents are configuration).  Generated bodies mostly get one of these, so that requests reach
# the run and the upstream instead of stopping at the model check; ``None`` (last: Hypothesis
# leans to the first) keeps the generated string.
MODELS = ("openclaw", "openclaw/default", "openclaw/main", "openclaw:beta", "agent:main", None)


class _Served(logging.Filter):
    """Counts what the gateway served, from its access log (a filter on that logger, which
    also keeps the thousands of lines out of pytest's captured logs), and the unexpected errors
    it logged (with their traceback) before answering them with a 500."""

    def __init__(self) -> None:
        super().__init__()
        self.by_status: Counter[int] = Counter()
        self.by_route: Counter[tuple[str, str, int]] = Counter()
        self.errors: list[str] = []
        # The generated requests (the rest are the checks' own: without the token, ...).
        self.cases: Counter[str] = Counter()
        self.streams = 0  # of which answered as server-sent events (each event checked)

    def answered(self, phase: str, response: Any) -> None:
        self.cases[phase] += 1
        # Schemathesis' responses: lower-case header names, each with a list of values.
        if any(v.startswith("text/event-stream") for v in response.headers.get("content-type", [])):
            self.streams += 1

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "openclaw.access":
            if record.levelno >= logging.ERROR:
                self.errors.append(record.getMessage())
            return True
        status = int(getattr(record, "status", 0))
        path = str(getattr(record, "path", ""))
        for prefix in ("/v1/responses/", "/v1/models/"):
            if path.startswith(prefix):
                path = prefix + "{id}" + ("/input_items" if path.endswith("/input_items") else "")
        self.by_status[status] += 1
        self.by_route[(str(getattr(record, "method", "")), path, status)] += 1
        return False

    def report(self) -> str:
        lines = [
            f"generated requests: {sum(self.cases.values())} "
            f"({', '.join(f'{p}: {n}' for p, n in sorted(self.cases.items()))}; "
            f"event streams: {self.streams})",
            f"gateway requests: {sum(self.by_status.values())}, "
            f"unexpected errors logged: {len(self.errors)}",
            "  by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items())),
        ]
        lines += [
            f"  {method:7} {path:37} {status}: {n}"
            for (method, path, status), n in sorted(self.by_route.items())
        ]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, _Served]]:
    served = _Served()
    access = logging.getLogger("openclaw.access")
    gateway = logging.getLogger("openclaw.gateway")
    level = access.level
    access.setLevel(logging.INFO)
    access.addFilter(served)
    gateway.addFilter(served)
    try:
        with FakeUpstream() as up:
            cfg = chat_config(up)  # chat completions on, agents main and beta, tools minimal
            cfg["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
            cfg["models"]["providers"]["fake"]["models"].append({"id": "embed"})
            cfg["agents"]["defaults"]["embeddings"] = {"model": "fake/embed"}
            state: Path = tmp_path_factory.mktemp("schemathesis")
            with RunningGateway(make_config(cfg), state) as gw:
                yield gw, served
    finally:
        access.removeFilter(served)
        gateway.removeFilter(served)
        access.setLevel(level)
    print("\n" + served.report())


def _whole(value: Any) -> Any:
    """``value`` with whole floats written as integers: JSON Schema's ``integer`` includes
    ``8.0``, which the gateway refuses where it wants an integer, as OpenAI does ("expected an
    integer, but got a decimal number")."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


_STREAMED = frozenset({"/v1/chat/completions", "/v1/responses"})


def _realistic(ctx: Any, body: Any) -> st.SearchStrategy[Any]:
    """A generated body, or the same with an accepted ``model``, and as often streamed as not
    where it can be (only a string ``model``, only a boolean or absent ``stream`` are replaced:
    a body invalid elsewhere stays invalid, a valid one stays valid); whole numbers as integers."""
    body = _whole(body)
    if not isinstance(body, dict):
        return st.just(body)
    models = st.sampled_from(MODELS if isinstance(body.get("model"), str) else (None,))
    can_stream = ctx.operation.path in _STREAMED and isinstance(body.get("stream", False), bool)
    streams = st.sampled_from((None, True, False) if can_stream else (None,))
    return st.tuples(models, streams).map(lambda pick: _with(body, *pick))


def _with(body: dict[str, Any], model: str | None, stream: bool | None) -> dict[str, Any]:
    if model is not None:
        body = {**body, "model": model}
    if stream is not None:
        body = {**body, "stream": stream}
    return body


def _stored_only(_ctx: Any, body: Any) -> Any:
    if isinstance(body, dict) and body.get("store") is False:
        return {**body, "store": True}
    return body


def _schema(gw: RunningGateway, **extra: Any) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # Deterministic, but timed: a busy machine is no failure.
            "suppress-health-check": ["too_slow"],
            "headers": {"Authorization": f"Bearer {gw.token}"},
            "request-timeout": 30,
            "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {
                # Valid per the schema yet refused is normal here: an unknown agent, session key
                # or tool is a 400/404 the document cannot spell out (they are configuration).
                "positive_data_acceptance": {"enabled": False},
            },
            "phases": {
                "coverage": {"enabled": LONG},
                # The document's own links (a created response -> get, input items, delete).
                "stateful": {"max-steps": 8, "inference": {"algorithms": []}},
            },
            **extra,
        }
    )
    # The gateway's document, as served (no auth).
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json", config=config)
    schema.hook("flatmap_body")(_realistic)
    return schema


def _stored(gw: RunningGateway) -> str:
    reply = httpx.post(
        gw.url + "/v1/responses",
        json={"model": "openclaw", "input": [{"role": "user", "content": "hi", "id": "item_1"}]},
        headers=gw.auth_headers(),
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


@pytest.fixture(scope="module")
def api_schema(served: tuple[RunningGateway, _Served]) -> Any:
    """For the operations one by one: the stored-response operations get real ids (one to read,
    one to delete), else they would only ever see 404."""
    gw, _ = served
    kept, deleted = _stored(gw), _stored(gw)
    return _schema(
        gw,
        operations=[
            {"include-operation-id": "getResponse", "parameters": {"response_id": kept}},
            {"include-operation-id": "listInputItems", "parameters": {"response_id": kept}},
            {"include-operation-id": "deleteResponse", "parameters": {"response_id": deleted}},
        ],
    )


lazy = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id(request: pytest.FixtureRequest) -> None:
    """Schemathesis (4.32) names each operation's subtest through ``node._nodeid``, which
    pytest 9.2 no longer has (the id is ``node._id``): a plain attribute does for it."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@lazy.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, served: tuple[RunningGateway, _Served]
) -> None:
    response = case.call_and_validate()
    served[1].answered(case.meta.phase.name.value if case.meta else "explicit", response)


def test_stateful_links_answer_as_documented(served: tuple[RunningGateway, _Served]) -> None:
    """Created responses, then what the document's links lead to: get, input items, delete,
    and after the delete, 404 (``use_after_free``)."""
    gw = served[0]
    schema = _schema(gw)
    # The links hold for stored responses, the default: `store: false` answers the same
    # object, never kept (not found after, as documented).
    schema.hook("map_body")(_stored_only)
    count = served[1].answered

    class Counted(schema.as_state_machine()):  # type: ignore[misc]
        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            count("stateful", response)
            super().after_call(response, case)

    Counted.run(
        settings=settings(
            max_examples=SCENARIOS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
    )


def test_the_documents_examples_are_answered(served: tuple[RunningGateway, _Served]) -> None:
    """The request examples of the document are real requests: answered 200 (the tools
    examples 404 here: the "minimal" tool profile has no tools)."""
    gw = served[0]
    doc = httpx.get(gw.url + "/openapi.json").json()
    seen = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in content.get("examples", {}).items():
                reply = httpx.request(
                    method,
                    gw.url + path,
                    json=example["value"],
                    headers=gw.auth_headers(),
                    timeout=30,
                )
                if op["operationId"] == "invokeTool":
                    assert reply.status_code == 404, (name, reply.text)
                    assert reply.json()["error"]["type"] == "tool_not_found"
                else:
                    assert reply.status_code == 200, (path, name, reply.text)
                seen.add(op["operationId"])
    assert seen == {"createChatCompletion", "createResponse", "createEmbedding", "invokeTool"}


BIG = 2**70


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"response_format": {"type": "json_object", "x": BIG}}),
        (
            "/v1/chat/completions",
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": BIG}}}]},
        ),
        (
            "/v1/chat/completions",
            {
                "stream": True,
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"x": -BIG}}}
                ],
            },
        ),
        ("/v1/chat/completions", {"tool_choice": {"x": BIG}}),
        ("/v1/responses", {"input": [{"role": "user", "content": "hi", "x": BIG}]}),
        ("/v1/responses", {"tool_choice": {"type": "function", "x": BIG}}),
        ("/v1/responses", {"tools": [{"type": "function", "name": "f", "parameters": {"x": BIG}}]}),
        (
            "/v1/responses",
            {
                "stream": True,
                "tools": [{"type": "function", "name": "f", "parameters": {"x": BIG}}],
            },
        ),
        (
            "/v1/responses",
            {"text": {"format": {"type": "json_schema", "name": "n", "schema": {"x": BIG}}}},
        ),
    ],
)
def test_integers_beyond_64_bits_are_a_400(
    served: tuple[RunningGateway, _Served], path: str, body: dict[str, Any]
) -> None:
    """Found by Schemathesis: such a number validates wherever a request takes any JSON, then
    could not be written out again (stored, echoed, sent upstream: orjson's integers are 64-bit)
    and the request failed with a 500."""
    gw, _ = served
    base = (
        {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
        if path == "/v1/chat/completions"
        else {"model": "openclaw", "input": "hi"}
    )
    reply = httpx.post(
        gw.url + path,
        content=json.dumps({**base, **body}),
        headers={**gw.auth_headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"] == "Integers in the request body must fit in 64 bits."


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_integers_of_64_bits_still_pass(served: tuple[RunningGateway, _Served], path: str) -> None:
    gw, _ = served
    fits = {"unsigned": 2**64 - 1, "signed": -(2**63), "text": "12345678901234567890123"}
    body = (
        {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}], "x": fits}
        if path == "/v1/chat/completions"
        else {"model": "openclaw", "input": [{"role": "user", "content": "hi", "x": fits}]}
    )
    reply = httpx.post(gw.url + path, json=body, headers=gw.auth_headers(), timeout=30)
    assert reply.status_code == 200, reply.text


def test_no_unexpected_errors(served: tuple[RunningGateway, _Served]) -> None:
    """Whatever the checks said, the gateway logged no unexpected error (a 500's traceback)."""
    assert served[1].errors == []
