"""The benchmark's server processes: starting, stopping, and reading what they cost.

* ``spawn_upstream`` / ``spawn_hop``  the fixed-answer upstream and the bare hop, each its own
                                      script that prints ``READY <port>`` once listening;
* ``spawn_gateway``                   ``openclaw gateway run`` with a temp config and state dir,
                                      optionally through ``gw_variant.py`` or from another
                                      source tree (``checkout``, for ``--compare``);
* ``Proc``                            a running server: its CPU time from ``/proc/<pid>/stat``,
                                      its RSS, and ``settle`` (wait until it goes idle again).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients import Conn, build_request
from common import HERE, HISTORY_MESSAGES, HOST, PROVIDER, ROOT, TOKEN, UPSTREAM_MODEL

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """A server child process listening on ``port``."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads)."""
        with open(f"/proc/{self.popen.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        """Resident set size in MB."""
        with open(f"/proc/{self.popen.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after 15 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def settle(proc: Proc, limit: float = 60.0) -> float:
    """Seconds until ``proc`` goes quiet (at most 1 tick of CPU per 0.2 s window): work a server
    deferred (e.g. background transcript writes) still has to be done, and counts."""
    t0 = time.perf_counter()
    last = proc.cpu_seconds()
    while time.perf_counter() - t0 < limit:
        time.sleep(0.2)
        now = proc.cpu_seconds()
        if now - last <= 1.0 / CLK_TCK:
            return max(0.0, time.perf_counter() - t0 - 0.2)
        last = now
    return limit


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to append started servers to; on exit they are stopped, newest first."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def spawn_ready(name: str, script: Path, args: Sequence[str] = (), timeout: float = 30.0) -> Proc:
    """Start the Python ``script`` (with ``args``), which prints ``READY <port>`` once listening."""
    popen = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([popen.stdout], [], [], 0.2)
        if ready:
            line = popen.stdout.readline()
            break
        if popen.poll() is not None:
            break
    if not line.startswith(b"READY "):
        popen.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    return Proc(name, popen, int(line.split()[1]))


def spawn_upstream() -> Proc:
    """The fixed-answer upstream (``upstream_server.py``)."""
    return spawn_ready("upstream", HERE / "upstream_server.py")


def spawn_hop(upstream_port: int) -> Proc:
    """The bare aiohttp pass-through (``hop_server.py``) in front of ``upstream_port``."""
    return spawn_ready("hop", HERE / "hop_server.py", ["--upstream-port", str(upstream_port)])


def spawn_asgi_hop(upstream_port: int) -> Proc:
    """The same pass-through as a bare ASGI app on uvicorn (``asgi_hop_server.py``)."""
    return spawn_ready(
        "asgi-hop", HERE / "asgi_hop_server.py", ["--upstream-port", str(upstream_port)]
    )


def gateway_config(upstream_port: int, port: int) -> dict[str, Any]:
    """The gateways' ``openclaw.json``: token auth, chat completions on, one provider (the
    upstream) and the agents' history budget."""
    return {
        "gateway": {
            "port": port,
            "bind": "loopback",
            "auth": {"mode": "token", "token": TOKEN},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "models": {
            "providers": {
                PROVIDER: {
                    "api": "openai-completions",
                    "baseUrl": f"http://{HOST}:{upstream_port}/v1",
                    "apiKey": "upstream-key",
                    "maxRetries": 0,
                    "models": [{"id": UPSTREAM_MODEL}],
                }
            }
        },
        "agents": {
            "defaults": {
                "model": f"{PROVIDER}/{UPSTREAM_MODEL}",
                "maxHistoryMessages": HISTORY_MESSAGES,
            }
        },
    }


def openclaw_bin() -> str:
    exe = Path(sys.executable).with_name("openclaw")
    if exe.exists():
        return str(exe)
    found = shutil.which("openclaw")
    if found is None:
        raise RuntimeError("the `openclaw` command is not installed in this environment")
    return found


def spawn_gateway(
    name: str,
    tmp: Path,
    upstream_port: int,
    *,
    log_level: str = "warning",
    variants: Sequence[str] = (),
    source: Path | None = None,
    config: dict[str, Any] | None = None,
) -> Proc:
    """``openclaw gateway run`` on a free port, home ``tmp/name`` (state in ``tmp/name/state``),
    returned once ``/health`` answers; with ``variants``, through ``gw_variant.py`` (what-if
    changes for cost attribution, see there); with ``source``, the ``openclaw`` package of that
    tree (``--compare``) in this environment; ``config``: top-level sections replacing the
    default config's."""
    port = free_port()
    home = tmp / name
    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    cfg = home / "openclaw.json"
    cfg.write_text(json.dumps({**gateway_config(upstream_port, port), **(config or {})}))
    log_path = home / "gateway.log"
    env = {
        **os.environ,
        "OPENCLAW_STATE_DIR": str(state),
        "OPENCLAW_LOG_LEVEL": log_level,
        "OPENCLAW_CONFIG_PATH": str(cfg),
    }
    for var in ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD"):
        env.pop(var, None)
    command = [openclaw_bin()]
    if source is not None:
        command = [sys.executable, "-m", "openclaw"]
        env["PYTHONPATH"] = str(source)
    if variants:
        command = [sys.executable, str(HERE / "gw_variant.py")]
        env["OPENCLAW_BENCH_VARIANTS"] = ",".join(variants)
        env["OPENCLAW_BENCH_PROFILE"] = str(home / "gateway.prof")
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            [*command, "gateway", "run", "--port", str(port), "--config", str(cfg)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    proc = Proc(name, popen, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
        try:
            with contextlib.closing(Conn(port)) as conn:
                status, _, _ = conn.request(build_request("GET", "/health", None, port))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} did not become healthy: {log_path.read_text()[-2000:]}")


def checkout(ref: str, into: Path) -> Path:
    """The ``src`` tree of git ``ref`` (for ``--compare``), extracted under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"
