"""What every part of the gateway benchmark agrees on: addresses, credentials, model names, the
fixed prompt and reply, and the stored-session pool stateful requests cycle over.

Standard library only, and no ``openclaw`` import: the ``--compare`` prefill runs with another
commit's ``src`` on ``PYTHONPATH`` and imports this module too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

HOST: Final = "127.0.0.1"
HERE: Final = Path(__file__).resolve().parent  # benchmarks/
ROOT: Final = HERE.parent  # the repository
TOKEN: Final = "bench-token-0123456789abcdef"
UPSTREAM_MODEL: Final = "bench-model"
PROVIDER: Final = "bench"
PROMPT: Final = "Say hello to the benchmark."
REPLY_WORDS: Final = ("Hello", " from", " the", " bench", " upstream.")
REPLY: Final = "".join(REPLY_WORDS)  # the upstream's completion, also the stored history's
USER_POOL: Final = 1_000  # stateful requests cycle over the first USER_POOL stored sessions
HISTORY_MESSAGES: Final = (
    8  # agents.defaults.maxHistoryMessages; pool sessions start with this many
)
CONNECTIONS: Final = 32  # keep-alive connections of the load client


def bench_user(i: int) -> str:
    """The ``user`` of the i-th stored session (as stateful requests send it)."""
    return f"bench-user-{i}"
