"""``openclaw db migrate|status``: the shared PostgreSQL store's schema (``session.postgres``).
The gateway applies pending migrations itself at start-up; these are for operators who want to
see or do it beforehand (e.g. once, before rolling out replicas)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import orjson

from openclaw.cli.common import config_option, fail, load
from openclaw.errors import ConfigError
from openclaw.sessions.base import STORAGE_ERRORS
from openclaw.sessions.postgres import database_url, where
from openclaw.sessions.postgres import schema as migrations
from openclaw.sessions.postgres.store import connect


def database(config_path: Path | None) -> tuple[str, str, float]:
    """(url, schema, connect timeout) of the configured database, or a clean exit."""
    config = load(config_path)
    pg = config.session.postgres
    try:
        return database_url(pg), pg.schema_name, pg.connect_timeout_seconds
    except ConfigError as exc:
        if config.session.store != "postgres":
            fail(
                'session.store is "sqlite" (the embedded store in the state dir): there is no '
                'database; see "Running several replicas" in the README to use one'
            )
        fail(str(exc))


@click.group("db")
def db_group() -> None:
    """The shared PostgreSQL store's schema (session.store "postgres")."""


@db_group.command("migrate")
@config_option
def db_migrate(config_path: Path | None) -> None:
    """Apply the schema migrations the database lacks (safe beside running replicas)."""
    url, schema, timeout = database(config_path)

    async def run() -> list[migrations.Migration]:
        conn = await connect(url, connect_timeout=timeout)
        try:
            return await migrations.migrate(conn, schema)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except migrations.SchemaTooNewError as exc:
        fail(str(exc))
    except STORAGE_ERRORS as exc:
        fail(f"cannot reach the database at {where(url)}: {type(exc).__name__}: {exc}")
    for step in applied:
        click.echo(f"applied {step.version}: {step.name}")
    click.echo(
        f"{where(url)} schema {schema!r}: version {migrations.LATEST} of {migrations.LATEST}"
        " (up to date)"
    )


@db_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_option
def db_status(as_json: bool, config_path: Path | None) -> None:
    """The schema's version, and the migrations a start-up (or `db migrate`) would apply."""
    url, schema, timeout = database(config_path)

    async def run() -> migrations.SchemaStatus:
        conn = await connect(url, connect_timeout=timeout)
        try:
            return await migrations.status(conn, schema)
        finally:
            await conn.close()

    try:
        status = asyncio.run(run())
    except STORAGE_ERRORS as exc:
        fail(f"cannot reach the database at {where(url)}: {type(exc).__name__}: {exc}")
    if as_json:
        out = {
            "database": where(url),
            "schema": schema,
            "current": status.current,
            "latest": status.latest,
            "pending": [{"version": m.version, "name": m.name} for m in status.pending],
        }
        click.echo(orjson.dumps(out).decode())
        return
    click.echo(f"{where(url)} schema {schema!r}: version {status.current} of {status.latest}")
    for step in status.pending:
        click.echo(f"pending {step.version}: {step.name}")
    if status.current > status.latest:
        fail("the database is newer than this gateway: upgrade the gateway")
