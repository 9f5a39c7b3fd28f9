"""Identifiers for requests, runs, completions and sessions.

They name things; they guard nothing (the gateway secret does), so they come from the process's
seeded PRNG rather than ``os.urandom``: no system call, and no release of the GIL on the hot path
(measured at ~10% of the event loop's time under load, contending with the store's thread).
``random`` is seeded from the OS at start-up, so ids from different processes do not collide.
"""

from __future__ import annotations

import random
import time
import uuid

_bits = random.getrandbits


def hex_id(nbytes: int = 12) -> str:
    """``2 * nbytes`` random hex digits."""
    return f"{_bits(nbytes * 8):0{nbytes * 2}x}"


# RFC 9562 UUIDv7: 48 bits of unix milliseconds, version 7, 12 random bits, variant 0b10,
# 62 random bits.
_UUID7_VERSION = 0x7 << 76
_UUID7_VARIANT = 0b10 << 62


def _uuid7_int() -> int:
    ms = time.time_ns() // 1_000_000
    return ms << 80 | _UUID7_VERSION | _bits(12) << 64 | _UUID7_VARIANT | _bits(62)


def uuid7_hex() -> str:
    """A version-7 UUID (time-ordered) as 32 hex digits.

    Time-ordered: rows keyed by it are inserted at the end of their B-trees, so a commit touches
    the same few pages as the one before instead of a random page each (measured: about a third
    less time per commit of a per-request session)."""
    return f"{_uuid7_int():032x}"


def uuid7_str() -> str:
    """A version-7 UUID in the canonical 8-4-4-4-12 form."""
    return str(uuid.UUID(int=_uuid7_int()))
