"""The per-address limit on failed authentication, on an injected clock; and counted over\nworkers sharing a state dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openclaw.config.schema import RateLimitConfig
from openclaw.errors import RateLimitError
from openclaw.gateway.auth import FailureLimiter
from openclaw.gateway.shared_failures import SharedFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **cfg: object) -> FailureLimiter:
    base = {"maxAttempts": 3, "windowMs": 60_000, "lockoutMs": 300_000, "exemptLoopback": True}
    return FailureLimiter(RateLimitConfig.model_validate({**base, **cfg}), clock=clock)


def test_too_many_failures_in_the_window_lock_the_address_out() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(2):
        lim.failure("10.0.0.1")
        lim.check("10.0.0.1")
    lim.failure("10.0.0.1")
    with pytest.raises(RateLimitError) as info:
        lim.check("10.0.0.1")
    assert info.value.headers == {"Retry-After": "300"}
    lim.check("10.0.0.2")  # other addresses are not affected
    clock.now += 299
    with pytest.raises(RateLimitError) as info:
        lim.check("10.0.0.1")
    assert info.value.headers == {"Retry-After": "1"}
    clock.now += 1
    lim.check("10.0.0.1")


def test_failures_leave_the_window() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.failure("10.0.0.1")
    lim.failure("10.0.0.1")
    clock.now += 61
    lim.failure("10.0.0.1")
    lim.check("10.0.0.1")


def test_a_success_forgets_the_failures() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.failure("10.0.0.1")
    lim.failure("10.0.0.1")
    lim.success("10.0.0.1")
    lim.failure("10.0.0.1")
    lim.check("10.0.0.1")


def test_loopback_is_exempt_unless_configured_otherwise() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(10):
        lim.failure("127.0.0.1")
        lim.failure("::1")
    lim.check("127.0.0.1")
    lim.check("::1")
    strict = limiter(clock, exemptLoopback=False)
    for _ in range(3):
        strict.failure("127.0.0.1")
    with pytest.raises(RateLimitError):
        strict.check("127.0.0.1")


def test_a_zero_lockout_still_waits_for_the_window() -> None:
    clock = Clock()
    lim = limiter(clock, lockoutMs=0)
    for _ in range(3):
        lim.failure("10.0.0.1")
        clock.now += 10
    with pytest.raises(RateLimitError):
        lim.check("10.0.0.1")
    clock.now += 40  # the first failure leaves the window
    lim.check("10.0.0.1")


async def test_workers_on_one_state_dir_allow_the_limit_in_all(tmp_path: Path) -> None:
    """Two workers' limiters over one shared count: whatever worker each attempt reaches, and
    however many are in flight at once, the limit's attempts fail (401) and the rest are
    refused as locked out (429)."""
    cfg = RateLimitConfig.model_validate(
        {"maxAttempts": 3, "windowMs": 60_000, "lockoutMs": 60_000, "exemptLoopback": False}
    )
    workers = [FailureLimiter(cfg) for _ in range(2)]
    shared = [SharedFailures(tmp_path, cfg, lim.lock) for lim in workers]
    for lim, count in zip(workers, shared, strict=True):
        lim.shared = count
        await count.start()
    try:

        async def attempt(i: int) -> str:
            lim = workers[i % 2]
            try:
                lim.check("10.0.0.1")
                await lim.failed("10.0.0.1")
            except RateLimitError:
                return "429"
            return "401"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(12)))
        assert outcomes.count("401") == 3, outcomes
        # Both workers now refuse the address by themselves; another is not affected.
        for lim in workers:
            with pytest.raises(RateLimitError):
                lim.check("10.0.0.1")
        await workers[1].failed("10.0.0.2")
        workers[0].check("10.0.0.2")
    finally:
        for count in shared:
            await count.close()
