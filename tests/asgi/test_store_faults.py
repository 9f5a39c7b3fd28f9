"""A store that cannot write (a read-only state dir, a full disk): requests that need it get a
clear 503 and the gateway stays up; once the disk is back, it recovers by itself, with nothing
half-written left behind.  (A real full disk, through the file size limit, is in
``tests/e2e/test_durable_replies.py``.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from openclaw.sessions import transcript
from tests.asgi.conftest import AUTH, App
from tests.e2e.conftest import chat_config, transcripts
from tests.upstream import FakeUpstream


class Disk:
    """``os.open`` for writing and ``os.write`` in the transcript module, failing on demand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.error: int | None = None
        real_open, real_write = os.open, os.write

        def fake_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
            if self.error is not None and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(self.error, os.strerror(self.error), str(path))
            return real_open(path, flags, *args, **kw)

        def fake_write(fd: int, data: Any) -> int:
            if self.error is not None:
                raise OSError(self.error, os.strerror(self.error))
            return real_write(fd, data)

        monkeypatch.setattr(transcript.os, "open", fake_open)
        monkeypatch.setattr(transcript.os, "write", fake_write)


async def _chat(client: Any, text: str, **extra: Any) -> Any:
    body = {"model": "openclaw", "messages": [{"role": "user", "content": text}], **extra}
    return await client.post("/v1/chat/completions", json=body, headers=AUTH)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
async def test_the_store_failing_is_503_and_it_recovers_by_itself(
    app: App, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: int
) -> None:
    disk = Disk(monkeypatch)
    client = await app(chat_config(upstream))
    assert (await _chat(client, "first", user="u")).status_code == 200
    disk.error = error
    for _ in range(3):
        failed = await _chat(client, "lost", user="u")
        assert failed.status_code == 503
        assert failed.headers["retry-after"] == "1"
        assert failed.json()["error"]["code"] == "store_unavailable"
        streamed = await _chat(client, "lost stream", user="u", stream=True)
        assert streamed.status_code == 200  # the stream had started: an error event, then DONE
        assert '"store_unavailable"' in streamed.text
        assert streamed.text.endswith("data: [DONE]\n\n")
    # The gateway stays up meanwhile: what needs no store still answers.
    assert (await client.get("/health")).status_code == 200
    disk.error = None  # space is back
    reply = await _chat(client, "second", user="u")
    assert reply.json()["choices"][0]["message"]["content"] == "Echo: second"
    [records] = transcripts(tmp_path / "state")
    assert [(r["role"], r["content"]) for r in records] == [
        ("user", "first"),
        ("assistant", "Echo: first"),
        ("user", "second"),
        ("assistant", "Echo: second"),
    ]


async def test_a_response_that_cannot_be_stored_ends_its_stream_after_all_its_text(
    app: App, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text streamed so far goes out whole before the failure's event (none of it held
    back and lost when storing the response object fails after the run)."""
    from openclaw.errors import StoreUnavailableError
    from openclaw.sessions.store import SqliteSessionStore

    async def fails(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailableError()

    monkeypatch.setattr(SqliteSessionStore, "save_response", fails)
    config = chat_config(upstream)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    client = await app(config)
    text = " ".join(f"w{i}" for i in range(40))
    reply = await client.post(
        "/v1/responses", json={"model": "openclaw", "input": text, "stream": True}, headers=AUTH
    )
    events = [
        orjson.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Echo: " + text
    assert events[-1]["type"] == "response.failed"
