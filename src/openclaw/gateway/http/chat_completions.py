"""``POST /v1/chat/completions``: the OpenAI Chat Completions API as an ordinary agent run.

Order of checks, as the reference: path -> method (routing) -> auth -> body -> validation -> run.
The request becomes a run in ``chat_request``; the reply's shapes are ``chat_response``'s.  Errors
are raised; ``gateway.wire`` renders them (OpenAI-style JSON before the response starts; after a
stream has started, an SSE error event followed by ``[DONE]``).  A client that goes away cancels
the run, which closes the upstream call and stores the partial turn as aborted.
"""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from openclaw.agents.events import ToolFinished, ToolStarted
from openclaw.agents.runner import RunParams, RunResult
from openclaw.errors import OpenClawError
from openclaw.gateway import wire
from openclaw.gateway.http.chat_request import SESSION_KEY_HEADER, run_params
from openclaw.gateway.http.chat_response import ChunkWriter, completion, completion_id
from openclaw.gateway.http.chat_response import finish_reason as finish_reason_of
from openclaw.gateway.http.streaming import (
    ClientGone,
    SseStream,
    empty_reply,
    race_disconnect,
    read_request,
    send_json_body,
)
from openclaw.gateway.openai_schema import ChatCompletionRequest, parse_request
from openclaw.gateway.state import GatewayState
from openclaw.messages import TextDelta, ToolCallDelta

TOOL_EVENTS_HEADER = "x-openclaw-tool-events"
_SHOWN: tuple[type, ...] = (TextDelta, ToolCallDelta, RunResult)
_SHOWN_WITH_TOOLS: tuple[type, ...] = (*_SHOWN, ToolStarted, ToolFinished)
_DONE = b"data: [DONE]\n\n"


class ChatCompletionsEndpoint:
    """An ASGI app mounted on the route (so it can race the run against client disconnect)."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        cfg = gw.config.gateway.http
        self.cfg = cfg.endpoints.chat_completions
        self.body_timeout = cfg.body_timeout_ms / 1000
        self.keepalive = cfg.sse_keepalive_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers: dict[str, str] = {}
        try:
            caller, req = await read_request(
                request,
                limit=self.cfg.max_body_bytes,
                timeout=self.body_timeout,
                parse=parse_request,
            )
            params = await run_params(request, req, self.gw.runtime.agents, self.cfg, caller)
            headers[SESSION_KEY_HEADER] = params.target.key
            if req.stream:
                # Once the stream has started, an error ends it the chat completions way.
                scope[wire.STREAM_ERRORS] = wire.CHAT_COMPLETIONS_STREAM
                tool_events = self.cfg.tool_events or (
                    request.headers.get(TOOL_EVENTS_HEADER, "").strip().lower() in ("1", "true")
                )
                work = self._stream(req, params, headers, send, tool_events)
                await race_disconnect(receive, work)
            else:
                await race_disconnect(receive, self._complete(req, params, headers, send))
        except ClientGone:
            return
        except OpenClawError as exc:
            exc.headers.update(headers)
            raise

    async def _complete(
        self, req: ChatCompletionRequest, params: RunParams, headers: dict[str, str], send: Send
    ) -> None:
        result = await self.gw.runtime.runner.run(params)
        if not result.text and not result.tool_calls:
            raise empty_reply()
        body = orjson.dumps(completion(result, completion_id(), int(time.time()), req.model))
        await send_json_body(send, body, headers)

    async def _stream(
        self,
        req: ChatCompletionRequest,
        params: RunParams,
        headers: dict[str, str],
        send: Send,
        tool_events: bool,
    ) -> None:
        chunks = ChunkWriter(completion_id(), int(time.time()), req.model)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        stream = SseStream(send, headers, self.keepalive, opening=chunks.role)
        shown = _SHOWN_WITH_TOOLS if tool_events else _SHOWN
        runner = self.gw.runtime.runner
        async for item in stream.items(
            lambda emit: runner.execute(params, emit), shown, final=(RunResult,)
        ):
            if not isinstance(item, RunResult):
                await stream.send(chunks.render(item))  # type: ignore[arg-type]
                continue
            if not item.text and not item.tool_calls:
                raise empty_reply()
            tail = chunks.finish(finish_reason_of(item))
            if include_usage:
                tail += chunks.usage(item.usage.as_dict())
            await stream.send(tail + _DONE, last=True)
            return
