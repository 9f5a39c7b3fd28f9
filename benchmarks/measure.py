"""How the benchmark measures: interleaved rounds over targets, and the statistics of them.

* ``sequential``  latency / TTFT: requests one after another on one keep-alive connection per
                  target, targets interleaved (alternating order) so that machine noise hits
                  baseline and gateway alike, with the server's CPU per request per round;
* ``load``        one throughput run of ``CONNECTIONS`` connections: burst and sustained rate
                  (the latter including the time the server then needs to go idle), latency
                  percentiles, server CPU per request and RSS, the client's own CPU;
* ``throughput``  interleaved rounds of ``load``; per target the round with the median
                  sustained rate.

``Settings`` says how much of each (``FULL`` or ``QUICK``).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clients import CONTENT_MARKER, Conn, Target, run_load
from processes import settle


@dataclass
class Settings:
    """Request counts and time budgets of one benchmark run."""

    rounds: int  # sequential rounds (each: per_round requests per target)
    per_round: int
    warmup: int  # sequential requests per target before the first round
    load_rounds: int  # throughput rounds (each: one load per target)
    load_total: int  # requests per load, at most
    load_duration: float  # seconds per load, at most
    seq_budget: float  # no further sequential round once this many seconds have passed


FULL = Settings(
    rounds=6,
    per_round=250,
    warmup=200,
    load_rounds=3,
    load_total=6000,
    load_duration=8.0,
    seq_budget=60.0,
)
QUICK = Settings(
    rounds=2,
    per_round=100,
    warmup=50,
    load_rounds=1,
    load_total=1500,
    load_duration=4.0,
    seq_budget=15.0,
)


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (linear interpolation); NaN for no values."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(samples: Sequence[float], cpu: Sequence[float] = ()) -> dict[str, float]:
    """Percentiles and mean of ``samples`` (s) in ms, with the mean server CPU per request."""
    extra = {"server_cpu_us_per_req": round(statistics.fmean(cpu) * 1e6, 1)} if cpu else {}
    return {
        **extra,
        "n": len(samples),
        "p50_ms": round(pct(samples, 50) * 1000, 4),
        "p95_ms": round(pct(samples, 95) * 1000, 4),
        "p99_ms": round(pct(samples, 99) * 1000, 4),
        "mean_ms": round(statistics.fmean(samples) * 1000, 4) if samples else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    """a / b to 3 decimals; NaN if b is 0."""
    return round(a / b, 3) if b else float("nan")


def sequential(
    targets: Sequence[Target],
    *,
    stream: bool,
    rounds: int,
    per_round: int,
    warmup: int,
    time_budget: float,
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds of sequential requests; per target the total times and TTFTs (s), and
    the server CPU per request of each round (s)."""
    conns = {t.name: Conn(t.port) for t in targets}
    makers = {t.name: t.requests(stream=stream) for t in targets}
    out: dict[str, dict[str, list[float]]] = {
        t.name: {"total": [], "ttft": [], "cpu": []} for t in targets
    }
    marker = CONTENT_MARKER if stream else None
    try:
        for t in targets:
            for _ in range(warmup):
                status, body, _ = conns[t.name].request(makers[t.name](), marker)
                if status != 200:
                    raise RuntimeError(f"{t.name}: HTTP {status}: {body[:300]!r}")
        deadline = time.monotonic() + time_budget
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for t in order:
                conn, make, res = conns[t.name], makers[t.name], out[t.name]
                if t.proc is not None:
                    settle(t.proc, 10.0)  # the previous target's deferred work is not ours
                    cpu0 = t.proc.cpu_seconds()
                for _ in range(per_round):
                    req = make()
                    t0 = time.perf_counter()
                    status, body, seen = conn.request(req, marker)
                    t1 = time.perf_counter()
                    if status != 200:
                        raise RuntimeError(f"{t.name}: HTTP {status}: {body[:300]!r}")
                    res["total"].append(t1 - t0)
                    if stream:
                        if seen is None:
                            raise RuntimeError(f"{t.name}: no content delta in {body[:300]!r}")
                        res["ttft"].append(seen - t0)
                if t.proc is not None:
                    # Including the work this round's requests left behind.
                    settle(t.proc, 10.0)
                    res["cpu"].append((t.proc.cpu_seconds() - cpu0) / per_round)
            if time.monotonic() > deadline:
                break
    finally:
        for c in conns.values():
            c.close()
    return out


def load(target: Target, total: int, duration: float) -> dict[str, Any]:
    """Throughput of ``CONNECTIONS`` keep-alive connections for ``total`` requests (or time).

    ``rps`` counts the load's wall time only; ``sustained_rps`` adds the time the server then
    needs to finish the work it deferred (``settle_s``), and the server's CPU per request covers
    both, so a server that queues work in the background cannot look faster than it is.
    """
    import uvloop

    make = target.requests()
    cpu0 = target.proc.cpu_seconds() if target.proc else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    run = uvloop.run(run_load(target.port, make, total, duration))
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    settle_s = settle(target.proc) if target.proc else 0.0
    cpu1 = target.proc.cpu_seconds() if target.proc else None
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out: dict[str, Any] = {
        "requests": run.done,
        "errors": run.errors,
        "seconds": round(wall, 3),
        "rps": round(run.done / wall, 1),
        "settle_s": round(settle_s, 2),
        "sustained_rps": round(run.done / (wall + settle_s), 1),
        "latency_p50_ms": round(pct(run.latencies, 50) * 1000, 3),
        "latency_p99_ms": round(pct(run.latencies, 99) * 1000, 3),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
    }
    if cpu0 is not None and cpu1 is not None and run.done:
        out["server_cpu_us_per_req"] = round((cpu1 - cpu0) / run.done * 1e6, 1)
        out["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / (wall + settle_s), 1)
    if target.proc is not None:
        out["server_rss_mb"] = target.proc.rss_mb()
    return out


def throughput(
    targets: Sequence[Target], *, rounds: int, total: int, duration: float, warmup: int
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds; per target the round with the median sustained rate (and all)."""
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for t in targets:
        load(t, warmup, 10)
    for r in range(rounds):
        for t in targets if r % 2 == 0 else reversed(targets):
            res = load(t, total, duration)
            if res["errors"]:
                raise RuntimeError(f"{t.name}: {res['errors']} failed requests under load")
            runs[t.name].append(res)
    out: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        ranked = sorted(results, key=lambda x: x["sustained_rps"])
        mid = dict(ranked[len(ranked) // 2])
        mid["rps_all"] = [x["rps"] for x in results]
        mid["sustained_rps_all"] = [x["sustained_rps"] for x in results]
        cpus = [x["server_cpu_us_per_req"] for x in results if "server_cpu_us_per_req" in x]
        if cpus:
            mid["server_cpu_us_per_req"] = round(statistics.median(cpus), 1)
        out[name] = mid
    return out
