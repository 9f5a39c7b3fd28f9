"""The tool loop's own costs, against a real ``openclaw gateway run``.

Run: ``python benchmarks/bench_tools.py [--quick] [--output PATH]``.  The model is the test suite's
scripted upstream (``tests/upstream``), which calls the gateway's tools when told to.

* ``cancel``: a client streams a run whose model calls ``exec`` on a command that starts a
  background child and then sleeps; once the command has written its process group id, the
  client closes the connection 0.2 s later.  Measured: from the close until no live process of
  that group is left (target: under 1 s).
* ``rounds``: the time of a run whose model calls ``ls`` in each of R rounds, against a run
  without tools on the same gateway and connection, requests interleaved.  Reported: the cost of
  one tool round as a ratio to a whole plain run (each round is one more model call, a tool run,
  and the results fed back).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import HERE, ROOT, TOKEN
from processes import Proc, spawn_gateway

sys.path.insert(0, str(ROOT))
from tests.harness import process_group_alive
from tests.upstream import Answer, FakeUpstream, ToolCalls

ROUNDS = 4
RUNNING = 0.2  # s the command runs before the client leaves


def request(port: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def read_response(sock: socket.socket) -> bytes:
    """One non-streamed response (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return body


def cancel_latency(gw: Proc, up: FakeUpstream, workspace: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        pgid_file = workspace / f"pgid-{i}"
        command = f"echo $$ > pgid-{i}; sleep 300 & sleep 300"
        up.script(ToolCalls(calls=(("exec", json.dumps({"command": command})),)))
        body = {
            "model": "openclaw",
            "stream": True,
            "messages": [{"role": "user", "content": "go"}],
        }
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(request(gw.port, body, {"x-openclaw-tool-events": "1"}))
            seen = b""
            while b'"phase":"start"' not in seen:
                seen += sock.recv(65536)
            while not (pgid_file.exists() and pgid_file.read_text().strip()):
                time.sleep(0.001)
            pgid = int(pgid_file.read_text())
            # A long command: the client gives up on it a while later (the gateway watches
            # for a client leaving only once a request outlives 50 ms, so a close within
            # that window would measure that delay instead).
            time.sleep(RUNNING)
            sock.shutdown(socket.SHUT_RDWR)
        left = time.perf_counter()
        while process_group_alive(pgid):
            time.sleep(0.001)
        times.append(time.perf_counter() - left)
    return times


def round_cost(gw: Proc, up: FakeUpstream, runs: int) -> dict[str, float]:
    plain, tooled = [], []
    body = {"model": "openclaw", "messages": [{"role": "user", "content": "hello"}]}
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        for _ in range(runs):
            for kind in ("plain", "tools"):
                if kind == "tools":
                    up.script(*[ToolCalls(calls=(("ls", "{}"),))] * ROUNDS)
                started = time.perf_counter()
                sock.sendall(request(gw.port, body))
                read_response(sock)
                (tooled if kind == "tools" else plain).append(time.perf_counter() - started)
    p, t = statistics.median(plain), statistics.median(tooled)
    return {
        "plain_run_ms": round(p * 1000, 3),
        f"run_with_{ROUNDS}_rounds_ms": round(t * 1000, 3),
        "per_round_ms": round((t - p) / ROUNDS * 1000, 3),
        "per_round_vs_plain_run": round((t - p) / ROUNDS / p, 2),
    }


@contextlib.contextmanager
def gateway(up: FakeUpstream, tmp: Path) -> Iterator[Proc]:
    port = int(up.base_url.rsplit(":", 1)[1].split("/")[0])
    config = {"tools": {"profile": "coding", "exec": {"security": "full"}}}
    proc = spawn_gateway("gateway", tmp, port, config=config)
    try:
        yield proc
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "tools.json")
    args = parser.parse_args()
    cancels, runs = (5, 20) if args.quick else (20, 100)
    with tempfile.TemporaryDirectory() as tmp_dir, FakeUpstream(api_key="upstream-key") as up:
        up.default = Answer()
        tmp = Path(tmp_dir)
        with gateway(up, tmp) as gw:
            workspace = tmp / "gateway" / "state" / "workspace"
            times = cancel_latency(gw, up, workspace, cancels)
            rounds = round_cost(gw, up, runs)
    result = {
        "cancel": {
            "runs": cancels,
            "group_gone_after_disconnect_ms_p50": round(statistics.median(times) * 1000, 1),
            "group_gone_after_disconnect_ms_max": round(max(times) * 1000, 1),
            "target_ms": 1000,
        },
        "rounds": {"runs": runs, **rounds},
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
