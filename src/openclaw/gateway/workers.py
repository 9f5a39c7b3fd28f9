"""``gateway run --workers N``: N processes serve one port and one state dir.

The supervisor (this process) binds one listening socket per worker on the port with
``SO_REUSEPORT`` (the kernel spreads connections over them by address hash; one shared accept
queue would let whichever worker is awake take most) and starts N ``openclaw gateway worker``
processes, each inheriting its socket; the supervisor keeps no copy (a listening socket nobody
accepts on would take its share of new connections during a shutdown or a restart), so a dead
worker's queue goes with it and its replacement binds a fresh one.

Each worker is a whole gateway: its own event loop, runner and store connections over
the shared state dir. What must hold across them is in the store and the lock file: a session's
runs go one at a time (``sessions.lease``), the failed-auth limit counts every worker's
failures (``gateway.shared_failures``). A worker gets its config on stdin (secrets never in its
arguments or environment) and stops gracefully when stdin closes: that is how the supervisor
stops it, and why workers never outlive a killed supervisor. Workers ignore SIGTERM/SIGINT
(under systemd every process of the unit gets the signal; a second one would force an exit):
the supervisor takes them, closes every worker's stdin, and kills them on a second signal. A
worker that dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from openclaw import paths
from openclaw.config.schema import Config
from openclaw.errors import ConfigError
from openclaw.gateway.app import bind_host
from openclaw.gateway.auth import is_loopback_host, resolve_secret
from openclaw.logs import get_logger

log = get_logger("gateway")

BACKLOG = 2048
START_TIMEOUT_SECONDS = 120
# A worker dying before it serves, or soon after (a crash loop: a broken model file, a request
# that kills it and is retried), is restarted after a growing delay; others at once.
QUICK_DEATH_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 10.0
STDIN = 0


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    quick_deaths: int = 0
    serving_since: float | None = None


def listening_socket(config: Config, port: int) -> socket.socket:
    """One worker's socket on the gateway's port, bound and listening, inheritable."""
    host = bind_host(config.gateway.bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, config: Config, state_dir: Path, first: socket.socket) -> None:
        self.config = config
        self.state_dir = state_dir
        self.port: int = first.getsockname()[1]
        self._first: socket.socket | None = first
        self.count = config.gateway.worker_count()
        # Workers write a byte here once they serve.
        self._ready_r, self._ready_w = os.pipe()
        os.set_inheritable(self._ready_w, True)
        self._config_line = (
            orjson.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True)) + b"\n"
        )
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self.killing = False

    def spawn(self, index: int, quick_deaths: int = 0) -> None:
        sock, self._first = self._first or listening_socket(self.config, self.port), None
        try:
            self._spawn(index, sock, quick_deaths)
        finally:
            sock.close()  # the worker has its own

    def _spawn(self, index: int, sock: socket.socket, quick_deaths: int) -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openclaw",
                "gateway",
                "worker",
                "--fd",
                str(sock.fileno()),
                "--ready-fd",
                str(self._ready_w),
                "--index",
                str(index),
            ],
            stdin=subprocess.PIPE,
            pass_fds=(sock.fileno(), self._ready_w),
            # Out of the terminal's process group: Ctrl-C reaches the supervisor alone, which
            # stops the workers in order.
            process_group=0,
            env={**os.environ, "OPENCLAW_STATE_DIR": str(self.state_dir)},
        )
        worker = self.workers[index] = Worker(index, proc, quick_deaths=quick_deaths)
        assert proc.stdin is not None
        try:
            proc.stdin.write(self._config_line)
            proc.stdin.flush()  # kept open: its end tells the worker to stop
        except OSError:
            pass  # it died first: restarted like any dead worker
        if self.stopping:  # a signal came while it was starting
            self._close_stdin(worker)

    def wait_ready(self) -> bool:
        """Until every worker serves; False when one exits first or it takes too long."""
        ready = 0
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while ready < self.count:
            if self.stopping or any(w.proc.poll() is not None for w in self.workers.values()):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self._ready_r], [], [], min(left, 0.1))
            if readable:
                ready += self._mark_serving()
        return True

    def _mark_serving(self) -> int:
        """Read the ready pipe: each byte is the index of a worker that now serves."""
        indexes = os.read(self._ready_r, 256)
        for index in indexes:
            if index in self.workers:
                self.workers[index].serving_since = time.monotonic()
        return len(indexes)

    def watch(self) -> None:
        """Restart workers that die, until asked to stop."""
        while not self.stopping:
            readable, _, _ = select.select([self._ready_r], [], [], 0.1)
            if readable:
                self._mark_serving()  # a restarted worker serves again
            for index, worker in list(self.workers.items()):
                code = worker.proc.poll()
                if code is None or self.stopping:
                    continue
                self._restart(index, worker, code)

    def _restart(self, index: int, worker: Worker, code: int) -> None:
        served = worker.serving_since
        lasted = served is not None and time.monotonic() - served >= QUICK_DEATH_SECONDS
        quick = 0 if lasted else worker.quick_deaths + 1
        delay = min(MAX_RESTART_DELAY_SECONDS, 0.1 * 2**quick) if quick else 0.0
        how = f"status {code}"
        if code < 0:
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:  # a real-time signal has no name
                how = f"signal {-code}"
        log.warning(
            f"worker {index} (pid {worker.proc.pid}) exited with {how}; starting it again"
            + (f" in {delay:.1f}s" if delay else ""),
        )
        self._close_stdin(worker)
        if delay:
            time.sleep(delay)  # the supervisor only supervises: nothing else waits on it
        if not self.stopping:
            try:
                self.spawn(index, quick)
            except OSError as exc:  # no fork, no fd, the port: tried again next round
                log.error(f"could not start worker {index}: {exc}")
                worker.quick_deaths = quick

    def stop(self, sig: int) -> None:
        """A signal: the first stops the workers gracefully, a second kills them."""
        if self.stopping:
            log.warning("second signal: killing the workers")
            self.killing = True
            self._signal_all(signal.SIGKILL)
            return
        self.stopping = True
        log.info(
            "shutting down: workers stop accepting, in-flight requests get up to "
            f"{-(-self.config.gateway.shutdown_timeout_ms // 1000)}s",
            extra={"signal": signal.Signals(sig).name},
        )
        for worker in self.workers.values():
            self._close_stdin(worker)  # a worker's order to stop gracefully

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    def wait_all(self) -> None:
        for worker in self.workers.values():
            while worker.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(0.1)
            self._close_stdin(worker)

    @staticmethod
    def _close_stdin(worker: Worker) -> None:
        if worker.proc.stdin is not None:
            with contextlib.suppress(OSError):
                worker.proc.stdin.close()

    def close(self) -> None:
        if self._first is not None:
            self._first.close()
        os.close(self._ready_r)
        os.close(self._ready_w)


def supervise(config: Config, *, state_dir: Path | None = None) -> None:
    """Run ``gateway.workers`` processes on one socket until SIGINT/SIGTERM."""
    from openclaw.gateway.server import (
        listen_line,
        raise_open_file_limit,
        socket_url,
        warn_if_unauthenticated,
    )

    raise_open_file_limit()  # the workers inherit it
    state = paths.make_private_dir(paths.state_dir(state_dir))
    # Resolved (a secret generated) once here, before the workers read it.
    secret = resolve_secret(
        config.gateway.auth,
        state_dir=state,
        loopback_only=is_loopback_host(bind_host(config.gateway.bind)),
    )
    try:
        first = listening_socket(config, config.gateway.port)
    except OSError as exc:
        host = bind_host(config.gateway.bind)
        reason = (exc.strerror or str(exc)).lower()
        log.error(f"could not bind to {host}:{config.gateway.port}: {reason}")
        raise SystemExit(1) from None
    url = socket_url(first)
    supervisor = Supervisor(config, state, first)
    handlers: dict[signal.Signals, signal._HANDLER] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handlers[sig] = signal.signal(sig, lambda s, _: supervisor.stop(s))
    try:
        for index in range(supervisor.count):
            if supervisor.stopping:
                break
            supervisor.spawn(index)
        if not supervisor.wait_ready():
            if not supervisor.stopping:
                log.error("a worker did not start; stopping")
                supervisor.stop(signal.SIGTERM)
            supervisor.wait_all()
            raise SystemExit(1)
        log.info(listen_line([url], config, secret))
        warn_if_unauthenticated(config)
        supervisor.watch()
        supervisor.wait_all()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        supervisor.close()
    log.info("gateway stopped")


def config_from_stdin() -> Config:
    """A worker's config: the supervisor's, validated again, from the first line of stdin."""
    from openclaw.config.loader import validate

    line = sys.stdin.buffer.readline()
    if not line:
        raise ConfigError("the worker got no config from its supervisor")
    return validate(orjson.loads(line), env={})


async def serve_worker(config: Config, *, fd: int, ready_fd: int, index: int) -> None:
    """One worker: the gateway on the inherited socket, until SIGTERM or its stdin closes."""
    from openclaw.gateway.server import serve

    sock = socket.socket(fileno=fd)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the supervisor's to handle

    def told_to_stop() -> None:
        if not os.read(STDIN, 4096):
            loop.remove_reader(STDIN)
            log.info(f"worker {index}: stopping (stdin closed by the supervisor, or it is gone)")
            stop.set()

    def started() -> None:
        os.write(ready_fd, bytes([index]))
        os.close(ready_fd)
        log.info(f"worker {index} serving", extra={"pid": os.getpid()})

    loop.add_reader(STDIN, told_to_stop)
    try:
        await serve(config, sock=sock, on_started=started, stop=stop)
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(STDIN)
