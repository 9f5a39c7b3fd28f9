"""``create_app(config)``: builds the whole gateway as one ASGI app (HTTP and WebSocket)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from openclaw import paths
from openclaw.config.schema import Config
from openclaw.gateway import openapi
from openclaw.gateway.auth import Authenticator, is_loopback_host, resolve_secret
from openclaw.gateway.control_ui import ControlUi
from openclaw.gateway.http.chat_completions import ChatCompletionsEndpoint
from openclaw.gateway.http.embeddings import EmbeddingsEndpoint
from openclaw.gateway.http.health import health
from openclaw.gateway.http.models import ModelsEndpoint, first_served
from openclaw.gateway.http.responses import ResponsesEndpoint
from openclaw.gateway.http.tools_invoke import ToolsInvokeEndpoint
from openclaw.gateway.middleware import GatewayMiddleware
from openclaw.gateway.shared_failures import SharedFailures
from openclaw.gateway.state import GatewayState
from openclaw.gateway.wire import raise_as_error
from openclaw.gateway.ws import base_methods, websocket_endpoint
from openclaw.gateway.ws_methods import runtime_methods
from openclaw.gateway.ws_status import status_methods
from openclaw.runtime import Runtime
from openclaw.sessions.postgres import database_url
from openclaw.sessions.postgres.auth_failures import PostgresFailures


class GatewayApp(Starlette):
    """Starlette, with the hot routes (``fast``: (method, path) to endpoint) entered at a
    ``GatewayMiddleware`` of their own, without the router and Starlette's error middleware:
    GatewayMiddleware renders every error itself, and each layer skipped is a wrapper less
    around every message sent."""

    def __init__(self, fast: dict[tuple[str, str], ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast = fast
        self._front = GatewayMiddleware(self.router, fast=fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self._fast:
            scope["app"] = self
            await self._front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def bind_host(bind: str) -> str:
    """The address to listen on for a ``gateway.bind`` value."""
    if bind == "loopback":
        return "127.0.0.1"
    if bind == "lan":
        return "0.0.0.0"
    return bind


def create_app(
    config: Config,
    *,
    state_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Starlette:
    """Build everything the gateway needs; nothing lives in module globals."""
    state = paths.make_private_dir(paths.state_dir(state_dir))
    secret = resolve_secret(
        config.gateway.auth,
        state_dir=state,
        loopback_only=is_loopback_host(bind_host(config.gateway.bind)),
        env=env,
    )
    gw = GatewayState(
        config=config,
        state_dir=state,
        secret=secret,
        auth=Authenticator(secret, config.gateway.auth),
        runtime=Runtime(config, state, secrets=[secret.secret] if secret.secret else []),
    )

    api_doc = orjson.dumps(openapi.document(config))

    async def openapi_json(request: Request) -> Response:
        return Response(api_doc, media_type="application/json")

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/tools/invoke", ToolsInvokeEndpoint(gw).handle, methods=["POST"]),
        WebSocketRoute("/", websocket_endpoint),
        WebSocketRoute("/ws", websocket_endpoint),
    ]
    ui = config.gateway.control_ui
    if ui.enabled:
        page = ControlUi(ui.base_path)
        routes += page.routes()
        if page.base:
            # The page talks to the WebSocket under its own base path (a reverse proxy may
            # forward only that prefix).
            routes += [WebSocketRoute(page.base, websocket_endpoint)]
            routes += [WebSocketRoute(page.base + "/", websocket_endpoint)]
    fast: dict[tuple[str, str], ASGIApp] = {}
    endpoints = config.gateway.http.endpoints
    if endpoints.chat_completions.enabled:
        chat = ChatCompletionsEndpoint(gw)
        fast[("POST", "/v1/chat/completions")] = chat
        routes.append(Route("/v1/chat/completions", chat, methods=["POST"]))
    if endpoints.responses.enabled:
        responses = ResponsesEndpoint(gw)
        fast[("POST", "/v1/responses")] = responses
        routes += [
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/responses/{response_id}", responses.stored, methods=["GET", "DELETE"]),
            Route(
                "/v1/responses/{response_id}/input_items", responses.input_items, methods=["GET"]
            ),
        ]
    if endpoints.chat_completions.enabled or endpoints.responses.enabled:
        # Served beside either OpenAI endpoint, as the reference does.
        models = ModelsEndpoint(gw.runtime.agents, first_served(state))
        routes += [
            Route("/v1/models", models.list, methods=["GET"]),
            Route("/v1/models/{model_id:path}", models.retrieve, methods=["GET"]),
            Route("/v1/embeddings", EmbeddingsEndpoint(gw).handle, methods=["POST"]),
        ]

    shared: SharedFailures | PostgresFailures | None = None
    limiter = gw.auth.limiter
    if config.session.store == "postgres":
        # Replicas (and their workers) share one database: failed attempts are counted there.
        pg = config.session.postgres
        shared = PostgresFailures(
            database_url(pg),
            schema=pg.schema_name,
            cfg=config.gateway.auth.rate_limit,
            apply=limiter.lock,
            connect_timeout=pg.connect_timeout_seconds,
            statement_timeout=pg.statement_timeout_seconds,
        )
    elif config.gateway.worker_count() > 1:
        # Several workers: failed auth attempts are counted over all of them.
        shared = SharedFailures(state, config.gateway.auth.rate_limit, limiter.lock)
    limiter.shared = shared

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.runtime.start()
        if shared is not None:
            await shared.start()
        try:
            yield
        finally:
            # uvicorn has already stopped accepting and finished or cancelled in-flight
            # requests; now pending transcript writes finish and stores close.
            if shared is not None:
                await shared.close()
            await gw.runtime.close()

    app = GatewayApp(
        fast,
        routes=routes,
        middleware=[Middleware(GatewayMiddleware)],
        # Starlette renders its own routing errors unless told otherwise: they are re-raised
        # as ours, for GatewayMiddleware to render with every other error.
        exception_handlers={HTTPException: raise_as_error},
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.state.ws_methods = {**base_methods(), **runtime_methods(), **status_methods()}
    return app
