"""What one running gateway owns; built once by ``create_app`` and hung off ``app.state``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from openclaw.config.schema import Config
from openclaw.errors import PermissionDeniedError
from openclaw.gateway.auth import Authenticator, ResolvedSecret
from openclaw.runtime import Runtime


@dataclass(eq=False)
class AbortableRun:
    """A run a WebSocket client started, which ``agent.abort`` may stop: the task serving it,
    and who started it (only the same caller may stop it)."""

    task: asyncio.Task[Any]
    identity: str
    aborted: bool = False


@dataclass
class GatewayState:
    config: Config
    state_dir: Path
    secret: ResolvedSecret
    auth: Authenticator
    runtime: Runtime
    started_at: float = field(default_factory=time.time)
    # Runs started over the WebSocket in this process, by run id.
    ws_runs: dict[str, AbortableRun] = field(default_factory=dict)


def gateway_of(conn: HTTPConnection) -> GatewayState:
    gw: GatewayState = conn.app.state.gateway
    return gw


def client_addr(conn: HTTPConnection) -> str | None:
    client = conn.scope.get("client")
    return client[0] if client else None


async def require_auth(conn: HTTPConnection) -> str:
    """Check the bearer secret of an HTTP request (401/429 wire errors); the caller's
    identity."""
    gw: GatewayState = conn.app.state.gateway
    auth = gw.auth
    if auth.mode == "none" and (refused := browser_refusal(conn, gw)) is not None:
        raise PermissionDeniedError(refused)
    user = conn.headers.get(auth.user_header) if auth.mode == "trusted-proxy" else None
    return await auth.check_header(conn.headers.get("authorization"), client_addr(conn), user)


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in _LOOPBACK_NAMES or name.startswith("127.") or name.endswith(".localhost")


def browser_refusal(conn: HTTPConnection, gw: GatewayState) -> str | None:
    """Why a request may not be served without a secret, if it may not.  Without a secret,
    nothing stops a web page the user visits from calling the gateway (a cross-site request,
    or DNS rebinding: a page's own name pointed at 127.0.0.1).  So: no request from another
    site's page, and, on loopback, only loopback host names."""
    headers = conn.headers
    host = headers.get("host", "").lower()
    if headers.get("sec-fetch-site", "none") not in ("none", "same-origin"):
        return "Cross-site requests are refused (gateway.auth.mode none)."
    origin = headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc.lower() != host:
        return "Cross-origin requests are refused (gateway.auth.mode none)."
    if not gw.config.gateway.auth.allow_unauthenticated and not _loopback_host(host):
        return "Only loopback host names are served without a secret (gateway.auth.mode none)."
    return None
