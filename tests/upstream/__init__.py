"""The test suite's own deterministic upstream model servers (see ``server``)."""

from tests.upstream.server import (
    Answer,
    Behaviour,
    Disconnect,
    Drop,
    FakeUpstream,
    Hang,
    Headers,
    HttpError,
    RecordedRequest,
    StreamAbort,
    StreamError,
    ToolCalls,
    running_upstream,
    slow_stream,
)

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
