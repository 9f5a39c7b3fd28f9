"""Where a gateway request's time goes: py-spy on a gateway process under load.

Run: ``.venv/bin/python benchmarks/profile_gateway.py [--stateful] [--seconds 15] [--native]``
(py-spy must be installed: ``.venv/bin/pip install py-spy``; it needs ptrace, fine as root).

Starts the fixed-answer upstream and one gateway (as ``bench_gateway.py`` does, same config),
drives it with 32 keep-alive connections of non-streaming requests (``user`` set with
``--stateful``, against 100k stored sessions), samples it with ``py-spy record --threads``, and
prints: samples per thread, the event-loop thread's time by component (each sample charged to
the innermost frame that belongs to a known component), the top functions by own time and by
inclusive time.  The raw collapsed stacks are kept in ``benchmarks/results/`` for flame graphs
(e.g. ``py-spy``'s speedscope output, or any collapsed-stack viewer).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import Target
from common import HERE
from measure import load
from prefill import prefill
from processes import processes, spawn_gateway, spawn_upstream

# (component, regex on "function (file:line)" frames); the innermost matching frame wins, so
# more specific components (json, logging, validation) sit inside broad ones (runner, endpoint).
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(rx))
    for name, rx in [
        ("logging", r"\((logging/|openclaw/logs\.py)"),
        ("pydantic validation", r"\((pydantic|pydantic_core)/|openai_schema\.py"),
        ("config access (pydantic models)", r"openclaw/config/"),
        ("session store (loop side)", r"openclaw/sessions/"),
        ("agent history/prompt", r"openclaw/agents/(history|prompts|registry)\.py"),
        ("runner", r"openclaw/agents/runner\.py"),
        ("provider registry", r"openclaw/providers/registry\.py"),
        ("provider openai_compat/http", r"openclaw/providers/(openai_compat|http|base|tokens)\.py"),
        (
            "aiohttp client",
            r"\(aiohttp/(client|connector|streams|http_parser|client_reqrep|"
            r"client_proto|helpers|http_writer|payload|multidict|tracing|cookiejar|abc)",
        ),
        ("aiohttp (other)", r"\(aiohttp/"),
        ("multidict/yarl", r"\((multidict|yarl)/"),
        ("chat endpoint", r"openclaw/gateway/http/chat_completions\.py"),
        ("body/auth/state/wire", r"openclaw/gateway/(body|auth|state|wire)\.py"),
        ("gateway middleware", r"openclaw/gateway/middleware\.py"),
        ("starlette", r"\(starlette/"),
        ("uvicorn/httptools protocol", r"\(uvicorn/"),
        ("asyncio/contextlib/timeouts", r"\((asyncio|contextlib|concurrent)/"),
        ("dataclasses/uuid/misc stdlib", r"\((dataclasses|uuid|enum|typing|os|random)\.py"),
    ]
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def run_load(target: Target, seconds: float, out: dict[str, object]) -> None:
    out["result"] = load(target, 10_000_000, seconds)


def component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, rx in COMPONENTS:
            if rx.search(frame):
                return name
    return "event loop / other"


def analyse(raw: Path, top: int) -> None:
    per_thread: collections.Counter[str] = collections.Counter()
    stacks: list[tuple[str, list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[0]
        n = int(count)
        per_thread[thread] += n
        stacks.append((thread, frames[1:], n))
    total = sum(per_thread.values())
    print(f"\n{total} samples; per thread:")
    for thread, n in per_thread.most_common():
        print(f"  {n:>7} {100 * n / total:5.1f}%  {thread}")
    loop_thread = next(
        (t for t, _ in per_thread.most_common() if "MainThread" in t or "main" in t.lower()),
        per_thread.most_common(1)[0][0],
    )
    loop = [(f, n) for t, f, n in stacks if t == loop_thread]
    loop_total = sum(n for _, n in loop)
    comp: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, n in loop:
        comp[component(frames)] += n
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"\nEvent-loop thread ({loop_thread}): time by component (innermost match)")
    for name, n in comp.most_common():
        print(f"  {100 * n / loop_total:5.1f}%  {name}")
    print(f"\nTop {top} functions by own time (event-loop thread)")
    for f, n in own.most_common(top):
        print(f"  {100 * n / loop_total:5.1f}%  {f}")
    print(f"\nTop {top} functions by inclusive time (event-loop thread)")
    for f, n in incl.most_common(top):
        print(f"  {100 * n / loop_total:5.1f}%  {f}")
    others = [(t, f, n) for t, f, n in stacks if t != loop_thread]
    if others:
        own_o: collections.Counter[str] = collections.Counter()
        for _, frames, n in others:
            if frames:
                own_o[frames[-1]] += n
        print("\nOther threads: top functions by own time (% of all samples)")
        for f, n in own_o.most_common(10):
            print(f"  {100 * n / total:5.1f}%  {f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stateful", action="store_true", help="`user` set, 100k sessions")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (slower)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--variants", default="", help="gw_variant.py changes, comma-separated")
    parser.add_argument(
        "--tools", action="store_true", help="the default tools profile (else minimal: none sent)"
    )
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")

    kind = ("stateful" if args.stateful else "stateless") + (
        f"-{args.variants.replace(',', '+')}" if args.variants else ""
    )
    raw = HERE / "results" / f"profile-{kind}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="profile-gateway-") as tmp_name,
        processes() as procs,
    ):
        tmp = Path(tmp_name)
        name = "gw-100k" if args.stateful else "gw"
        if args.stateful:
            asyncio.run(prefill(tmp / name / "state", 100_000))
        up = spawn_upstream()
        procs.append(up)
        variants = [v for v in args.variants.split(",") if v]
        config = None if args.tools else {"tools": {"profile": "minimal"}}
        gw = spawn_gateway(
            name, tmp, up.port, log_level=args.log_level, variants=variants, config=config
        )
        procs.append(gw)
        target = Target(name, gw.port, "openclaw", args.stateful, gw)
        load(target, 2000, 10)  # warm-up
        out: dict[str, object] = {}
        loader = threading.Thread(target=run_load, args=(target, args.seconds + 2, out))
        loader.start()
        time.sleep(1)
        cmd = [
            spy,
            "record",
            "-p",
            str(gw.popen.pid),
            "-d",
            str(int(args.seconds)),
            "-r",
            str(args.rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--threads",
            "--function",
        ]
        if args.native:
            cmd.append("--native")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loader.join()
        print(f"load under profiling: {out.get('result')}")
    analyse(raw, args.top)
    print(f"\nraw collapsed stacks: {raw}")


if __name__ == "__main__":
    main()
