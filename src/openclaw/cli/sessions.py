"""``openclaw sessions list|show|export|migrate``: read the session store directly (safe beside
a running gateway: the embedded index is SQLite in WAL mode and transcripts are append-only; the
shared store is a database), and copy an embedded store into the shared one."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from openclaw import paths
from openclaw.agents.history import RESET
from openclaw.agents.registry import AgentRegistry
from openclaw.cli.common import config_option, fail, load
from openclaw.config.schema import Config
from openclaw.errors import ConfigError, StoreUnavailableError
from openclaw.gateway.protocol import session_payload
from openclaw.sessions.base import STORAGE_ERRORS, SessionStore
from openclaw.sessions.factory import make_store
from openclaw.sessions.keys import normalize_agent_id, scoped_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.postgres import database_url, where
from openclaw.sessions.postgres import schema as migrations
from openclaw.sessions.postgres.copy import copy_sqlite_to_postgres
from openclaw.sessions.store import INDEX_FILENAME

T = TypeVar("T")


def _store_exists(state: Path) -> bool:
    # Reading must not create an empty index in a state dir that has none.
    return (state / INDEX_FILENAME).exists()


def _where(config: Config, state: Path) -> str:
    if config.session.store == "postgres":
        try:
            return f"the database at {where(database_url(config.session.postgres))}"
        except ConfigError as exc:
            fail(str(exc))
    return str(state)


def _has_store(config: Config, state: Path) -> bool:
    # Reading must not create an empty index in a state dir that has none.
    return config.session.store == "postgres" or _store_exists(state)


def _run(config: Config, state: Path, job: Callable[[SessionStore], Awaitable[T]]) -> T:
    """``job`` on the configured store, opened for it; a store that cannot be reached is a clean
    error, not a traceback."""

    async def run() -> T:
        store = make_store(config, state, migrate=False)
        await store.open()
        try:
            return await job(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (StoreUnavailableError, *STORAGE_ERRORS) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        fail(
            f"cannot read the session store ({_where(config, state)}): "
            f"{type(cause).__name__}: {cause}"
        )
    except (migrations.SchemaTooNewError, migrations.SchemaNotReadyError) as exc:
        fail(str(exc))


async def _history(
    store: SessionStore, key: str, limit: int | None
) -> tuple[SessionEntry | None, list[TranscriptRecord]]:
    entry = await store.get(key)
    if entry is None:
        return None, []
    return entry, await store.read_history(entry, max_records=limit)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _content_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        elif part.get("type") == "image":
            parts.append(f"[image {part.get('mime', '')}, {part.get('bytes', '?')} bytes]")
    return "\n".join(parts)


def transcript_lines(records: list[TranscriptRecord]) -> list[str]:
    """``role: content`` per record; continuation lines indented, failed turns marked."""
    lines = []
    for record in records:
        meta = record.meta or {}
        if meta.get("type") == RESET:
            lines.append("-- history replaced by the client's (edited or regenerated turn) --")
            continue
        text = _content_text(record.content)
        if record.stop_reason == "aborted":
            text += " [aborted]"
        elif record.stop_reason == "error":
            error = meta.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            text += f" [error: {message}]" if message else " [error]"
        first, *rest = text.split("\n")
        lines.append(f"{record.role}: {first}")
        lines.extend(f"    {line}" for line in rest)
    return lines


@click.group("sessions")
def sessions_group() -> None:
    """List stored sessions and read their transcripts."""


@sessions_group.command("list")
@click.option("--agent", "agent_id", default=None, help="Only this agent's sessions.")
@click.option("--all", "include_all", is_flag=True, help="Include ephemeral per-request sessions.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({sessions: [...]}).")
@config_option
def sessions_list(
    agent_id: str | None, include_all: bool, limit: int, as_json: bool, config_path: Path | None
) -> None:
    """Sessions, most recently updated first."""
    state = paths.state_dir()
    config = load(config_path)
    if agent_id is not None:
        try:
            agent_id = normalize_agent_id(agent_id)
        except ValueError:
            fail("--agent is empty", 2)
    entries = (
        _run(
            config,
            state,
            lambda store: store.list_sessions(agent_id, limit=limit, include_ephemeral=include_all),
        )
        if _has_store(config, state)
        else []
    )
    if as_json:
        click.echo(orjson.dumps({"sessions": [session_payload(e) for e in entries]}).decode())
        return
    if not entries:
        click.echo(f"no sessions in {_where(config, state)}")
        return
    rows: list[tuple[str, ...]] = [("KEY", "AGENT", "UPDATED", "MODEL", "TOKENS IN/OUT")]
    for e in entries:
        key = f"{e.key} (ephemeral)" if e.ephemeral else e.key
        tokens = f"{e.prompt_tokens}/{e.completion_tokens}"
        rows.append((key, e.agent_id, _when(e.updated_at), e.model or "-", tokens))
    for line in _table(rows):
        click.echo(line)


@sessions_group.command("show")
@click.argument("key")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({sessionKey, messages}).")
@config_option
def sessions_show(key: str, limit: int | None, as_json: bool, config_path: Path | None) -> None:
    """The transcript of session KEY (`agent:<id>:<name>`, or a name under the default agent)."""
    store_key, records = _transcript(config_path, key, limit)
    if as_json:
        messages = [r.to_dict() for r in records]
        click.echo(orjson.dumps({"sessionKey": store_key, "messages": messages}).decode())
        return
    for line in transcript_lines(records):
        click.echo(line)


def _transcript(
    config_path: Path | None, key: str, limit: int | None
) -> tuple[str, list[TranscriptRecord]]:
    """(the stored key, its last ``limit`` records) from the configured store, or a clean exit
    when there is no such session."""
    state = paths.state_dir()
    config = load(config_path)
    store_key = _store_key(config, state, key)
    entry, records = (
        _run(config, state, lambda store: _history(store, store_key, limit))
        if _has_store(config, state)
        else (None, [])
    )
    if entry is None:
        fail(
            f"no session `{store_key}` in {_where(config, state)}"
            " (see `openclaw sessions list --all`)"
        )
    return store_key, records


def _store_key(config: Config, state: Path, key: str) -> str:
    """``key`` as stored (a plain name is under the default agent), or a clean exit."""
    try:
        return scoped_key(key, AgentRegistry(config, state).default_id)
    except ValueError:
        fail(f"invalid session key {key!r}: use agent:<agentId>:<name> or a plain name", 2)


@sessions_group.command("export")
@click.argument("key")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    default="-",
    help="File to write (default: standard output).",
)
@config_option
def sessions_export(key: str, output: Path, config_path: Path | None) -> None:
    """Write the transcript of session KEY as JSONL (one record per line, as the embedded store
    keeps it), from whichever store is configured."""
    store_key, records = _transcript(config_path, key, None)
    data = b"".join(record.to_json_bytes() for record in records)
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        click.echo(f"{len(records)} records of {store_key} written to {output}", err=True)


@sessions_group.command("migrate")
@click.option("--from", "source", type=click.Choice(["sqlite"]), required=True)
@click.option("--to", "target", type=click.Choice(["postgres"]), required=True)
@config_option
def sessions_migrate(source: str, target: str, config_path: Path | None) -> None:
    """Copy the state dir's sessions, transcripts and stored responses into the database of
    session.postgres (idempotent and resumable: run it again after an interruption).  Stop the
    gateway on this state dir first."""
    state = paths.state_dir()
    config = load(config_path)
    if not _store_exists(state):
        fail(f"no session store in {state}")
    pg = config.session.postgres
    try:
        url = database_url(pg)
    except ConfigError as exc:
        fail(str(exc))

    def progress(done: int, total: int) -> None:
        if done % 1000 == 0 or done == total:
            click.echo(f"  {done}/{total} sessions", err=True)

    try:
        report = asyncio.run(
            copy_sqlite_to_postgres(
                state,
                url,
                schema=pg.schema_name,
                connect_timeout=pg.connect_timeout_seconds,
                progress=progress,
            )
        )
    except STORAGE_ERRORS as exc:
        fail(f"cannot copy to the database at {where(url)}: {type(exc).__name__}: {exc}")
    click.echo(
        f"{report.copied} sessions copied, {report.resumed} brought up to date, "
        f"{report.unchanged} already there; {report.records} records, "
        f"{report.responses} stored responses"
    )
    for key in report.conflicts:
        click.echo(
            f"conflict: {key} holds another session in the database, or turns were added to it"
            " in both stores since an earlier copy (left as is)"
        )
    for key in report.mismatched:
        click.echo(f"mismatch: {key} has fewer records in the database than in {state}")
    if not report.ok:
        fail("the copy is not complete (see above)")
    click.echo("verified: every session's records are in the database")
