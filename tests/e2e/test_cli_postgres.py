"""The command line of the shared store: `openclaw db migrate|status`, `openclaw sessions
migrate --from sqlite --to postgres` (idempotent, resumable, verified) and `openclaw sessions
export KEY` from either store, byte for byte the same."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from openclaw.cli.main import cli
from openclaw.messages import Usage
from openclaw.sessions.base import Turn
from openclaw.sessions.models import TranscriptRecord
from openclaw.sessions.postgres import schema as migrations
from openclaw.sessions.responses import StoredResponse
from openclaw.sessions.store import SqliteSessionStore
from tests.postgres import require_postgres, run_sql


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def run(args: list[str], *, state: Path, config: Path) -> Result:
    env = {"OPENCLAW_STATE_DIR": str(state), "OPENCLAW_CONFIG_PATH": str(config)}
    return CliRunner().invoke(cli, args, env=env)


def pg(schema: str, **extra: Any) -> dict[str, Any]:
    return {
        "session": {
            "store": "postgres",
            "postgres": {"url": require_postgres(), "schema": schema, **extra},
        }
    }


async def fill(state: Path, sessions: int) -> None:
    async with SqliteSessionStore(state) as store:
        for i in range(sessions):
            for t in range(3):
                records = (
                    TranscriptRecord(role="user", content=f"s{i} q{t}", timestamp=1.0, run_id=f"r{t}"),
                    TranscriptRecord(
                        role="assistant", content=f"s{i} a{t}", timestamp=2.0, run_id=f"r{t}",
                        usage=Usage(2, 3), stop_reason="stop", model="p/m",
                    ),
                )  # fmt: skip
                turn = Turn(f"agent:main:s{i}", "main", False, records, "p/m", Usage(2, 3))
                await store.record_turn(turn)
        await store.record_turn(
            Turn(
                "agent:main:req-1",
                "main",
                True,
                (TranscriptRecord(role="user", content="once", timestamp=1.0),),
                None,
                None,
            )
        )
        response = StoredResponse(
            "resp_1", "me", "main", "agent:main:req-1", "r", 1.0, 1.0, b"{}", b"[]"
        )
        await store.save_response(response, previous=None)


def test_db_status_and_migrate(tmp_path: Path, pg_schema: str) -> None:
    config = write_config(tmp_path / "c.json", pg(pg_schema))
    before = run(["db", "status", "--json"], state=tmp_path, config=config)
    assert before.exit_code == 0, before.output
    status = orjson.loads(before.output)
    assert (status["current"], status["latest"]) == (0, migrations.LATEST)
    assert status["database"] == "127.0.0.1:5432/test" and "@" not in before.output
    done = run(["db", "migrate"], state=tmp_path, config=config)
    assert done.exit_code == 0, done.output
    assert "applied 1:" in done.output and "up to date" in done.output
    again = run(["db", "migrate"], state=tmp_path, config=config)
    assert "applied" not in again.output and "up to date" in again.output
    after = orjson.loads(run(["db", "status", "--json"], state=tmp_path, config=config).output)
    assert after["current"] == migrations.LATEST and after["pending"] == []

    missing = write_config(tmp_path / "none.json", {"session": {"store": "postgres"}})
    refused = CliRunner().invoke(
        cli,
        ["db", "status"],
        env={"OPENCLAW_CONFIG_PATH": str(missing), "OPENCLAW_DATABASE_URL": ""},
    )
    assert refused.exit_code == 1 and "OPENCLAW_DATABASE_URL" in refused.output
    plain = write_config(tmp_path / "plain.json", {})
    embedded = CliRunner().invoke(
        cli, ["db", "status"], env={"OPENCLAW_CONFIG_PATH": str(plain), "OPENCLAW_DATABASE_URL": ""}
    )
    assert embedded.exit_code == 1 and 'session.store is "sqlite"' in embedded.output
    down = write_config(
        tmp_path / "down.json", pg(pg_schema, url="postgresql://u:pw-SECRET@127.0.0.1:1/x")
    )
    unreachable = run(["db", "status"], state=tmp_path, config=down)
    assert (
        unreachable.exit_code == 1
        and "cannot reach the database at 127.0.0.1:1/x" in unreachable.output
    )
    assert "SECRET" not in unreachable.output


def test_sessions_migrate_is_idempotent_resumable_and_verified(
    tmp_path: Path, pg_schema: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    asyncio.run(fill(state, 5))
    sqlite_config = write_config(tmp_path / "sqlite.json", {})
    pg_config = write_config(tmp_path / "pg.json", pg(pg_schema))
    exported = run(["sessions", "export", "s1"], state=state, config=sqlite_config)
    assert exported.exit_code == 0, exported.output
    assert len(exported.stdout_bytes.splitlines()) == 6

    first = run(
        ["sessions", "migrate", "--from", "sqlite", "--to", "postgres"],
        state=state,
        config=pg_config,
    )
    assert first.exit_code == 0, first.output
    assert (
        "6 sessions copied, 0 brought up to date, 0 already there; 31 records, 1 stored responses"
        in first.output
    )
    assert "verified" in first.output
    again = run(
        ["sessions", "migrate", "--from", "sqlite", "--to", "postgres"],
        state=state,
        config=pg_config,
    )
    assert (
        "0 sessions copied, 0 brought up to date, 6 already there; 0 records, 0 stored responses"
        in again.output
    )

    # An interrupted copy: a session with only some of its records there.
    run_sql(
        require_postgres(),
        f'SET search_path TO "{pg_schema}"',
        "DELETE FROM oc_records WHERE seq >= 2 AND session_id ="
        " (SELECT session_id FROM oc_sessions WHERE key = 'agent:main:s3')",
        "UPDATE oc_sessions SET records = 2 WHERE key = 'agent:main:s3'",
    )
    resumed = run(
        ["sessions", "migrate", "--from", "sqlite", "--to", "postgres"],
        state=state,
        config=pg_config,
    )
    assert "0 sessions copied, 1 brought up to date, 5 already there; 4 records" in resumed.output

    # Both stores export the same bytes; the shared one lists what was copied.
    from_pg = run(["sessions", "export", "s1"], state=state, config=pg_config)
    assert from_pg.exit_code == 0, from_pg.output
    assert from_pg.stdout_bytes == exported.stdout_bytes
    listed = run(["sessions", "list", "--all", "--json"], state=state, config=pg_config)
    keys = {s["key"] for s in orjson.loads(listed.output)["sessions"]}
    assert keys == {f"agent:main:s{i}" for i in range(5)} | {"agent:main:req-1"}
    shown = run(["sessions", "show", "s3"], state=state, config=pg_config)
    assert shown.output.splitlines()[-1] == "assistant: s3 a2"
    out = tmp_path / "s3.jsonl"
    to_file = run(
        ["sessions", "export", "agent:main:s3", "-o", str(out)], state=state, config=pg_config
    )
    assert to_file.exit_code == 0 and len(out.read_bytes().splitlines()) == 6

    # A key that holds another session in the database is reported, never overwritten.
    run_sql(
        require_postgres(),
        f'SET search_path TO "{pg_schema}"',
        "UPDATE oc_sessions SET session_id = 'someone-else' WHERE key = 'agent:main:s4'",
    )
    conflict = run(
        ["sessions", "migrate", "--from", "sqlite", "--to", "postgres"],
        state=state,
        config=pg_config,
    )
    assert conflict.exit_code == 1
    assert "conflict: agent:main:s4" in conflict.output

    # A session that went on in both stores since the copy: reported, not silently skipped.
    async def diverge() -> None:
        async with SqliteSessionStore(state) as store:
            record = TranscriptRecord(role="user", content="late sqlite turn", timestamp=3.0)
            await store.record_turn(Turn("agent:main:s2", "main", False, (record,), None, None))

    asyncio.run(diverge())
    run_sql(
        require_postgres(),
        f'SET search_path TO "{pg_schema}"',
        "INSERT INTO oc_records (session_id, seq, line) SELECT session_id, records,"
        ' \'{"role":"user","content":"late pg turn","timestamp":3.0}\''
        " FROM oc_sessions WHERE key = 'agent:main:s2'",
        "UPDATE oc_sessions SET records = records + 1 WHERE key = 'agent:main:s2'",
    )
    diverged = run(
        ["sessions", "migrate", "--from", "sqlite", "--to", "postgres"],
        state=state,
        config=pg_config,
    )
    assert diverged.exit_code == 1
    assert "conflict: agent:main:s2" in diverged.output

    nothing = run(["sessions", "export", "nope"], state=state, config=pg_config)
    assert nothing.exit_code == 1 and "no session `agent:main:nope`" in nothing.output


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_export_of_a_missing_store_or_session(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    data = {} if store == "sqlite" else pg(request.getfixturevalue("pg_schema"))
    config = write_config(tmp_path / "c.json", data)
    if store == "postgres":
        # A reading command never creates or migrates the schema: it says what to do.
        fresh = run(["sessions", "export", "agent:main:x"], state=tmp_path / "empty", config=config)
        assert fresh.exit_code == 1 and "run `openclaw db migrate`" in fresh.output
        assert run(["db", "migrate"], state=tmp_path, config=config).exit_code == 0
    result = run(["sessions", "export", "agent:main:x"], state=tmp_path / "empty", config=config)
    assert result.exit_code == 1 and "no session `agent:main:x`" in result.output


def test_a_database_url_that_cannot_be_parsed_is_never_echoed(tmp_path: Path) -> None:
    bad = "postgresql://app:12/34#Secr3t@db.internal/prod"
    config = write_config(
        tmp_path / "c.json", {"session": {"store": "postgres", "postgres": {"url": bad}}}
    )
    result = run(["db", "status"], state=tmp_path, config=config)
    assert result.exit_code == 1 and "percent-encoded" in result.output
    assert "Secr3t" not in result.output and "12/34" not in result.output
    env_config = write_config(tmp_path / "e.json", {"session": {"store": "postgres"}})
    from_env = CliRunner().invoke(
        cli,
        ["db", "status"],
        env={"OPENCLAW_CONFIG_PATH": str(env_config), "OPENCLAW_DATABASE_URL": bad},
    )
    assert from_env.exit_code == 1 and "OPENCLAW_DATABASE_URL" in from_env.output
    assert "Secr3t" not in from_env.output


def test_a_gateway_whose_database_does_not_answer_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.json",
        {
            "gateway": {"auth": {"mode": "token", "token": "abcdefgh1234"}},
            "session": {"store": "postgres"},
        },
    )
    env = {
        **os.environ,
        "OPENCLAW_STATE_DIR": str(tmp_path / "state"),
        "OPENCLAW_CONFIG_PATH": str(config),
        "OPENCLAW_DATABASE_URL": "postgresql://postgres:pw-SECRET@127.0.0.1:1/test",
    }
    done = subprocess.run(
        [sys.executable, "-m", "openclaw", "gateway", "run", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot reach the session store's database database=127.0.0.1:1/test" in done.stderr
    assert "Traceback" not in done.stderr and "SECRET" not in done.stderr
