"""What each per-request cost is worth end to end: the gateway vs the same gateway with one cost
removed (``gw_variant.py``), measured in interleaved rounds against one upstream.

Run: ``.venv/bin/python benchmarks/ablate_gateway.py [--stateful] [--quick] [VARIANT ...]``
(no VARIANT: all of them, one gateway each, plus ``all`` with every one applied at once).
Prints per variant the p50 latency saved, the throughput gain and the gateway CPU per request
saved, and writes ``benchmarks/results/ablation-<stateless|stateful>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import environment
from clients import Target
from common import HERE, USER_POOL
from gw_variant import KNOWN
from measure import FULL, QUICK, pct, ratio, sequential, throughput
from prefill import prefill
from processes import processes, spawn_gateway, spawn_upstream

DEFAULT = [
    "no-ephemeral-persist",
    "inline-store",
    "no-disconnect-watch",
    "no-gw-middleware",
    "lean-routing",
    "gc-freeze",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help=f"from {sorted(KNOWN - {'cprofile'})}")
    parser.add_argument("--stateful", action="store_true", help="`user` set, 1k stored sessions")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--base", default="", help="comma-separated variants applied to every gateway, baseline too"
    )
    args = parser.parse_args()
    base_vs = [v for v in args.base.split(",") if v]
    variants = [v for v in (args.variants or DEFAULT) if v not in base_vs]
    s = QUICK if args.quick else FULL
    kind = "stateful" if args.stateful else "stateless"
    started = time.perf_counter()
    combos: list[tuple[str, list[str]]] = [("baseline", base_vs)]
    combos += [(v, [*base_vs, v]) for v in variants]
    if len(variants) > 1:
        combos.append(("all", [*base_vs, *variants]))
    with tempfile.TemporaryDirectory(prefix="ablate-gateway-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        up = spawn_upstream()
        procs.append(up)
        targets: list[Target] = []
        for name, vs in combos:
            if args.stateful:
                asyncio.run(prefill(tmp / name / "state", USER_POOL))
            proc = spawn_gateway(name, tmp, up.port, variants=vs)
            procs.append(proc)
            targets.append(Target(name, proc.port, "openclaw", args.stateful, proc))
        print(f"{kind}: " + ", ".join(t.name for t in targets), flush=True)
        lat = sequential(
            targets,
            stream=False,
            rounds=s.rounds,
            per_round=s.per_round,
            warmup=s.warmup,
            time_budget=s.seq_budget,
        )
        tput = throughput(
            targets,
            rounds=s.load_rounds,
            total=s.load_total,
            duration=s.load_duration,
            warmup=min(500, s.load_total),
        )
    base_p50 = pct(lat["baseline"]["total"], 50) * 1000
    seq_cpu = {n: statistics.fmean(v["cpu"]) * 1e6 for n, v in lat.items()}
    base = tput["baseline"]
    rows = {}
    if base_vs:
        print(f"\nevery gateway, baseline included, runs with: {', '.join(base_vs)}")
    print(
        f"\n{kind} requests; baseline p50 {base_p50:.3f} ms, {base['sustained_rps']:.0f} req/s, "
        f"{base['server_cpu_us_per_req']:.0f} us CPU/req"
    )
    print(
        f"{'variant':<22}{'p50 ms':>8}{'saved ms':>10}{'seq CPU us':>11}{'saved':>7}"
        f"{'sust/s':>8}{'x base':>8}{'CPU us/req':>12}{'saved us':>10}"
    )
    for t in targets:
        p50 = pct(lat[t.name]["total"], 50) * 1000
        r = tput[t.name]
        cpu = r.get("server_cpu_us_per_req", float("nan"))
        rows[t.name] = {
            "p50_ms": round(p50, 4),
            "p50_saved_ms": round(base_p50 - p50, 4),
            "sequential_cpu_us_per_req": round(seq_cpu[t.name], 1),
            "rps": r["rps"],
            "sustained_rps": r["sustained_rps"],
            "rps_ratio": ratio(r["sustained_rps"], base["sustained_rps"]),
            "cpu_us_per_req": cpu,
            "cpu_saved_us": round(base["server_cpu_us_per_req"] - cpu, 1),
            "rps_all": r["rps_all"],
        }
        print(
            f"{t.name:<22}{p50:>8.3f}{base_p50 - p50:>10.3f}{seq_cpu[t.name]:>11.0f}"
            f"{seq_cpu['baseline'] - seq_cpu[t.name]:>7.0f}{r['sustained_rps']:>8.0f}"
            f"{r['sustained_rps'] / base['sustained_rps']:>8.2f}{cpu:>12.0f}"
            f"{base['server_cpu_us_per_req'] - cpu:>10.0f}"
        )
    suffix = f"-on-{'+'.join(base_vs)}" if base_vs else ""
    out = HERE / "results" / f"ablation-{kind}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "kind": kind,
                "quick": args.quick,
                "base": base_vs,
                "variants": rows,
                "environment": environment(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\n{time.perf_counter() - started:.0f}s; results in {out}")


if __name__ == "__main__":
    main()
