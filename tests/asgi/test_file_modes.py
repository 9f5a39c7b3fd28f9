"""What the gateway writes is its user's alone: the state dir and everything under it 0700,
conversations, indexes, config and secrets 0600, created so (never wider for a moment)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from openclaw.config.edit import write_config
from openclaw.gateway.app import create_app
from openclaw.gateway.auth import resolve_secret
from tests.asgi.conftest import AUTH
from tests.e2e.conftest import chat_config
from tests.harness import make_config
from tests.upstream import FakeUpstream


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> object:
    # The widest umask a user may have: anything not created with an explicit mode shows.
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
async def test_state_config_and_secrets_are_private(tmp_path: Path, upstream: FakeUpstream) -> None:
    state = tmp_path / "home" / ".openclaw"
    config_data = chat_config(upstream)
    gateway = create_app(make_config(config_data), state_dir=state, env={})
    lifespan = gateway.router.lifespan_context(gateway)
    await lifespan.__aenter__()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://testserver"
        ) as client:
            body = {
                "model": "openclaw",
                "user": "u",
                "messages": [{"role": "user", "content": "hi"}],
            }
            assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).is_success
            assert (await client.get("/v1/models", headers=AUTH)).is_success
        # While the gateway runs: SQLite's -wal and -shm files exist.
        running = list(state.rglob("*"))
    finally:
        await lifespan.__aexit__(None, None, None)
    # A generated secret and a written config.
    generated = resolve_secret(
        make_config({"gateway": {"auth": {"mode": "password"}}}, token=None).gateway.auth,
        state_dir=state,
        loopback_only=True,
        env={},
    )
    assert generated.path is not None and generated.source == "generated"
    config_path = tmp_path / "elsewhere" / "openclaw.json"
    write_config(config_path, config_data)

    written = list(state.rglob("*"))
    assert any(p.suffix == ".jsonl" for p in written)
    assert any(p.name.endswith("-wal") for p in running)
    for path in [state, config_path.parent, *written, *(p for p in running if p.exists())]:
        if path.is_dir():
            assert mode(path) == 0o700, path
        else:
            assert mode(path) == 0o600, path
    assert mode(config_path) == 0o600


async def test_a_config_rewritten_is_never_wider_than_0600(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_config(path, {"gateway": {}})
    assert mode(path) == 0o600
