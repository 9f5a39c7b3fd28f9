"""End-to-end gateway benchmark: added latency, streaming TTFT, throughput, stored sessions.

Run: ``.venv/bin/python benchmarks/bench_gateway.py [--quick] [--output PATH] [--compare REF]``
(about 2 minutes; ``--quick`` about 20 s).  Everything listens on 127.0.0.1; every server is
its own process (``processes.py`` starts them):

* ``upstream``  a minimal deterministic OpenAI-compatible server (httptools + uvloop,
                ``upstream_server.py``): replies at once with a small fixed completion,
                streaming (chunked SSE) or not;
* ``hop``       a bare aiohttp pass-through on uvloop (``hop_server.py``): reads the body, POSTs
                it to the upstream with one pooled ``aiohttp.ClientSession``, returns the reply;
* ``asgi-hop``  the same pass-through as a bare ASGI app on the gateway's own server stack
                (``asgi_hop_server.py``: uvicorn, httptools, uvloop, aiohttp): what that stack
                costs by itself;
* gateways      ``openclaw gateway run`` with a temp config and state dir, tools off
                (``tools.profile: "minimal"``: no tool schemas sent upstream, as the hop
                sends none) unless said otherwise:
                ``gw``      stateless requests, ``OPENCLAW_LOG_LEVEL=warning``;
                ``gw-tools`` the same with the default tools profile (its extra cost);
                ``gw-info`` the same as ``gw`` with info-level access logs (to a file);
                ``gw-1k``   ``user`` set, 1,000 stored sessions in the index;
                ``gw-100k`` ``user`` set, 100,000 stored sessions in the index;
                with ``--compare REF`` also ``base`` and ``base-1k``, built from git ``REF``.

Stateful requests cycle over 1,000 users whose sessions are stored before the gateways start
(``prefill.py``), each with a transcript of ``HISTORY_MESSAGES`` records (also the agents'
``maxHistoryMessages``), so every such request reads and resends the same amount of history
however long the run is.

The client (this process, ``clients.py`` and ``measure.py``): sequential requests on one
keep-alive connection for latency and TTFT (a raw-socket HTTP/1.1 client, so its own cost is
tiny and the same for every target), and 32 keep-alive connections on uvloop for throughput.
Targets are measured in interleaved rounds so that machine noise hits baseline and gateway
alike.  Server CPU per request is read from ``/proc/<pid>/stat`` (a steadier figure than
wall-clock rates on a noisy machine) and includes work the server deferred: after each load the
client waits until the server is idle again ("settle"), and the *sustained* rate (requests /
(load time + settle time)) is the one judged, so background work (transcript writes) cannot make
the gateway look faster than it is.

Results: a table on stdout (``report.py``) and ``benchmarks/results/latest.json``.  Related
tools: ``profile_gateway.py`` (py-spy under load), ``ablate_gateway.py`` with ``gw_variant.py``
(what each per-request cost is worth end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import Target
from common import CONNECTIONS, HERE, HISTORY_MESSAGES, ROOT, UPSTREAM_MODEL, USER_POOL
from measure import FULL, QUICK, Settings, ratio, sequential, summary_ms, throughput
from prefill import count_sessions, prefill, prefill_with
from processes import (
    Proc,
    checkout,
    processes,
    spawn_asgi_hop,
    spawn_gateway,
    spawn_hop,
    spawn_upstream,
)
from report import report

RESULTS = HERE / "results" / "latest.json"
STATE_SIZES = (1_000, 100_000)

# Targets (the README's design targets): p50 latency added over the bare hop, TTFT added over
# the upstream itself, throughput as a share of the hop's, and "flat" stored-session cost,
# judged with a noise tolerance.
TARGET_ADDED_LATENCY_MS = 0.3
TARGET_ADDED_TTFT_MS = 1.0
TARGET_THROUGHPUT_RATIO = 0.75
FLAT_TOLERANCE = 1.15  # 100k/1k p50 latency at most this, throughput at least its inverse
# The relay figures are taken with tools off (no tool schemas sent upstream, as the hop sends
# none); ``gw-tools`` has the default profile, for its extra cost beside them.
MINIMAL = {"tools": {"profile": "minimal"}}


def judge(
    latency: dict[str, dict[str, float]],
    stream: dict[str, dict[str, dict[str, float]]],
    tput: dict[str, dict[str, Any]],
    info_lines: int,
    compare: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the targets, each with its figures and whether it is met; the other derived figures,
    ``info_lines`` (what the info-level gateway logged) and the ``--compare`` ones among them)."""
    p50 = {name: v["p50_ms"] for name, v in latency.items()}
    ttft50 = {name: v["ttft"]["p50_ms"] for name, v in stream.items()}
    rps = {name: v["sustained_rps"] for name, v in tput.items()}
    burst = {name: v["rps"] for name, v in tput.items()}

    added = round(p50["gw"] - p50["hop"], 4)
    added_ttft = round(ttft50["gw"] - ttft50["direct"], 4)
    tput_ratio = ratio(rps["gw"], rps["hop"])
    flat_lat = ratio(p50["gw-user-100k"], p50["gw-user-1k"])
    flat_tput = ratio(rps["gw-user-100k"], rps["gw-user-1k"])
    targets = {
        "added_latency_p50_over_hop": {
            "value_ms": added,
            "limit_ms": TARGET_ADDED_LATENCY_MS,
            "ratio_gw_over_hop": ratio(p50["gw"], p50["hop"]),
            "met": added <= TARGET_ADDED_LATENCY_MS,
        },
        "added_ttft_p50": {
            "value_ms": added_ttft,
            "limit_ms": TARGET_ADDED_TTFT_MS,
            "ratio_gw_over_direct": ratio(ttft50["gw"], ttft50["direct"]),
            "met": added_ttft <= TARGET_ADDED_TTFT_MS,
        },
        "throughput_vs_hop": {
            "ratio": tput_ratio,
            "burst_ratio": ratio(burst["gw"], burst["hop"]),
            "limit": TARGET_THROUGHPUT_RATIO,
            "met": tput_ratio >= TARGET_THROUGHPUT_RATIO,
        },
        "sessions_flat_1k_to_100k": {
            "latency_p50_ratio": flat_lat,
            "throughput_ratio": flat_tput,
            "tolerance": FLAT_TOLERANCE,
            "met": flat_lat <= FLAT_TOLERANCE and flat_tput >= 1 / FLAT_TOLERANCE,
        },
    }
    derived: dict[str, Any] = {
        "hop_added_p50_ms": round(p50["hop"] - p50["direct"], 4),
        "gw_added_over_direct_p50_ms": round(p50["gw"] - p50["direct"], 4),
        "tools_profile_added_p50_ms": round(p50["gw-tools"] - p50["gw"], 4),
        "tools_profile_throughput_ratio": ratio(rps["gw-tools"], rps["gw"]),
        "gw_tools_throughput_vs_hop": ratio(rps["gw-tools"], rps["hop"]),
        "asgi_hop_throughput_vs_hop": ratio(rps["asgi-hop"], rps["hop"]),
        "asgi_hop_added_p50_ms": round(p50["asgi-hop"] - p50["hop"], 4),
        "gw_cpu_per_req_over_asgi_hop": ratio(
            tput["gw"].get("server_cpu_us_per_req", 0),
            tput["asgi-hop"].get("server_cpu_us_per_req", 0),
        ),
        "info_logs_added_p50_ms": round(p50["gw-info"] - p50["gw"], 4),
        "info_logs_throughput_ratio": ratio(rps["gw-info"], rps["gw"]),
        "stateful_added_p50_ms": round(p50["gw-user-1k"] - p50["gw"], 4),
        "stateful_throughput_ratio": ratio(rps["gw-user-1k"], rps["gw"]),
        "gw_cpu_per_req_over_hop": ratio(
            tput["gw"].get("server_cpu_us_per_req", 0), tput["hop"].get("server_cpu_us_per_req", 0)
        ),
        "info_log_lines": info_lines,
    }
    if compare:
        derived["compare"] = {
            "ref": compare,
            "stateless_added_p50_ms_vs_base": round(p50["gw"] - p50["base"], 4),
            "stateless_throughput_vs_base": ratio(rps["gw"], rps["base"]),
            "stateful_added_p50_ms_vs_base": round(p50["gw-user-1k"] - p50["base-user-1k"], 4),
            "stateful_throughput_vs_base": ratio(rps["gw-user-1k"], rps["base-user-1k"]),
            "base_added_latency_p50_ms": round(p50["base"] - p50["direct"], 4),
            "base_throughput_vs_hop": ratio(rps["base"], rps["hop"]),
        }
    return targets, derived


def start_servers(procs: list[Proc], tmp: Path, base_src: Path | None) -> list[Target]:
    """Upstream, hop and gateways (state dirs under ``tmp``, already prefilled), appended to
    ``procs`` as they start; returns every target, baselines first."""
    up = spawn_upstream()
    procs.append(up)
    hop = spawn_hop(up.port)
    procs.append(hop)
    asgi_hop = spawn_asgi_hop(up.port)
    procs.append(asgi_hop)
    gws: dict[str, Proc] = {}
    for name, level, config in (
        ("gw", "warning", MINIMAL),
        ("gw-tools", "warning", None),
        ("gw-info", "info", MINIMAL),
        ("gw-1k", "warning", MINIMAL),
        ("gw-100k", "warning", MINIMAL),
    ):
        gws[name] = spawn_gateway(name, tmp, up.port, log_level=level, config=config)
        procs.append(gws[name])
    if base_src is not None:
        for name in ("base", "base-1k"):
            gws[name] = spawn_gateway(name, tmp, up.port, source=base_src, config=MINIMAL)
            procs.append(gws[name])
    print("servers up: " + ", ".join(f"{p.name}:{p.port}" for p in procs), flush=True)

    every = [
        Target("direct", up.port, UPSTREAM_MODEL, proc=up),
        Target("hop", hop.port, UPSTREAM_MODEL, proc=hop),
        Target("asgi-hop", asgi_hop.port, UPSTREAM_MODEL, proc=asgi_hop),
        Target("gw", gws["gw"].port, "openclaw", proc=gws["gw"]),
        Target("gw-tools", gws["gw-tools"].port, "openclaw", proc=gws["gw-tools"]),
        Target("gw-info", gws["gw-info"].port, "openclaw", proc=gws["gw-info"]),
        Target("gw-user-1k", gws["gw-1k"].port, "openclaw", True, gws["gw-1k"]),
        Target("gw-user-100k", gws["gw-100k"].port, "openclaw", True, gws["gw-100k"]),
    ]
    if base_src is not None:
        # The same gateways built from another commit, measured in the same rounds.
        every += [
            Target("base", gws["base"].port, "openclaw", proc=gws["base"]),
            Target("base-user-1k", gws["base-1k"].port, "openclaw", True, gws["base-1k"]),
        ]
    return every


def run(settings: Settings, quick: bool, compare: str | None = None) -> dict[str, Any]:
    """The whole benchmark; its results (the JSON written, without ``output``)."""
    started = time.perf_counter()
    result: dict[str, Any] = {"quick": quick, "settings": settings.__dict__}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        base_src = checkout(compare, tmp / "base-tree") if compare else None
        # Stored sessions first (before the gateways that own them start).
        fill_s: dict[int, float] = {}
        for size in STATE_SIZES:
            t0 = time.perf_counter()
            n = asyncio.run(prefill(tmp / f"gw-{size // 1000}k" / "state", size))
            fill_s[size] = round(time.perf_counter() - t0, 2)
            print(f"prefilled {n:,} stored sessions in {fill_s[size]}s", flush=True)
        if base_src is not None:
            # Written by the other commit's own store: its on-disk format may differ.
            prefill_with(base_src, tmp / "base-1k" / "state", STATE_SIZES[0])

        every = start_servers(procs, tmp, base_src)
        by_name = {t.name: t for t in every}
        s = settings
        print("latency (non-streaming) ...", flush=True)
        lat = sequential(
            every,
            stream=False,
            rounds=s.rounds,
            per_round=s.per_round,
            warmup=s.warmup,
            time_budget=s.seq_budget,
        )
        print("TTFT (streaming) ...", flush=True)
        ttft = sequential(
            [by_name["direct"], by_name["hop"], by_name["gw"]],
            stream=True,
            rounds=s.rounds,
            per_round=s.per_round,
            warmup=s.warmup,
            time_budget=s.seq_budget,
        )
        print("throughput ...", flush=True)
        tput = throughput(
            every,
            rounds=s.load_rounds,
            total=s.load_total,
            duration=s.load_duration,
            warmup=min(500, s.load_total),
        )

        for proc in procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} died during the run")
        info_log = {p.name: p for p in procs}["gw-info"].log_path
        assert info_log is not None
        info_lines = info_log.read_bytes().count(b"\n")
        for p in reversed(procs):
            p.stop()
        counts = {
            size: asyncio.run(count_sessions(tmp / f"gw-{size // 1000}k" / "state"))
            for size in STATE_SIZES
        }

    latency = {name: summary_ms(v["total"], v["cpu"]) for name, v in lat.items()}
    stream = {
        name: {"ttft": summary_ms(v["ttft"]), "total": summary_ms(v["total"])}
        for name, v in ttft.items()
    }
    targets, derived = judge(latency, stream, tput, info_lines, compare)
    result.update(
        latency=latency,
        streaming=stream,
        throughput=tput,
        targets=targets,
        derived=derived,
        sessions={
            "prefill_seconds": fill_s,
            "count_after": counts,
            "user_pool": USER_POOL,
            "history_messages": HISTORY_MESSAGES,
        },
        environment=environment(),
        seconds=round(time.perf_counter() - started, 1),
    )
    return result


def environment() -> dict[str, Any]:
    """Where and when the figures were taken: Python, CPUs, load average, commit, time."""
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "connections": CONNECTIONS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 20 s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--compare",
        metavar="REF",
        help="also measure gateways built from git REF (e.g. HEAD~1), in the same rounds",
    )
    # The servers and the prefill are their own scripts now; these old entry points remain.
    parser.add_argument("--serve", choices=("upstream", "hop"), help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefill", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefill-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prefill is not None:
        asyncio.run(prefill(args.prefill, args.prefill_size))
        return
    if args.serve is not None:
        import hop_server
        import upstream_server

        if args.serve == "upstream":
            upstream_server.serve()
        else:
            hop_server.serve(args.upstream_port)
        return
    random.seed(0)
    res = run(QUICK if args.quick else FULL, args.quick, args.compare)
    res["output"] = str(args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=2) + "\n")
    report(res)


if __name__ == "__main__":
    main()
