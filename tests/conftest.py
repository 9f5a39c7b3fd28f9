from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import RunningGateway, make_config


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def gateway_factory(state_dir: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways from config dicts; all are stopped at the end of the test."""
    started: list[RunningGateway] = []

    def start(data: dict[str, Any] | None = None, **kw: Any) -> RunningGateway:
        env = kw.pop("env", None)
        gw = RunningGateway(make_config(data, **kw), state_dir, env=env).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


# The PostgreSQL store's tests: a schema of their own on the test server (tests/postgres.py).
from tests.postgres import pg_schema  # noqa: E402, F401
