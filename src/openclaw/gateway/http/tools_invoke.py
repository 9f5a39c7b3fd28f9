"""``POST /tools/invoke``: run one of an agent's tools directly, as the reference does.

Always on beside the rest of the HTTP surface, same auth.  Body ``{tool, action?, args?,
sessionKey?, dryRun?}`` (2 MB at most); the agent is the one a ``sessionKey`` names, else the
default agent, and its tool policy applies, minus an HTTP deny list (tools that change the host,
adjusted by ``gateway.tools``).  200 ``{ok: true, result}``; errors as ``{ok: false, error:
{type, message}}`` (``gateway.wire`` renders them): 400 bad input, 401, 429, 404 a tool that is
unknown or not allowed here, 405.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from openclaw.agents.registry import UnknownAgentError
from openclaw.config import defaults as d
from openclaw.errors import InvalidRequestError, NotFoundError
from openclaw.gateway.body import read_body
from openclaw.gateway.state import GatewayState, require_auth
from openclaw.sessions.keys import namespace_of
from openclaw.tools.base import ToolError


class InvokeBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    tool: StrictStr = Field(min_length=1)
    action: StrictStr | None = None
    args: dict[str, Any] = {}
    session_key: StrictStr | None = Field(None, alias="sessionKey")
    dry_run: StrictBool = Field(False, alias="dryRun")


class ToolsInvokeEndpoint:
    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        self.body_timeout = gw.config.gateway.http.body_timeout_ms / 1000

    async def handle(self, request: Request) -> Response:
        caller = await require_auth(request)
        raw = await read_body(
            request, limit=d.TOOLS_INVOKE_MAX_BODY_BYTES, timeout=self.body_timeout
        )
        try:
            body = InvokeBody.model_validate_json(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "body"
            raise InvalidRequestError(f"`{where}`: {error['msg']}.", param=where) from None
        runtime = self.gw.runtime
        try:
            target = runtime.agents.target(
                None, session_key=body.session_key, default="main", namespace=namespace_of(caller)
            )
            agent = runtime.agents.get(target.agent_id)
        except ValueError:
            raise InvalidRequestError("Invalid `sessionKey`.", param="sessionKey") from None
        except UnknownAgentError as exc:
            raise InvalidRequestError(exc.message, param="sessionKey") from None
        # Tool names are matched as the policy matches them: case-insensitively.
        tool = runtime.toolbox.for_http(agent.id).tools.get(body.tool.strip().lower())
        if tool is None:
            raise NotFoundError(
                f"Tool `{body.tool}` is not available here.", code="tool_not_found", param="tool"
            )
        args = dict(body.args)
        if body.action is not None and "action" in tool.args.model_fields:
            args["action"] = body.action
        try:
            parsed = tool.parse(args)
        except ToolError as exc:
            raise InvalidRequestError(str(exc), param="args") from None
        if body.dry_run:
            checked = parsed.model_dump(by_alias=True, exclude_unset=True)
            return _ok({"dryRun": True, "tool": tool.name, "args": checked})
        done = await runtime.toolbox.run(tool, args, runtime.toolbox.context(agent, target))
        result = done.result
        return _ok(
            {
                "text": result.text,
                "isError": result.is_error,
                "details": dict(result.details or {}),
                "durationMs": done.duration_ms,
            }
        )


def _ok(result: dict[str, Any]) -> Response:
    return Response(orjson.dumps({"ok": True, "result": result}), media_type="application/json")
