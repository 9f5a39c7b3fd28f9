"""The PostgreSQL server the tests use: ``OPENCLAW_TEST_DATABASE_URL`` (default the local
server, trust auth, database ``test``), each test in a schema of its own, dropped afterwards.
When no server answers, the tests that need one are skipped, saying so (CI checks first that one
answers, so there they always run)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def database_url() -> str:
    return os.environ.get("OPENCLAW_TEST_DATABASE_URL", DEFAULT_URL)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def run_sql(url: str, *statements: str) -> None:
    """Statements on a connection of their own, from any code (a thread of its own runs them,
    so an event loop running here does not matter)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(_execute(url, *statements))).result()


@functools.cache
def unreachable_reason() -> str | None:
    """Why PostgreSQL cannot be used by the tests, or None when it answers."""
    url = database_url()
    try:
        run_sql(url, "SELECT 1")
    except Exception as exc:
        return (
            f"no PostgreSQL answers at {url} ({type(exc).__name__}: {exc}); start one or set "
            "OPENCLAW_TEST_DATABASE_URL (the tests of the shared store need it)"
        )
    return None


def require_postgres() -> str:
    """The server's URL, or skip the test saying why there is none."""
    reason = unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    return database_url()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    url = require_postgres()
    name = f"oc_test_{uuid.uuid4().hex[:12]}"
    yield name
    run_sql(url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
