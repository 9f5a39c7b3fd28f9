"""The soak's short version (``tests/soak/soak.py`` has the long one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.soak import INJECTED, soak

pytestmark = pytest.mark.timeout(300)


def test_a_short_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    report = soak(tmp_path, total=1_500, clients=32, seed=3)
    assert report.requests == 1_500
    assert not report.unexpected, report.errors
    assert set(report.errors) <= INJECTED
    assert sum(report.errors.values()) <= report.faults_scripted
    assert report.answered + report.disconnected + sum(report.errors.values()) == 1_500
    assert report.user_turns_answered > 300
    assert report.user_turns_missing == []
    # Flat: no growth from the first 1,000 requests to the end beyond allocator noise.
    assert report.rss_mb_end - report.rss_mb_after_1000 <= 30
    assert report.fds_end <= report.fds_after_1000 + 8
