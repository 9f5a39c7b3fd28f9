"""The shared store for gateway replicas: sessions, transcripts, stored responses, session
leases and failed-auth counters in one PostgreSQL database (``session.store: "postgres"``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import ValidationError

from openclaw.config.schema import PostgresConfig
from openclaw.errors import ConfigError
from openclaw.sessions.postgres.lease import PostgresSessionLeases
from openclaw.sessions.postgres.store import PostgresSessionStore

__all__ = [
    "ENV_URL",
    "PostgresSessionLeases",
    "PostgresSessionStore",
    "database_url",
    "url_password",
    "where",
]

ENV_URL = "OPENCLAW_DATABASE_URL"


def where(url: str) -> str:
    """The database as it may be printed or logged: host, port and name, never credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a database URL that cannot be parsed)"  # never echoed: it may hold a password
    return f"{host}{port}{parts.path or ''}"


def url_password(url: str) -> str | None:
    """The password in a database URL, if any (a secret the gateway masks everywhere)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def database_url(cfg: PostgresConfig, env: Mapping[str, str] | None = None) -> str:
    """``session.postgres.url``, else ``$OPENCLAW_DATABASE_URL``; a config error without."""
    url = cfg.url or (os.environ if env is None else env).get(ENV_URL)
    if not url:
        raise ConfigError(
            'session.store is "postgres" but no database is named: set session.postgres.url '
            f"or {ENV_URL}"
        )
    if cfg.url is None:
        try:  # the same check as the config's own value (never echoing it)
            PostgresConfig(url=url)
        except ValueError as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ConfigError(f"{ENV_URL}: {message}") from None
    return url
