"""``openclaw sessions list|show``: read the session store directly (safe beside a running
gateway: the index is SQLite in WAL mode and transcripts are append-only)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click
import orjson

from openclaw import paths
from openclaw.agents.history import RESET
from openclaw.agents.registry import AgentRegistry
from openclaw.cli.common import fail
from openclaw.config.loader import load_config
from openclaw.errors import ConfigError
from openclaw.gateway.protocol import session_payload
from openclaw.sessions.keys import normalize_agent_id, scoped_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.store import INDEX_FILENAME, SqliteSessionStore


def _store_exists(state: Path) -> bool:
    # Reading must not create an empty index in a state dir that has none.
    return (state / INDEX_FILENAME).exists()


async def _list(
    state: Path, agent_id: str | None, limit: int, include_ephemeral: bool
) -> list[SessionEntry]:
    async with SqliteSessionStore(state) as store:
        return await store.list_sessions(agent_id, limit=limit, include_ephemeral=include_ephemeral)


async def _history(
    state: Path, key: str, limit: int | None
) -> tuple[SessionEntry | None, list[TranscriptRecord]]:
    async with SqliteSessionStore(state) as store:
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
def sessions_list(agent_id: str | None, include_all: bool, limit: int, as_json: bool) -> None:
    """Sessions, most recently updated first."""
    state = paths.state_dir()
    if agent_id is not None:
        try:
            agent_id = normalize_agent_id(agent_id)
        except ValueError:
            fail("--agent is empty", 2)
    entries = (
        asyncio.run(_list(state, agent_id, limit, include_all)) if _store_exists(state) else []
    )
    if as_json:
        click.echo(orjson.dumps({"sessions": [session_payload(e) for e in entries]}).decode())
        return
    if not entries:
        click.echo(f"no sessions in {state}")
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
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file, for the default agent of a key without `agent:`.",
)
def sessions_show(key: str, limit: int | None, as_json: bool, config_path: Path | None) -> None:
    """The transcript of session KEY (`agent:<id>:<name>`, or a name under the default agent)."""
    state = paths.state_dir()
    try:
        config = load_config(paths.config_path(config_path))
    except ConfigError as exc:
        fail(str(exc))
    default_agent = AgentRegistry(config, state).default_id
    try:
        store_key = scoped_key(key, default_agent)
    except ValueError:
        fail(f"invalid session key {key!r}: use agent:<agentId>:<name> or a plain name", 2)
    entry, records = (
        asyncio.run(_history(state, store_key, limit)) if _store_exists(state) else (None, [])
    )
    if entry is None:
        fail(f"no session `{store_key}` in {state} (see `openclaw sessions list --all`)")
    if as_json:
        messages = [r.to_dict() for r in records]
        click.echo(orjson.dumps({"sessionKey": store_key, "messages": messages}).decode())
        return
    for line in transcript_lines(records):
        click.echo(line)
