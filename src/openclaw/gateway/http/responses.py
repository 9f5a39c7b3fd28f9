"""``/v1/responses``: the OpenAI Responses API as an ordinary agent run, and its stored
responses.

``POST /v1/responses`` runs the agent (``responses_request`` makes the run, ``responses_response``
the answers); with ``store`` (the default) the response is committed before its final bytes, in
the session store, so ``previous_response_id`` continues it durably, across restarts, for the
same caller and agent only.  ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read and remove stored responses.  Errors are raised;
``gateway.wire`` renders them (JSON before a stream starts, ``response.failed`` after).  A stream
ends with ``response.completed`` and no ``data: [DONE]``, as OpenAI's does.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from openclaw.agents.runner import RunParams, RunResult
from openclaw.errors import InvalidRequestError, NotFoundError, OpenClawError
from openclaw.gateway import wire
from openclaw.gateway.http.chat_request import SESSION_KEY_HEADER, model_override
from openclaw.gateway.http.responses_request import (
    API,
    agent_id_of,
    continued_target,
    run_params,
    target_of,
)
from openclaw.gateway.http.responses_response import (
    EventStream,
    ResponseShape,
    output_items,
    response_id,
)
from openclaw.gateway.http.streaming import (
    ClientGone,
    SseStream,
    empty_reply,
    race_disconnect,
    read_request,
    send_json_body,
)
from openclaw.gateway.responses_schema import CreateResponse, parse_request
from openclaw.gateway.state import GatewayState, require_auth
from openclaw.logs import get_logger
from openclaw.messages import TextDelta, ToolCallDelta
from openclaw.sessions.keys import Target, ephemeral_key
from openclaw.sessions.responses import StoredResponse

log = get_logger("responses")

_SHOWN: tuple[type, ...] = (TextDelta, ToolCallDelta, RunResult)
MAX_LIST_LIMIT = 100


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")


class ResponsesEndpoint:
    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        http = gw.config.gateway.http
        self.cfg = http.endpoints.responses
        self.body_timeout = http.body_timeout_ms / 1000
        self.keepalive = http.sse_keepalive_ms / 1000

    # --- POST /v1/responses -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An ASGI app on the route, so the run can race the client leaving."""
        request = Request(scope, receive)
        headers: dict[str, str] = {}
        try:
            caller, req = await read_request(
                request,
                limit=self.cfg.max_body_bytes,
                timeout=self.body_timeout,
                parse=parse_request,
            )
            runtime = self.gw.runtime
            agent = runtime.agents.get(agent_id_of(request, req.model))
            previous = await self._previous(req, caller, agent.id)
            if previous is not None:
                target = await self._continuing(previous, caller)
            else:
                target = target_of(request, req, agent.id, runtime.agents, caller)
            model = model_override(request, runtime.agents, target.agent_id)
            params, items = await run_params(
                req, target, self.cfg, continues=previous is not None, model=model
            )
            headers[SESSION_KEY_HEADER] = target.key
            shape = ResponseShape(req, response_id(), int(time.time()))
            run = _Run(self, req, params, items, shape, caller, previous)
            if req.stream:
                events = EventStream(shape)
                # Once the stream has started, an error ends it the Responses way.
                scope[wire.STREAM_ERRORS] = wire.StreamErrors(events.failed)
                await race_disconnect(receive, run.stream(events, headers, send))
            else:
                await race_disconnect(receive, run.complete(headers, send))
        except ClientGone:
            return
        except OpenClawError as exc:
            exc.headers.update(headers)
            raise

    async def _previous(
        self, req: CreateResponse, caller: str, agent_id: str
    ) -> StoredResponse | None:
        """The stored response this one continues; 400 when it is unknown, another caller's,
        or another agent's (as OpenAI: one cannot tell those apart)."""
        if req.previous_response_id is None:
            return None
        stored = await self.gw.runtime.store.get_response(req.previous_response_id)
        if stored is None or stored.owner != caller or stored.agent_id != agent_id:
            raise InvalidRequestError(
                f"Previous response with id '{req.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return stored

    async def _continuing(self, previous: StoredResponse, caller: str) -> Target:
        """Where a run continuing ``previous`` goes: its session when ``previous`` is still its
        last turn; else (the session went on from it: another follow-up, a deleted, unstored or
        failed one) a new session holding the conversation up to ``previous`` and no further,
        so that a chain of responses is exactly that chain."""
        store = self.gw.runtime.store
        entry = await store.get(previous.session_key)
        if entry is not None:
            last = await store.read_history(entry, max_records=1)
            if last and last[-1].run_id == previous.run_id:
                return continued_target(previous.agent_id, previous.session_key, caller)
            records = await store.read_history(entry, max_records=None)
            ends = [i for i, r in enumerate(records) if r.run_id == previous.run_id]
            if ends:
                fork = ephemeral_key(previous.agent_id, API)
                created = await store.get_or_create(fork, previous.agent_id, ephemeral=True)
                await store.append(created, records[: ends[-1] + 1], model=None, usage=None)
                return continued_target(previous.agent_id, fork, caller)
        # Its conversation is gone (the session was deleted): it cannot be continued.
        raise InvalidRequestError(
            f"Previous response with id '{previous.id}' can no longer be continued.",
            param="previous_response_id",
            code="previous_response_not_found",
        )

    async def save(self, run: _Run, final: dict[str, Any], run_id: str) -> None:
        if not run.req.store:
            return
        now = time.time()
        stored = StoredResponse(
            id=run.shape.id,
            owner=run.caller,
            agent_id=run.params.target.agent_id,
            session_key=run.params.target.key,
            run_id=run_id,
            created_at=now,
            used_at=now,
            body=orjson.dumps(final),
            input_items=orjson.dumps(run.items),
        )
        previous = run.previous.id if run.previous is not None else None
        await self.gw.runtime.store.save_response(stored, previous=previous)

    # --- stored responses ---------------------------------------------------------------------

    async def _stored(self, request: Request) -> StoredResponse:
        caller = await require_auth(request)
        rid = request.path_params["response_id"]
        stored = await self.gw.runtime.store.get_response(rid)
        if stored is None or stored.owner != caller:
            raise _not_found(rid)
        return stored

    async def stored(self, request: Request) -> Response:
        """``/v1/responses/{id}``: GET reads, DELETE removes (one route, so that a 405 there
        names both in its ``Allow``)."""
        if request.method == "DELETE":
            return await self.delete(request)
        return await self.retrieve(request)

    async def retrieve(self, request: Request) -> Response:
        stored = await self._stored(request)
        return Response(stored.body, media_type="application/json")

    async def delete(self, request: Request) -> Response:
        stored = await self._stored(request)
        await self.gw.runtime.store.delete_response(stored.id)
        body = {"id": stored.id, "object": "response.deleted", "deleted": True}
        return Response(orjson.dumps(body), media_type="application/json")

    async def input_items(self, request: Request) -> Response:
        stored = await self._stored(request)
        items: list[dict[str, Any]] = orjson.loads(stored.input_items)
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError("`order` must be `asc` or `desc`.", param="order")
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequestError(
                f"`limit` must be an integer from 1 to {MAX_LIST_LIMIT}.", param="limit"
            )
        if order == "desc":
            items.reverse()
        for bound, skip in (("after", 1), ("before", 0)):
            mark = query.get(bound)
            if mark is None:
                continue
            at = next((i for i, item in enumerate(items) if item.get("id") == mark), None)
            if at is None:
                raise InvalidRequestError(f"No input item `{mark}`.", param=bound)
            items = items[at + skip :] if bound == "after" else items[:at]
        page = items[:limit]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
        return Response(orjson.dumps(body), media_type="application/json")


class _Run:
    """One ``POST /v1/responses``: its run, answered whole or streamed."""

    def __init__(
        self,
        endpoint: ResponsesEndpoint,
        req: CreateResponse,
        params: RunParams,
        items: list[dict[str, Any]],
        shape: ResponseShape,
        caller: str,
        previous: StoredResponse | None,
    ) -> None:
        self.endpoint = endpoint
        self.req = req
        self.params = params
        self.items = items
        self.shape = shape
        self.caller = caller
        self.previous = previous

    async def complete(self, headers: dict[str, str], send: Send) -> None:
        result = await self.endpoint.gw.runtime.runner.run(self.params)
        if not result.text and not result.tool_calls:
            raise empty_reply()
        final = self.shape.finished(result, output_items(result))
        # Stored before it is answered: a client told of a response can always continue it.
        await self.endpoint.save(self, final, result.run_id)
        await send_json_body(send, orjson.dumps(final), headers)

    async def stream(self, events: EventStream, headers: dict[str, str], send: Send) -> None:
        endpoint = self.endpoint
        stream = SseStream(send, headers, endpoint.keepalive, opening=events.opening())
        runner, params = endpoint.gw.runtime.runner, self.params
        async for item in stream.items(
            lambda emit: runner.execute(params, emit), _SHOWN, final=(RunResult,)
        ):
            if isinstance(item, TextDelta):
                await stream.send(events.text(item.text))
            elif isinstance(item, ToolCallDelta):
                await stream.send(events.call(item))
            elif isinstance(item, RunResult):
                if not item.text and not item.tool_calls:
                    raise empty_reply()
                tail, final = events.finish(item)
                await endpoint.save(self, final, item.run_id)
                await stream.send(tail, last=True)
                return
