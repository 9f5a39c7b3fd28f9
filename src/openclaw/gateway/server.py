"""Running the gateway: one uvicorn listener for HTTP and WebSocket, a clear start-up line, and
uvicorn's shutdown recipe (stop accepting, let in-flight work finish within a bound, cancel the
rest, then the lifespan closes stores)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from openclaw.agents.runner import AgentRunner
from openclaw.config.schema import Config
from openclaw.gateway.app import bind_host, create_app
from openclaw.gateway.auth import ResolvedSecret
from openclaw.gateway.coalesce import CoalescingHttpToolsProtocol
from openclaw.gateway.state import GatewayState
from openclaw.logs import get_logger
from openclaw.sessions.base import STORAGE_ERRORS
from openclaw.sessions.postgres import database_url, where
from openclaw.sessions.postgres.store import connect

log = get_logger("gateway")


def uvicorn_config(app: Starlette, config: Config) -> uvicorn.Config:
    """uvicorn settings for the gateway (also used by tests that start it on an ephemeral port)."""
    return uvicorn.Config(
        app,
        host=bind_host(config.gateway.bind),
        port=config.gateway.port,
        loop="none",
        # httptools, a response's writes of one loop step sent as one (``coalesce``).
        http=CoalescingHttpToolsProtocol,
        ws="websockets-sansio",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # Client addresses come from the socket: a spoofable X-Forwarded-For must not steer the
        # auth rate limiter.
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, -(-config.gateway.shutdown_timeout_ms // 1000)),
        timeout_keep_alive=30,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_max_size=ws_max_size(config),
    )


def ws_max_size(config: Config) -> int:
    """The largest WebSocket message: uvicorn's 16 MiB, or more when the images an ``agent``
    request may carry (the chat completions limits, base64-encoded) need it."""
    images = config.gateway.http.endpoints.chat_completions.max_total_image_bytes
    return max(16 * 1024 * 1024, images * 4 // 3 + 1024 * 1024)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, but a signal ends in a clean exit (status 0, a last log line) rather
    than uvicorn re-raising it after shutdown; a second signal forces the exit."""

    def __init__(
        self, config: uvicorn.Config, runner: AgentRunner | None = None, *, signals: bool = True
    ) -> None:
        super().__init__(config)
        self.runner = runner
        # A worker leaves signals to its supervisor (under systemd both would get SIGTERM, and
        # a second one forces the exit): it stops when told on stdin.
        self.signals = signals

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, give runs on every door (WebSocket ones too, which uvicorn would close
        at once) the shutdown bound to finish, then uvicorn's own recipe."""
        for server in self.servers:
            server.close()
        if self.runner is not None and not self.force_exit:
            timeout = self.config.timeout_graceful_shutdown
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.runner.wait_idle()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.signals:
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.should_exit:
            log.warning("second signal: forcing exit")
            self.force_exit = True
        else:
            log.info(
                "shutting down: no new connections, in-flight requests get up to "
                f"{self.config.timeout_graceful_shutdown}s",
                extra={"signal": signal.Signals(sig).name},
            )
        self.should_exit = True


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def describe_listen(server: uvicorn.Server, app: Starlette) -> str:
    gw: GatewayState = app.state.gateway
    addrs = [socket_url(sock) for srv in server.servers for sock in srv.sockets]
    return listen_line(addrs, gw.config, gw.secret)


def listen_line(addrs: list[str], config: Config, secret: ResolvedSecret) -> str:
    """The start-up line: where, which endpoints, how clients authenticate."""
    endpoints = ["health", "ws", "toolsInvoke"]
    enabled = config.gateway.http.endpoints
    if enabled.chat_completions.enabled:
        endpoints.append("chatCompletions")
    if enabled.responses.enabled:
        endpoints.append("responses")
    if enabled.chat_completions.enabled or enabled.responses.enabled:
        endpoints += ["models", "embeddings"]
    hint = ""
    if secret.mode == "none":
        hint = " (no secret: anyone who can reach the port is let in)"
    elif secret.mode == "trusted-proxy":
        proxy = config.gateway.auth.trusted_proxy
        hint = f" (user from `{proxy.user_header}` of {', '.join(proxy.addresses)})"
    elif secret.source == "generated":
        hint = f" (generated; read it with `openclaw gateway token`, kept in {secret.path})"
    elif secret.source == "env":
        hint = " (from environment)"
    workers = config.gateway.worker_count()
    ui = config.gateway.control_ui
    page = f"; control page: {addrs[0]}{ui.base_path}" if ui.enabled and addrs else ""
    store = ""
    if config.session.store == "postgres":
        pg = config.session.postgres
        store = f"; store: postgres {where(database_url(pg))} schema {pg.schema_name}"
    return (
        f"gateway listening on {', '.join(addrs)}; endpoints: {', '.join(endpoints)}; "
        f"auth: {secret.mode}{hint}"
        + (f"; {workers} workers" if workers > 1 else "")
        + store
        + page
    )


# Each open stream holds two sockets (client and upstream); below this, a busy gateway runs out.
FEW_OPEN_FILES = 4096


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one (many systems start processes at 1,024, a
    few hundred streams), and say so when even the hard limit is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            pass  # e.g. above the kernel's nr_open: keep what we have
        else:
            log.info(f"open-file limit raised from {soft} to {wanted}")
            soft = wanted
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        log.warning(
            f"open-file limit is {soft} (hard limit {hard}): about {soft // 2} concurrent "
            "streams at most; raise it (ulimit -Hn, LimitNOFILE=) for more"
        )


def tune_gc() -> None:
    """Move everything alive after start-up (modules, config, app) out of the collector's sight
    and make young-generation collections rarer: a request allocates many short-lived objects,
    and full collections rescanning the long-lived heap were measured at ~0.2 ms p50."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young * 10, middle, old)


def warn_if_unauthenticated(config: Config) -> None:
    auth = config.gateway.auth
    if auth.mode == "none" and auth.allow_unauthenticated:
        log.warning(
            "UNAUTHENTICATED: gateway.auth.mode is none and allowUnauthenticated is set: "
            "anyone who can reach this port can run agents, read sessions and use tools"
        )


async def serve(
    config: Config,
    *,
    state_dir: Path | None = None,
    sock: socket.socket | None = None,
    on_started: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start the gateway in the foreground until SIGINT/SIGTERM (or ``should_exit``).  A worker
    is given its listening socket and says it has started instead of the start-up line."""
    if sock is None:
        raise_open_file_limit()
    await reach_database(config)
    app = create_app(config, state_dir=state_dir)
    gw: GatewayState = app.state.gateway
    server = GatewayServer(uvicorn_config(app, config), gw.runtime.runner, signals=stop is None)
    if stop is not None:

        async def stop_when_told() -> None:
            await stop.wait()
            server.should_exit = True

        stopper = asyncio.create_task(stop_when_told())

    async def serve_until_done() -> None:
        try:
            await server.serve(sockets=None if sock is None else [sock])
        except SystemExit:
            # uvicorn exits when it cannot start (the port is taken, ...), having logged why:
            # one line for the user, not a traceback.
            return

    task = asyncio.create_task(serve_until_done())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.01)
    if server.started:
        if on_started is None:
            log.info(describe_listen(server, app))
            warn_if_unauthenticated(config)
        else:
            on_started()
        tune_gc()
    await task
    if stop is not None:
        stopper.cancel()
    if not server.started:
        raise SystemExit(1)
    if on_started is None:
        log.info("gateway stopped")


async def reach_database(config: Config) -> None:
    """With the shared store: a database that does not answer is one clear line and exit
    status 1 (what the start-up would otherwise report as a traceback)."""
    if config.session.store != "postgres":
        return
    pg = config.session.postgres
    url = database_url(pg)
    try:
        conn = await connect(url, connect_timeout=pg.connect_timeout_seconds)
    except STORAGE_ERRORS as exc:
        log.error(
            "cannot reach the session store's database",
            extra={"database": where(url), "error": f"{type(exc).__name__}: {exc}"},
        )
        raise SystemExit(1) from None
    await conn.close()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


def run(config: Config, *, state_dir: Path | None = None) -> None:
    """Blocking entry point: one process, or a supervisor of ``gateway.workers`` processes."""
    if config.gateway.worker_count() > 1:
        from openclaw.gateway.workers import supervise

        supervise(config, state_dir=state_dir)
    else:
        run_loop(serve(config, state_dir=state_dir))
