"""Identifiers: UUIDv7 session ids and per-request keys are valid and time-ordered."""

from __future__ import annotations

import time
import uuid

from openclaw.ids import uuid7_hex, uuid7_str


def test_uuid7_is_a_version_7_rfc_uuid_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid.UUID(uuid7_str()) for _ in range(1000)] + [
        uuid.UUID(uuid7_hex()) for _ in range(1000)
    ]
    after = time.time_ns() // 1_000_000
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert all(before <= u.int >> 80 <= after for u in ids)
    assert len(set(ids)) == len(ids)


def test_uuid7_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    first = uuid7_hex()
    ms = int(first[:12], 16)
    while time.time_ns() // 1_000_000 <= ms:
        pass  # the next millisecond (a clock read, not a sleep)
    assert uuid7_hex() > first
