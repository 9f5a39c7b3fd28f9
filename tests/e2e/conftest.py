from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.processes import GatewayProcess
from tests.harness import RunningGateway
from tests.upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def chat_config(up: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    """Chat completions on, one OpenAI-compatible provider (the fake), agents main and beta."""
    provider = {
        "api": "openai-completions",
        "baseUrl": up.base_url,
        "apiKey": "upstream-key",
        "maxRetries": 0,
        "models": [{"id": "fake-model", "input": ["text", "image"]}, {"id": "text-only"}],
    }
    provider.update(overrides.pop("provider", {}))
    config: dict[str, Any] = {
        "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
        "models": {"providers": {"fake": provider}},
        "agents": {
            "defaults": {"model": "fake/fake-model"},
            "list": [{"id": "main", "default": True}, {"id": "beta"}],
        },
        # The endpoint's own behaviour, without server tools in every request (their tests turn
        # them on).
        "tools": {"profile": "minimal"},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture
def chat_gateway(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(chat_config(upstream))


def transcripts(state_dir: Path, agent: str = "main") -> list[list[dict[str, Any]]]:
    out = []
    for path in sorted((state_dir / "agents" / agent / "sessions").glob("*.jsonl")):
        out.append([orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()])
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start `openclaw gateway run` processes (state under ``tmp_path``); killed at the end."""
    procs: list[GatewayProcess] = []

    def start(config: dict[str, Any], **kw: Any) -> GatewayProcess:
        p = GatewayProcess(tmp_path, config, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
        p.close()
