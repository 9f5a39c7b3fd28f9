"""Streams at scale and workers: the gateway against the bare aiohttp hop, same upstream, same run.

Run: ``.venv/bin/python benchmarks/bench_streams.py [--quick] [--slow-streams N] [--litellm]``

* ``streams``     c=32 concurrent streams of 200 tokens each, one after another on each
                  connection, through the hop and the gateways: SSE events relayed per second and
                  server CPU per event (the upstream sends every token as its own chunk).
* ``throughput``  c=32 non-streaming requests: the hop, the gateway with 1 and with 2 workers
                  (``gateway.workers``), CPU over the gateway's whole process tree.
* ``slow``        ``--slow-streams`` (default 1,000) streams open at once on one gateway process
                  against an upstream sending a token every 100 ms (20 tokens; the clients
                  arrive over 1 s): all complete and whole, the gateway's RSS per open stream,
                  and the event loop's lag seen as the latency of ``GET /health`` probes every
                  50 ms meanwhile (from a process of their own).
* ``--litellm``   also a LiteLLM proxy on the same upstream (installed on first use into its own
                  venv under ``benchmarks/.litellm``, never a project dependency), and the
                  gateway/LiteLLM ratios.

Gateways run with ``tools.profile: "minimal"`` (no tool schemas sent upstream, as the hop sends
none) and, as ``gw-tools``, with the default profile (its extra cost beside them). Targets are
measured in interleaved rounds; each figure is the median round. Results: a table on stdout and
``benchmarks/results/streams.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients import Target, build_request, chat_body
from common import HERE, HOST, TOKEN, UPSTREAM_MODEL
from measure import load, pct
from processes import (
    Proc,
    gateway_config,
    processes,
    settle,
    spawn_gateway,
    spawn_hop,
    spawn_ready,
)

RESULTS = HERE / "results" / "streams.json"
TOKENS = 200
CONNECTIONS = 32
MINIMAL = {"tools": {"profile": "minimal"}}
RAMP_SECONDS = 1.0


# --- a streaming load client -----------------------------------------------------------------


@dataclass
class StreamRun:
    request: bytes
    total: int
    issued: int = 0
    done: int = 0
    events: int = 0
    errors: int = 0
    whole: int = 0  # streams that ended with data: [DONE]
    open: int = 0
    finished: asyncio.Future[None] | None = None


class _StreamConn(asyncio.Protocol):
    """One keep-alive connection: a streaming request, read its chunked SSE reply to the end,
    count the events, the next."""

    def __init__(self, run: StreamRun) -> None:
        self.run = run
        self.buf = bytearray()
        self.in_body = False
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.run.open += 1
        self._send()

    def _send(self) -> None:
        run = self.run
        assert self.transport is not None
        if run.issued >= run.total:
            self.transport.close()
            return
        run.issued += 1
        self.in_body = False
        self.buf.clear()
        self.transport.write(run.request)

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 200"):
                self.run.errors += 1
            data = bytes(self.buf[i + 4 :])
            self.in_body = True
            self.tail = b""
        # Count events as they come (a "data: " may straddle two reads: keep a short tail).
        joined = self.tail + data
        self.run.events += joined.count(b"data: ") - self.tail.count(b"data: ")
        self.tail = joined[-16:]
        if joined.endswith(b"0\r\n\r\n"):
            run = self.run
            run.done += 1
            if b"data: [DONE]" in joined[-64:]:
                run.whole += 1
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.open -= 1
        if run.open == 0 and run.finished is not None and not run.finished.done():
            run.finished.set_result(None)


async def _stream_load(port: int, request: bytes, total: int, connections: int) -> StreamRun:
    loop = asyncio.get_running_loop()
    run = StreamRun(request, total)
    run.finished = loop.create_future()
    await asyncio.gather(
        *(loop.create_connection(lambda: _StreamConn(run), HOST, port) for _ in range(connections))
    )
    await asyncio.wait_for(run.finished, 600)
    return run


def tree_cpu(proc: Proc) -> float:
    """CPU seconds of ``proc`` and its children (a supervisor's workers)."""
    total = proc.cpu_seconds()
    pid = proc.popen.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            with open(f"/proc/{child}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def stream_round(target: Target, streams: int) -> dict[str, Any]:
    import uvloop

    request = build_request(
        "POST", "/v1/chat/completions", chat_body(target.model, stream=True), target.port
    )
    assert target.proc is not None
    cpu0 = tree_cpu(target.proc)
    t0 = time.perf_counter()
    run = uvloop.run(_stream_load(target.port, request, streams, CONNECTIONS))
    wall = time.perf_counter() - t0
    cpu = tree_cpu(target.proc) - cpu0
    if run.errors or run.whole != run.done:
        raise RuntimeError(f"{target.name}: {run.errors} errors, {run.done - run.whole} cut short")
    return {
        "streams": run.done,
        "events": run.events,
        "events_per_s": round(run.events / wall, 1),
        "cpu_us_per_event": round(cpu / run.events * 1e6, 2),
        "seconds": round(wall, 2),
    }


def interleaved(
    targets: list[Target], rounds: int, one: Callable[[Target], dict[str, Any]], key: str
) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for r in range(rounds):
        for t in targets if r % 2 == 0 else list(reversed(targets)):
            runs[t.name].append(one(t))
    out = {}
    for name, results in runs.items():
        ranked = sorted(results, key=lambda x: x[key])
        out[name] = {**ranked[len(ranked) // 2], f"{key}_all": [x[key] for x in results]}
    return out


# --- slow streams ------------------------------------------------------------------------------


async def _slow(port: int, model: str, streams: int, tokens: int) -> dict[str, Any]:
    import aiohttp

    body = json.loads(chat_body(model, stream=True))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int) -> bool:
            # Clients arrive over RAMP_SECONDS (1,000 connecting in the same millisecond
            # measures the client's burst, not the gateway's steady state).
            await asyncio.sleep(RAMP_SECONDS * i / streams)
            async with http.post(
                f"http://{HOST}:{port}/v1/chat/completions", json=body, headers=headers
            ) as reply:
                text = await reply.text()
            content = [
                json.loads(line[6:])["choices"][0]["delta"].get("content")
                for line in text.splitlines()
                if line.startswith("data: {") and '"choices":[{' in line
            ]
            streamed = "".join(c for c in content if c)
            return text.rstrip().endswith("data: [DONE]") and streamed == "".join(
                f" tok{i}" for i in range(tokens)
            )

        results = await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True)
        complete = sum(1 for r in results if r is True)
    return {"streams": streams, "complete_and_correct": complete}


def slow_streams(tmp: Path, procs: list[Proc], streams: int) -> dict[str, Any]:
    tokens = 20
    up = spawn_ready(
        "slow-upstream",
        HERE / "upstream_server.py",
        ["--stream-tokens", str(tokens), "--token-delay", "0.1"],
    )
    procs.append(up)
    # Admission allows 32 runs and 256 queued by default: room for them all here.
    agents = gateway_config(up.port, 0)["agents"]
    agents["defaults"]["maxConcurrent"] = streams
    gw = spawn_gateway("gw-slow", tmp, up.port, config={**MINIMAL, "agents": agents})
    procs.append(gw)
    rss0 = gw.rss_mb()
    peak = [rss0]

    async def main() -> dict[str, Any]:
        task = asyncio.create_task(_slow(gw.port, "openclaw", streams, tokens))
        while not task.done():
            peak.append(gw.rss_mb())
            await asyncio.sleep(0.1)
        return await task

    import uvloop

    # The event loop's lag, seen from a process of its own (this one is busy reading 1,000
    # streams): a GET /health every 50 ms meanwhile.
    prober = subprocess.Popen(
        [sys.executable, __file__, "--probe", str(gw.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out = uvloop.run(main())
    probes = json.loads(prober.communicate(b"stop\n")[0])
    out["health_probe_ms_p50"] = round(pct(probes, 50) * 1000, 2)
    out["health_probe_ms_p99"] = round(pct(probes, 99) * 1000, 2)
    out["health_probe_ms_max"] = round(max(probes) * 1000, 2)
    out["rss_mb_before"] = rss0
    out["rss_mb_peak"] = max(peak)
    out["rss_kb_per_open_stream"] = round((max(peak) - rss0) * 1024 / streams, 1)
    out["open_files_limit_note"] = "the gateway raised its soft RLIMIT_NOFILE to the hard limit"
    return out


# --- LiteLLM -----------------------------------------------------------------------------------


def spawn_litellm(tmp: Path, upstream_port: int) -> Proc:
    venv = HERE / ".litellm"
    python = venv / "bin" / "python"
    if not python.exists():
        print("installing LiteLLM into benchmarks/.litellm (first use) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {UPSTREAM_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: http://{HOST}:{upstream_port}/v1\n"
        "      api_key: upstream-key\n"
        "general_settings:\n"
        f"  master_key: {TOKEN}\n"
    )
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = open(tmp / "litellm.log", "wb")  # noqa: SIM115 - open while the process runs
    popen = subprocess.Popen(
        [
            str(venv / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOG": "ERROR"},
    )
    proc = Proc("litellm", popen, port, tmp / "litellm.log")
    deadline = time.monotonic() + 180
    import urllib.request

    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError("litellm exited: " + (tmp / "litellm.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health/liveliness", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.stop()
    raise RuntimeError("litellm did not start")


# --- main --------------------------------------------------------------------------------------


def run(quick: bool, slow: int, litellm: bool, relay: bool = True) -> dict[str, Any]:
    rounds = 3 if quick else 5
    streams = CONNECTIONS * (3 if quick else 8)
    requests = 3000 if quick else 10000
    result: dict[str, Any] = {"quick": quick, "tokens_per_stream": TOKENS}
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        # Each token in its own write, as a model server flushes them.
        up = spawn_ready(
            "upstream",
            HERE / "upstream_server.py",
            ["--stream-tokens", str(TOKENS), "--token-delay", "0"],
        )
        procs.append(up)
        hop = spawn_hop(up.port)
        procs.append(hop)
        gw = spawn_gateway("gw", tmp, up.port, config=MINIMAL)
        gw_tools = spawn_gateway("gw-tools", tmp, up.port)
        gw2 = spawn_gateway(
            "gw-2w", tmp, up.port, config={**MINIMAL, "gateway": _gateway_section(gw, 2)}
        )
        procs += [gw, gw_tools, gw2]
        targets = [
            Target("hop", hop.port, UPSTREAM_MODEL, proc=hop),
            Target("gw", gw.port, "openclaw", proc=gw),
            Target("gw-tools", gw_tools.port, "openclaw", proc=gw_tools),
        ]
        if litellm:
            lite = spawn_litellm(tmp, up.port)
            procs.append(lite)
            targets.append(Target("litellm", lite.port, UPSTREAM_MODEL, proc=lite))
        two = Target("gw-2w", gw2.port, "openclaw", proc=gw2)

        if not relay:
            result["slow_streams"] = slow_streams(tmp, procs, slow)
            return result
        print("streams (c=32, 200 tokens) ...", flush=True)
        for t in targets:
            stream_round(t, CONNECTIONS)  # warm-up
        result["streams"] = interleaved(
            targets, rounds, lambda t: stream_round(t, streams), "events_per_s"
        )

        print("throughput (c=32, non-streaming) ...", flush=True)
        load_targets = [*targets, two]

        def one_load(t: Target) -> dict[str, Any]:
            assert t.proc is not None
            cpu0 = tree_cpu(t.proc)
            res = load(t, requests, 60)
            settle(t.proc)
            cpu = tree_cpu(t.proc) - cpu0  # a supervisor's workers included
            res["server_cpu_us_per_req"] = round(cpu / res["requests"] * 1e6, 1)
            res["server_cpu_pct"] = round(100 * cpu / (res["seconds"] + res["settle_s"]), 1)
            if res["errors"]:
                raise RuntimeError(f"{t.name}: {res['errors']} failed requests")
            return res

        for t in load_targets:
            load(t, 500, 10)  # warm-up
        result["throughput"] = interleaved(load_targets, rounds, one_load, "sustained_rps")

        if slow:
            print(f"slow streams ({slow} open at once) ...", flush=True)
            result["slow_streams"] = slow_streams(tmp, procs, slow)
    result["ratios"] = ratios(result)
    result["environment"] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
    }
    return result


def _gateway_section(gw: Proc, workers: int) -> dict[str, Any]:
    section: dict[str, Any] = gateway_config(0, 0)["gateway"]
    section["workers"] = workers
    section.pop("port", None)
    return section


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    s, t = result["streams"], result["throughput"]
    out: dict[str, Any] = {
        "streams_gw_over_hop_events_per_s": round(
            s["gw"]["events_per_s"] / s["hop"]["events_per_s"], 3
        ),
        "streams_gw_tools_over_hop": round(
            s["gw-tools"]["events_per_s"] / s["hop"]["events_per_s"], 3
        ),
        "streams_cpu_per_event_gw_over_hop": round(
            s["gw"]["cpu_us_per_event"] / s["hop"]["cpu_us_per_event"], 2
        ),
        "throughput_gw_over_hop": round(t["gw"]["sustained_rps"] / t["hop"]["sustained_rps"], 3),
        "throughput_gw_tools_over_hop": round(
            t["gw-tools"]["sustained_rps"] / t["hop"]["sustained_rps"], 3
        ),
        "throughput_2_workers_over_hop": round(
            t["gw-2w"]["sustained_rps"] / t["hop"]["sustained_rps"], 3
        ),
        "throughput_2_workers_over_1": round(
            t["gw-2w"]["sustained_rps"] / t["gw"]["sustained_rps"], 3
        ),
    }
    if "litellm" in s:
        out["streams_gw_over_litellm"] = round(
            s["gw"]["events_per_s"] / s["litellm"]["events_per_s"], 2
        )
        out["throughput_gw_over_litellm"] = round(
            t["gw"]["sustained_rps"] / t["litellm"]["sustained_rps"], 2
        )
        out["latency_p50_litellm_over_gw"] = round(
            t["litellm"]["latency_p50_ms"] / t["gw"]["latency_p50_ms"], 2
        )
    return out


def probe(port: int) -> None:
    """``GET /health`` every 50 ms on a keep-alive connection until stdin has a line; prints
    the latencies (seconds) as JSON."""
    import threading

    from clients import Conn

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    conn = Conn(port)
    request = build_request("GET", "/health", None, port, auth=False)
    times = []
    while not stop.is_set():
        t0 = time.perf_counter()
        conn.request(request)
        times.append(time.perf_counter() - t0)
        stop.wait(0.05)
    print(json.dumps(times))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        probe(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--slow-streams", type=int, default=1000, help="0 skips that part")
    parser.add_argument("--litellm", action="store_true")
    parser.add_argument("--slow-only", action="store_true", help="only the slow streams")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.quick, args.slow_streams, args.litellm, relay=not args.slow_only)
    if args.slow_only:
        print("slow streams:", result["slow_streams"])
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    for section in ("streams", "throughput"):
        print(f"\n{section}:")
        for name, row in result[section].items():
            print(f"  {name:10} " + " ".join(f"{k}={v}" for k, v in row.items() if "_all" not in k))
    if "slow_streams" in result:
        print("\nslow streams:", result["slow_streams"])
    print("\nratios:", json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
