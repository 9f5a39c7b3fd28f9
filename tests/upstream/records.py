"""What ``FakeUpstream`` records: the requests it received and the clients that went away."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.upstream.behaviours import Behaviour

__all__ = ["Disconnect", "Headers", "RecordedRequest"]


class Headers(dict[str, str]):
    """Request headers: keys stored lower-cased, lookups case-insensitive."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    index: int
    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: Any  # parsed JSON, or None when empty / not JSON
    raw: bytes
    at: float  # time.monotonic() when the body had been read


@dataclass(frozen=True)
class Disconnect:
    """A model response whose client went away before it finished."""

    path: str
    request_index: int
    stream: bool
    chunks_sent: int  # content chunks written before the disconnect was noticed
    behaviour: Behaviour
    at: float  # time.monotonic() when the server noticed
