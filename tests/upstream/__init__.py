"""The test suite's own deterministic upstream model servers (see ``server``)."""

from tests.upstream.behaviours import (
    Answer,
    Behaviour,
    Drop,
    Hang,
    HttpError,
    StreamAbort,
    StreamError,
    ToolCalls,
    slow_stream,
)
from tests.upstream.records import Disconnect, Headers, RecordedRequest
from tests.upstream.server import FakeUpstream, running_upstream

__all__ = [
    "Answer",
    "Behaviour",
    "Disconnect",
    "Drop",
    "FakeUpstream",
    "Hang",
    "Headers",
    "HttpError",
    "RecordedRequest",
    "StreamAbort",
    "StreamError",
    "ToolCalls",
    "running_upstream",
    "slow_stream",
]
