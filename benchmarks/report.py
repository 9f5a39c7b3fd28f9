"""The printed report of ``bench_gateway.py``: its results JSON as tables on stdout."""

from __future__ import annotations

from typing import Any

from common import CONNECTIONS


def _ok(met: bool) -> str:
    return "MET" if met else "NOT MET"


def _latency(lat: dict[str, Any]) -> None:
    d50 = lat["direct"]["p50_ms"]
    print("\nNon-streaming latency, sequential keep-alive (ms)")
    print(
        f"{'target':<14}{'p50':>8}{'p95':>8}{'p99':>8}{'added p50':>11}{'x direct':>10}"
        f"{'CPU us/req':>12}"
    )
    for name, v in lat.items():
        print(
            f"{name:<14}{v['p50_ms']:>8.3f}{v['p95_ms']:>8.3f}{v['p99_ms']:>8.3f}"
            f"{v['p50_ms'] - d50:>11.3f}{v['p50_ms'] / d50:>10.2f}"
            f"{v.get('server_cpu_us_per_req', float('nan')):>12.0f}"
        )


def _streaming(st: dict[str, Any]) -> None:
    t50 = st["direct"]["ttft"]["p50_ms"]
    print("\nStreaming: time to first content token (ms)")
    print(f"{'target':<14}{'p50':>8}{'p95':>8}{'p99':>8}{'added p50':>11}{'total p50':>11}")
    for name, v in st.items():
        f = v["ttft"]
        print(
            f"{name:<14}{f['p50_ms']:>8.3f}{f['p95_ms']:>8.3f}{f['p99_ms']:>8.3f}"
            f"{f['p50_ms'] - t50:>11.3f}{v['total']['p50_ms']:>11.3f}"
        )


def _throughput(tp: dict[str, Any]) -> None:
    hop_rps = tp["hop"]["sustained_rps"]
    print(
        f"\nThroughput, {CONNECTIONS} keep-alive connections (round with the median sustained"
        " rate;\n sustained = requests / (load time + time the server then needs to go idle))"
    )
    print(
        f"{'target':<14}{'burst/s':>9}{'settle s':>9}{'sustained':>10}{'x hop':>7}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'CPU us/req':>11}{'RSS MB':>8}{'client%':>8}"
    )
    for name, v in tp.items():
        cpu = v.get("server_cpu_us_per_req", float("nan"))
        print(
            f"{name:<14}{v['rps']:>9.0f}{v['settle_s']:>9.2f}{v['sustained_rps']:>10.0f}"
            f"{v['sustained_rps'] / hop_rps:>7.2f}{v['latency_p50_ms']:>8.2f}"
            f"{v['latency_p99_ms']:>8.2f}{cpu:>11.0f}{v.get('server_rss_mb', 0):>8.0f}"
            f"{v['client_cpu_pct']:>8.0f}"
        )


def _targets(tg: dict[str, Any]) -> None:
    print("\nTargets")
    a, f, t, s = (
        tg[k]
        for k in (
            "added_latency_p50_over_hop",
            "added_ttft_p50",
            "throughput_vs_hop",
            "sessions_flat_1k_to_100k",
        )
    )
    print(
        f"  added p50 over hop    {a['value_ms']:.3f} ms (limit {a['limit_ms']})"
        f"  gw/hop {a['ratio_gw_over_hop']:.2f}x   {_ok(a['met'])}"
    )
    print(
        f"  added TTFT p50        {f['value_ms']:.3f} ms (limit {f['limit_ms']})"
        f"  gw/direct {f['ratio_gw_over_direct']:.2f}x   {_ok(f['met'])}"
    )
    print(
        f"  throughput gw/hop     {t['ratio']:.2f} sustained, {t['burst_ratio']:.2f} burst"
        f" (limit >= {t['limit']})   {_ok(t['met'])}"
    )
    print(
        f"  sessions 100k/1k      latency p50 {s['latency_p50_ratio']:.2f},"
        f" throughput {s['throughput_ratio']:.2f} (tolerance {s['tolerance']})"
        f"   {_ok(s['met'])}"
    )


def _derived(dv: dict[str, Any]) -> None:
    print("\nOther figures")
    print(
        f"  bare hop added p50 {dv['hop_added_p50_ms']:.3f} ms; gateway over direct "
        f"{dv['gw_added_over_direct_p50_ms']:.3f} ms; gateway CPU/request "
        f"{dv['gw_cpu_per_req_over_hop']:.2f}x the hop's"
    )
    print(
        f"  the server stack alone (asgi-hop): throughput x{dv['asgi_hop_throughput_vs_hop']:.2f}"
        f" of the hop, {dv['asgi_hop_added_p50_ms']:+.3f} ms p50; gateway CPU/request "
        f"{dv['gw_cpu_per_req_over_asgi_hop']:.2f}x its"
    )
    print(
        f"  default tools profile (gw-tools) vs tools off: "
        f"+{dv['tools_profile_added_p50_ms']:.3f} ms p50, throughput "
        f"x{dv['tools_profile_throughput_ratio']:.2f} ({dv['gw_tools_throughput_vs_hop']:.2f} "
        "of the hop)"
    )
    print(
        f"  info-level access logs: +{dv['info_logs_added_p50_ms']:.3f} ms p50, "
        f"throughput x{dv['info_logs_throughput_ratio']:.2f} ({dv['info_log_lines']} lines)"
    )
    print(
        f"  stateful (user set) vs stateless: +{dv['stateful_added_p50_ms']:.3f} ms p50, "
        f"throughput x{dv['stateful_throughput_ratio']:.2f}"
    )
    cmp = dv.get("compare")
    if cmp:
        print(
            f"  vs {cmp['ref']} (same run): stateless {cmp['stateless_added_p50_ms_vs_base']:+.3f}"
            f" ms p50, throughput x{cmp['stateless_throughput_vs_base']:.2f}; stateful (user)"
            f" {cmp['stateful_added_p50_ms_vs_base']:+.3f} ms p50, throughput"
            f" x{cmp['stateful_throughput_vs_base']:.2f}"
        )


def report(res: dict[str, Any]) -> None:
    """Print the tables and verdicts of a ``bench_gateway.run`` result (with ``output`` set)."""
    _latency(res["latency"])
    _streaming(res["streaming"])
    _throughput(res["throughput"])
    _targets(res["targets"])
    _derived(res["derived"])
    env = res["environment"]
    print(
        f"\n{res['seconds']}s, {env['cpus']} CPUs, load average {env['loadavg']}; "
        f"results in {res['output']}"
    )
