"""The in-process tier: the whole app from ``create_app`` (lifespan included), driven over
``httpx.ASGITransport`` without sockets, for the request/response rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openclaw.gateway.app import create_app
from tests.e2e.conftest import chat_config
from tests.harness import TOKEN, make_config
from tests.upstream import FakeUpstream

AUTH = {"Authorization": f"Bearer {TOKEN}"}

App = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """``await app(config_dict)``: a client of a gateway built from that config."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def start(data: dict[str, Any] | None = None) -> httpx.AsyncClient:
        gateway = create_app(make_config(data), state_dir=tmp_path / "state", env={})
        lifespan = gateway.router.lifespan_context(gateway)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://testserver"
        )
        opened.append((lifespan, client))
        return client

    yield start
    for lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def chat(app: App, upstream: FakeUpstream) -> httpx.AsyncClient:
    """A gateway with chat completions on, agents main and beta, on the fake upstream."""
    return await app(chat_config(upstream))
