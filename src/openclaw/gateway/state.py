"""What one running gateway owns; built once by ``create_app`` and hung off ``app.state``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import HTTPConnection

from openclaw.config.schema import Config
from openclaw.gateway.auth import Authenticator, ResolvedSecret
from openclaw.runtime import Runtime


@dataclass
class GatewayState:
    config: Config
    state_dir: Path
    secret: ResolvedSecret
    auth: Authenticator
    runtime: Runtime
    started_at: float = field(default_factory=time.time)


def gateway_of(conn: HTTPConnection) -> GatewayState:
    gw: GatewayState = conn.app.state.gateway
    return gw


def client_addr(conn: HTTPConnection) -> str | None:
    client = conn.scope.get("client")
    return client[0] if client else None


def require_auth(conn: HTTPConnection) -> str:
    """Check the bearer secret of an HTTP request (401/429 wire errors); the caller's
    identity."""
    gw: GatewayState = conn.app.state.gateway
    auth = gw.auth
    user = conn.headers.get(auth.user_header) if auth.mode == "trusted-proxy" else None
    return auth.check_header(conn.headers.get("authorization"), client_addr(conn), user)
