"""Admission: a bounded number of runs at once and a bounded queue beyond (503 with
Retry-After), and runs queued behind one busy session never hold the slots others need."""

from __future__ import annotations

import orjson

from tests.e2e.conftest import chat_config
from tests.e2e.rawhttp import request
from tests.upstream import Answer


def post(gw, body, headers=None):
    return request(
        gw.port,
        "POST",
        "/v1/chat/completions",
        body=orjson.dumps(body),
        headers={**gw.auth_headers(), "Content-Type": "application/json", **(headers or {})},
    )


def test_a_busy_session_does_not_hold_run_slots(gateway_factory, upstream) -> None:
    """Runs queued behind one busy session must not take the run slots another session needs:
    bob's run (a free session) is answered before alice's second one (queued behind her first)."""
    cfg = chat_config(upstream)
    cfg["agents"]["defaults"]["maxConcurrent"] = 2
    gw = gateway_factory(cfg)
    # Bob has one model delay of slack over alice's second run: generous for a loaded machine.
    upstream.default = Answer(first_token_delay=2.5)
    import threading

    finished: list[str] = []

    def call(user: str, tag: str) -> None:
        post(
            gw, {"model": "openclaw", "messages": [{"role": "user", "content": "x"}], "user": user}
        )
        finished.append(tag)

    threads = [threading.Thread(target=call, args=("alice", f"a{i}")) for i in range(3)]
    for t in threads:
        t.start()
    assert upstream.wait_for_requests(1, timeout=10)  # alice's first is at the model
    bob = threading.Thread(target=call, args=("bob", "bob"))
    bob.start()
    for t in [*threads, bob]:
        t.join(30)
    # At most alice's first run (the one holding her session) ends before bob's.
    assert finished.index("bob") <= 1, finished


def test_gateway_busy_is_503_with_retry_after(gateway_factory, upstream) -> None:
    import threading

    cfg = chat_config(upstream)
    cfg["agents"]["defaults"]["maxConcurrent"] = 1
    cfg["agents"]["defaults"]["maxQueued"] = 0
    gw = gateway_factory(cfg)
    # The slow run must still hold the one slot when the second request arrives.
    upstream.script(Answer(first_token_delay=5.0))
    slow = threading.Thread(
        target=post,
        args=(gw, {"model": "openclaw", "messages": [{"role": "user", "content": "slow"}]}),
    )
    slow.start()
    assert upstream.wait_for_requests(1, timeout=10)
    reply = post(gw, {"model": "openclaw", "messages": [{"role": "user", "content": "x"}]})
    slow.join(30)
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["code"] == "gateway_busy"
