"""WebSocket methods that describe the running gateway: ``status`` and ``agents.list``.

What they report is this process's: with ``gateway.workers`` above 1, each worker answers for
itself (its pid, uptime and the runs it is serving), and says so with ``workers``.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from openclaw import __version__
from openclaw.config.schema import Config
from openclaw.gateway.ws import Connection, Method
from openclaw.runtime import CREDENTIAL_HEADER, Runtime
from openclaw.sessions.keys import namespace_of, owned
from openclaw.tools.redact import MASK, Redactor

# Config keys whose values are credentials wherever they appear; header values are masked by
# header name (the runtime's rule for the secrets it cuts out of tool output, and a few more).
_SECRET_KEY = re.compile(r"^(token|password|apiKey|secret|.*Secret|.*Token|.*Password)$")
_SECRET_HEADER = re.compile(r"credential|signature|api", re.IGNORECASE)
# A URL's user-info (user:password@) and query values may carry credentials (a proxy's login, a
# `?key=` API key, a database password): both are masked in any URL-shaped value.
_URL = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<userinfo>[^@/?#]*)@)?(?P<rest>.*)$"
)
_QUERY_VALUE = re.compile(r"([?&][^=&#]*=)[^&#]*")


def status_methods() -> dict[str, Method]:
    return {"status": status, "agents.list": agents_list}


def agents_payload(runtime: Runtime) -> list[dict[str, Any]]:
    """Each configured agent: id, name, whether it is the default, its model and the tools its
    model is offered (none for a model that cannot call tools, such as the embedded one)."""
    default = runtime.agents.default_id
    return [
        {
            "id": agent.id,
            "name": agent.name,
            "default": agent.id == default,
            "model": agent.model.primary,
            "fallbacks": list(agent.model.fallbacks),
            "tools": _tools(runtime, agent.id, agent.model.primary),
        }
        for agent in runtime.agents
    ]


def _tools(runtime: Runtime, agent_id: str, ref: str) -> list[str]:
    provider, model, _ = runtime.providers.resolve(ref)
    if not provider.supports_tools(model):
        return []
    return sorted(runtime.toolbox.for_agent(agent_id).tools)


async def agents_list(conn: Connection, params: dict[str, Any]) -> Any:
    runtime = conn.gw.runtime
    return {"agents": agents_payload(runtime), "defaultId": runtime.agents.default_id}


async def status(conn: Connection, params: dict[str, Any]) -> Any:
    """Version, uptime, agents, endpoints, the runs in progress here, the effective config
    (every secret masked)."""
    gw = conn.gw
    config = gw.config
    endpoints = config.gateway.http.endpoints
    runtime = gw.runtime
    runs = [
        {
            "runId": run.run_id,
            "sessionKey": run.session_key,
            "agentId": run.agent_id,
            "startedAt": run.started_at,
            # Only runs this caller started over this WebSocket door can be stopped from here.
            "abortable": run.run_id in gw.ws_runs,
        }
        for run in runtime.runner.active_runs()
        if owned(run.session_key, namespace_of(conn.identity))
    ]
    now = time.time()
    return {
        "version": __version__,
        "startedAt": gw.started_at,
        "uptimeSeconds": round(now - gw.started_at, 3),
        "pid": os.getpid(),
        "workers": config.gateway.worker_count(),
        "auth": {"mode": gw.auth.mode},
        "endpoints": {
            "chatCompletions": endpoints.chat_completions.enabled,
            "responses": endpoints.responses.enabled,
            "embeddings": endpoints.chat_completions.enabled or endpoints.responses.enabled,
            "models": endpoints.chat_completions.enabled or endpoints.responses.enabled,
            "toolsInvoke": True,
            "controlUi": config.gateway.control_ui.enabled,
        },
        "agents": agents_payload(runtime),
        "activeRuns": runs,
        # What an `agent` request may attach (the chat completions endpoint's image limits).
        "limits": {
            "maxImageParts": endpoints.chat_completions.max_image_parts,
            "maxImageBytes": endpoints.chat_completions.images.max_bytes,
            "maxTotalImageBytes": endpoints.chat_completions.max_total_image_bytes,
            "imageTypes": list(endpoints.chat_completions.images.allowed_mimes),
        },
        # The gateway's configuration is for whoever holds its secret; a trusted proxy's users
        # are users, not its operators.
        "config": (
            redacted_config(config, runtime.redactor)
            if namespace_of(conn.identity) is None
            else None
        ),
    }


def redacted_config(config: Config, redactor: Redactor) -> dict[str, Any]:
    """The effective config (defaults included, camelCase as in the file) with credentials
    masked: secret-named keys, credential headers, and any known secret anywhere in a value."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True)
    return _mask(data, redactor, secret=False)  # type: ignore[no-any-return]


def _mask(value: Any, redactor: Redactor, *, secret: bool) -> Any:
    if isinstance(value, dict):
        return {
            key: _mask(item, redactor, secret=secret or bool(_SECRET_KEY.match(key)))
            if key != "headers"
            else _mask_headers(item, redactor)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item, redactor, secret=secret) for item in value]
    if isinstance(value, str):
        return MASK if secret and value else redactor(_mask_url(value))
    return value


def _mask_url(value: str) -> str:
    match = _URL.match(value)
    if match is None:
        return value
    userinfo = f"{MASK}@" if match["userinfo"] is not None else ""
    return match["scheme"] + userinfo + _QUERY_VALUE.sub(rf"\g<1>{MASK}", match["rest"])


def _mask_headers(headers: Any, redactor: Redactor) -> Any:
    if not isinstance(headers, dict):
        return _mask(headers, redactor, secret=False)
    return {
        name: MASK
        if CREDENTIAL_HEADER.search(name) or _SECRET_HEADER.search(name)
        else _mask(v, redactor, secret=False)
        for name, v in headers.items()
    }
