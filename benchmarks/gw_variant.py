"""``openclaw`` with what-if changes applied at start-up, for cost attribution (benchmarks only).

Run exactly like the ``openclaw`` command (``python benchmarks/gw_variant.py gateway run ...``)
with ``OPENCLAW_BENCH_VARIANTS`` a comma-separated list of the names below.  Each one removes or
cheapens one per-request cost, so "baseline vs variant" under the same load tells what that cost
is worth end to end.  They are measurement tools, not fixes: some drop behaviour the product
needs (disconnect detection, persisted turns, the 500 handler).

* ``no-ephemeral-persist``  stateless (no ``user``) runs are not written to the session store
* ``inline-store``          store calls run on the event loop instead of the worker thread
                            (shows what the thread hops cost, versus the SQLite/file work itself)
* ``no-disconnect-watch``   no watcher task per request racing the run against a disconnect
* ``no-gw-middleware``      GatewayMiddleware (request id, security headers, access log) skipped
* ``lean-routing``          POST /v1/chat/completions goes straight to GatewayMiddleware + the
                            endpoint, skipping Starlette's ServerError/Exception middleware and
                            router (everything else still takes the normal stack)
* ``no-lease``              stored-session runs take no cross-process session lease
* ``gc-freeze``             ``gc.freeze()`` once started, and gen-0 threshold 10x
* ``cprofile``              run under cProfile; stats written at exit to ``$OPENCLAW_BENCH_PROFILE``
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from typing import Any

VARIANTS = frozenset(v for v in os.environ.get("OPENCLAW_BENCH_VARIANTS", "").split(",") if v)
KNOWN = {
    "no-ephemeral-persist",
    "inline-store",
    "no-disconnect-watch",
    "no-gw-middleware",
    "lean-routing",
    "gc-freeze",
    "cprofile",
    "no-lease",
}


def apply() -> None:
    unknown = VARIANTS - KNOWN
    if unknown:
        sys.exit(f"unknown variants: {sorted(unknown)}")

    if "no-lease" in VARIANTS:
        from openclaw.sessions.lease import SessionLeases

        async def acquire(self: Any, key: str) -> None:
            return None

        SessionLeases.acquire = acquire  # type: ignore[method-assign]
        SessionLeases.release = lambda self, key: None  # type: ignore[method-assign]

    if "no-ephemeral-persist" in VARIANTS:
        from openclaw.agents.runner import AgentRunner

        commit = AgentRunner._commit

        async def _commit(self: Any, turn: Any) -> None:
            if not turn.ephemeral:
                await commit(self, turn)

        AgentRunner._commit = _commit  # type: ignore[method-assign]

    if "inline-store" in VARIANTS:
        import sqlite3

        from openclaw.sessions.worker import IoThread

        def _submit(self: Any, fn: Any) -> Any:
            # Every store job on the event loop itself (what the I/O thread costs).
            done = asyncio.get_running_loop().create_future()
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)
            return done

        connect = sqlite3.connect

        def _connect(*args: Any, **kw: Any) -> Any:
            kw["check_same_thread"] = False
            return connect(*args, **kw)

        sqlite3.connect = _connect  # type: ignore[assignment]
        IoThread.submit = _submit  # type: ignore[method-assign]

    if "no-disconnect-watch" in VARIANTS:
        from openclaw.gateway.http import chat_completions

        async def _race(receive: Any, work: Any) -> Any:
            return await work

        chat_completions.race_disconnect = _race  # type: ignore[assignment]

    if "no-gw-middleware" in VARIANTS:
        from openclaw.gateway.middleware import GatewayMiddleware

        async def _call(self: Any, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

        GatewayMiddleware.__call__ = _call  # type: ignore[method-assign]

    if "lean-routing" in VARIANTS:
        from starlette.applications import Starlette
        from starlette.routing import Route

        from openclaw.gateway.middleware import GatewayMiddleware

        build = Starlette.build_middleware_stack

        def _build(self: Any) -> Any:
            stack = build(self)
            endpoint = next(
                r.app
                for r in self.routes
                if isinstance(r, Route) and r.path == "/v1/chat/completions"
            )
            fast = GatewayMiddleware(endpoint)

            async def app(scope: Any, receive: Any, send: Any) -> None:
                if (
                    scope["type"] == "http"
                    and scope["path"] == "/v1/chat/completions"
                    and scope["method"] == "POST"
                ):
                    scope["app"] = self
                    await fast(scope, receive, send)
                else:
                    await stack(scope, receive, send)

            return app

        Starlette.build_middleware_stack = _build  # type: ignore[method-assign]

    if "gc-freeze" in VARIANTS:
        from openclaw.gateway import server

        serve = server.serve

        async def _serve(*a: Any, **kw: Any) -> None:
            async def later() -> None:
                await asyncio.sleep(2)
                gc.collect()
                gc.freeze()

            task = asyncio.create_task(later())
            try:
                await serve(*a, **kw)
            finally:
                task.cancel()

        g0, g1, g2 = gc.get_threshold()
        gc.set_threshold(g0 * 10, g1, g2)
        server.serve = _serve  # type: ignore[assignment]


def main() -> None:
    apply()
    from openclaw.cli.main import main as cli

    sys.argv = ["openclaw", *sys.argv[1:]]
    if "cprofile" not in VARIANTS:
        cli()
        return
    import cProfile

    out = os.environ.get("OPENCLAW_BENCH_PROFILE", "gateway.prof")
    prof = cProfile.Profile()
    prof.enable()
    try:
        cli()
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof.dump_stats(out)


if __name__ == "__main__":
    main()
